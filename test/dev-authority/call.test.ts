/**
 * `mission-gateway dev-authority call`: one request as an agent of a Mission, through a real
 * gateway (server nonces on), printed as `curl -i` prints it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API, startTarget, type Target } from '../security/fixture.js';
import { runCli } from './helpers.js';

let t: Target;
beforeAll(async () => {
  t = await startTarget('dpop: { nonce: true }');
});
afterAll(() => t.close());

const run = (argv: string[]) => runCli(['dev-authority', ...argv]);

/** The Mission's id, and `call` with the gateway's public URL as the proofs' htu base. */
const call = (...args: string[]) => run(['call', t.missionId, '--url', t.dev.url, '--public-url', API, ...args]);

describe('dev-authority call', () => {
  it('gets a token for the Mission, answers the nonce challenge, and prints the permitted answer', async () => {
    const before = t.echo.requests.length;
    const r = await call(`${t.gw.url}/invoices/inv_1?x=1`);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^HTTP\/1\.1 200 OK\n/);
    expect(t.echo.requests.slice(before).map((q) => [q.method, q.url, q.headers['x-mission-id']])).toEqual([['GET', '/invoices/inv_1?x=1', t.missionId]]);
  });

  it('sends -X, -H and -d as given, and prints a denial with exit 0 (as curl)', async () => {
    const before = t.echo.requests.length;
    const denied = await call('-X', 'POST', '-H', 'X-Trace: 7', '-d', '{"amount":"500.00","currency":"USD"}', `${t.gw.url}/payments`);
    expect(denied.code).toBe(0);
    expect(denied.out).toMatch(/^HTTP\/1\.1 403 Forbidden\n/);
    expect(denied.out).toContain('"denial_reason":"parameter_violation"');
    const ok = await call('-H', 'X-Trace: 7', '-d', '{"amount":"50.00","currency":"USD"}', `${t.gw.url}/payments`);
    expect(ok.out).toMatch(/^HTTP\/1\.1 200 OK\n/);
    const seen = t.echo.requests.slice(before);
    expect(seen.map((q) => [q.method, q.url, q.headers['x-trace'], q.headers['content-type'], q.body.toString()])).toEqual([['POST', '/payments', '7', 'application/json', '{"amount":"50.00","currency":"USD"}']]);
  });

  it('usage errors exit 2; an unknown Mission exits 1 with the reason', async () => {
    expect((await run(['call', t.missionId, `${t.gw.url}/invoices/1`])).code).toBe(2); // no --url
    expect((await run(['call', t.missionId, '--url', t.dev.url])).code).toBe(2); // no request URL
    expect((await call('-H', 'no-colon', `${t.gw.url}/invoices/1`)).code).toBe(2);
    expect((await call('ftp://x/y')).code).toBe(2);
    expect((await run(['call', t.missionId, '--url', t.dev.url, '--public-url', 'not a url', `${t.gw.url}/invoices/1`])).code).toBe(2);
    const unknown = await run(['call', 'msn_nope', '--url', t.dev.url, `${t.gw.url}/invoices/1`]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/msn_nope not found/);
  });
});
