/**
 * SPEC section 9 fail-closed evidence: a sink whose every write fails (ENOSPC on /dev/full) must
 * stay closed across its once-a-second reopen attempts. A reopened file is not proof that it can
 * be written; no request may reach the upstream while its record cannot be kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { startFaultTarget, type FaultTarget } from './harness.js';

describe('evidence sink that stays full (ENOSPC on every write)', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({ evidenceSink: '/dev/full' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('after the first failed write, no request reaches the upstream and every one is 503 evidence_unavailable, across reopen attempts', async () => {
    const m = await t.mission();
    await t.get(m.token);
    // Its record's write has failed: the sink is down (/readyz says so).
    await eventually(async () => (await t.admin('/readyz')).status === 503);
    const before = t.echo.requests.length;
    const statuses: number[] = [];
    const end = Date.now() + 3500;
    while (Date.now() < end) {
      statuses.push((await t.get(m.token)).status);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(statuses.filter((s) => s !== 503)).toEqual([]);
    expect(t.echo.requests.length).toBe(before);
  });
});
