/**
 * SPEC section 9 + the fail-closed evidence sink (src/evidence/log.ts): when the evidence file
 * cannot be written (disk full, ENOSPC), requests are denied 503 `evidence_unavailable`, /readyz is
 * 503, `mission_gateway_evidence_sink_up` is 0, the upstream is not reached, and the process stays
 * up; once space is freed the sink reopens by itself, continues the chain after what reached the
 * disk, and requests are served again.
 *
 * The disk is a 64 KiB tmpfs when this process may mount one (root); otherwise /dev/full, which
 * can show the failure but never a recovery.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyEvidenceFile } from '../../src/evidence/verify.js';
import { eventually } from '../helpers/gateway.js';
import { denialOf, startFaultTarget, type FaultTarget } from './harness.js';

function tryMountTmpfs(): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'mgw-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'ignore' });
    return dir;
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
}

describe('evidence sink on a full disk: fail closed, recover without restart', () => {
  const disk = tryMountTmpfs();
  const sink = disk === null ? '/dev/full' : join(disk, 'evidence.jsonl');
  const filler = disk === null ? null : join(disk, 'filler');
  let t: FaultTarget;
  beforeAll(async () => {
    // Leave two pages for the evidence file: a dozen records fit, then ENOSPC.
    if (filler !== null) writeFileSync(filler, Buffer.alloc(56 * 1024));
    t = await startFaultTarget({ evidenceSink: sink });
  });
  afterAll(async () => {
    await t?.close();
    if (disk !== null) {
      execFileSync('umount', [disk]);
      rmSync(disk, { recursive: true, force: true });
    }
  });

  it('ENOSPC: 503 evidence_unavailable, /readyz 503, sink_up 0, upstream not reached, process up', async () => {
    const m = await t.mission();
    expect(await t.metric('mission_gateway_evidence_sink_up')).toBe(1);
    let denied = null;
    for (let i = 0; i < 200 && denied === null; i++) {
      const r = await t.get(m.token);
      if (r.status !== 200) denied = r;
    }
    expect(denied).not.toBeNull();
    expect(denialOf(denied!)).toMatchObject({ status: 503, error: 'temporarily_unavailable', reason: 'evidence_unavailable' });
    const ready = await t.admin('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.json<{ checks: Record<string, boolean> }>().checks['evidence_sink']).toBe(false);
    expect(await t.metric('mission_gateway_evidence_sink_up')).toBe(0);
    expect(await t.metric('mission_gateway_evidence_write_failures_total')).toBeGreaterThanOrEqual(1);
    expect((await t.admin('/healthz')).status).toBe(200);

    const before = t.echo.requests.length;
    const r = await t.get(m.token);
    expect(denialOf(r).reason).toBe('evidence_unavailable');
    expect(t.echo.requests.length).toBe(before);
  });

  it('while the disk stays full the sink stays closed across its reopen attempts; freed: served again, chain continues (tmpfs only)', async () => {
    // /dev/full cannot be freed: without a tmpfs the first test is all this environment can show.
    if (disk === null) return;
    const m = await t.mission();
    // The sink retries every second; three seconds of traffic must not reach the upstream.
    const before = t.echo.requests.length;
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      expect((await t.get(m.token)).status).toBe(503);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(t.echo.requests.length).toBe(before);

    rmSync(filler!);
    await eventually(async () => (await t.get(m.token)).status === 200, 5000);
    expect((await t.admin('/readyz')).status).toBe(200);
    expect(await t.metric('mission_gateway_evidence_sink_up')).toBe(1);

    // What reached the disk verifies up to the record lost to ENOSPC (a torn line: a visible
    // break, never a silent gap), and the chain continues after it.
    await new Promise((r) => setTimeout(r, 50));
    const lines = readFileSync(sink, 'utf8').split('\n').filter((l) => l !== '');
    const last = JSON.parse(lines[lines.length - 1]!) as { decision: string; sequence: number };
    expect(last.decision).toBe('permit');
    const result = await verifyEvidenceFile(sink);
    expect(result.records).toBeGreaterThan(10);
    expect(result.breaks).toBeLessThanOrEqual(2);
  });
});
