/**
 * SPEC section 5 (upstream failures after a permit) and section 6 (streams): an upstream that
 * resets mid-stream cuts the client's connection (the response cannot be completed honestly),
 * the gateway stays up and still writes the permit record with the status it forwarded; an
 * upstream that resets before answering is 502 `bad_gateway`, one that does not send headers
 * within `upstream.timeout_s` is 504 `gateway_timeout`, both in the SPEC's JSON shape.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { denialOf, startFaultTarget, type FaultTarget } from './harness.js';

describe('upstream faults after a permit', () => {
  let t: FaultTarget;
  beforeAll(async () => {
    t = await startFaultTarget({
      upstreamTimeoutS: 0.5,
      upstream: (req, res) => {
        if (req.url === '/invoices/reset-mid-stream') {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: first\n\n');
          setTimeout(() => req.socket.resetAndDestroy(), 50);
        } else if (req.url === '/invoices/reset-before-headers') {
          req.socket.resetAndDestroy();
        } else if (req.url === '/invoices/slow-headers') {
          setTimeout(() => res.end('late'), 8000).unref();
        } else {
          res.end('ok');
        }
      },
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('reset mid-stream: the client sees the first bytes then a cut connection; the gateway stays up; evidence is written', async () => {
    const m = await t.mission();
    const path = '/invoices/reset-mid-stream';
    const proof = await t.agent.proof('GET', `https://api.example.com${path}`, m.token);
    const u = new URL(t.gw.url);
    const seen = await new Promise<{ status: number; body: string; complete: boolean }>((resolve) => {
      const req = request({ host: u.hostname, port: u.port, path, headers: { authorization: `DPoP ${m.token}`, dpop: proof } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('error', () => undefined);
        res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete }));
      });
      req.on('error', () => resolve({ status: 0, body: '', complete: false }));
      req.end();
    });
    expect(seen.status).toBe(200);
    expect(seen.body).toContain('data: first');
    expect(seen.complete).toBe(false);

    expect((await t.admin('/healthz')).status).toBe(200);
    expect((await t.get(m.token)).status).toBe(200);
    const rec = await eventually(() => t.gw.evidence().find((e) => e['path'] === path));
    expect(rec).toMatchObject({ decision: 'permit', denial_reason: null, upstream_status: 200 });
  });

  it('reset before headers: 502 bad_gateway (JSON, denial_reason null); evidence keeps decision permit', async () => {
    const m = await t.mission();
    const r = await t.get(m.token, '/invoices/reset-before-headers');
    expect(denialOf(r)).toMatchObject({ status: 502, error: 'bad_gateway', reason: null });
    const rec = await eventually(() => t.gw.evidence().find((e) => e['path'] === '/invoices/reset-before-headers'));
    expect(rec).toMatchObject({ decision: 'permit', upstream_status: 502 });
  });

  it('no headers within upstream.timeout_s: 504 gateway_timeout, bounded', async () => {
    const m = await t.mission();
    const r = await t.get(m.token, '/invoices/slow-headers');
    expect(denialOf(r)).toMatchObject({ status: 504, error: 'gateway_timeout', reason: null });
    expect(r.ms).toBeLessThan(4000);
    expect((await t.get(m.token)).status).toBe(200);
  });
});
