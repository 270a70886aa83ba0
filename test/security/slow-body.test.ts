/**
 * A body sent slowly is decided on the Mission's state when it has arrived, not when its headers
 * did (r13c F2): a revocation, suspension or narrowing accepted in between (its push answered 202)
 * stops the request before anything reaches the upstream. And a body is read as the UTF-8 it is
 * decided on: a charset the upstream would honour instead is refused (r13c F1). Real sockets, the
 * dev authority pushing lifecycle SETs to the gateway.
 */
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/gateway.js';
import { API, startTarget, type Target } from './fixture.js';

const targets: Target[] = [];
afterEach(async () => {
  for (const t of targets.splice(0)) await t.close();
});

async function target(): Promise<Target> {
  // A route whose small body is read before forwarding, and has no parameters.
  const t = await startTarget('  - match: { method: POST, path: /reports/notes }\n    action: reports.note\n');
  targets.push(t);
  return t;
}

/** Sends a request's head and all of its body but the last bytes; `finish` sends those and resolves with the whole answer. */
/** Mission state lookups the gateway made (mission_gateway_mission_cache_total, every result). */
async function stateLookups(t: Target): Promise<number> {
  const text = await (await fetch(`${t.gw.adminUrl}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^mission_gateway_mission_cache_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
  return n;
}

async function halfSent(t: Target, path: string, body: string, headers: Record<string, string> = {}, chunked = false): Promise<{ finish(): Promise<string> }> {
  const dpop = await t.agent.proof('POST', `${API}${path}`, t.token);
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const length = chunked ? '' : `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  const head = `POST ${path} HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: DPoP ${t.token}\r\nDPoP: ${dpop}\r\nContent-Type: application/json\r\n${length}Connection: close\r\n${extra}\r\n`;
  const port = Number(new URL(t.gw.url).port);
  const socket = connect(port, '127.0.0.1');
  let answer = '';
  socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
  // The gateway may cut the connection before the rest is sent (a Mission that ended mid-upload).
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const lookups = await stateLookups(t);
  socket.write(head + body.slice(0, -5));
  // Let the gateway get past authentication (mission_state included: it looked the Mission up) and
  // start reading the body.
  await eventually(async () => (await stateLookups(t)) > lookups);
  await new Promise((r) => setTimeout(r, 50));
  return {
    async finish() {
      // Not end(): a client that half-closes loses its answer (Node's server aborts the request).
      if (socket.writable) socket.write(body.slice(-5));
      await closed;
      return answer;
    },
  };
}

const PAYMENT = JSON.stringify({ amount: '50.00', currency: 'USD', memo: 'slow' });

describe('a slowly sent body is decided on the Mission as it is once the body has arrived', () => {
  it('revoked while the body of a payment was arriving: 403 mission_terminated, nothing forwarded', async () => {
    const t = await target();
    const req = await halfSent(t, '/payments', PAYMENT);
    const r = await t.dev.missions.revoke(t.missionId);
    expect(r.deliveries.map((d) => d.status)).toEqual([202]);
    const answer = await req.finish();
    expect(answer).toMatch(/^HTTP\/1\.1 403[^]*"denial_reason":"mission_inactive"/);
    expect(answer).toContain('"mission_status":"revoked"');
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(0);
    const rec = t.gw.evidence().find((e) => e['path'] === '/payments');
    expect(rec).toMatchObject({ decision: 'deny', denial_reason: 'mission_inactive', upstream_status: null });
  });

  it('suspended while a small body without parameters was arriving (read before forwarding): 403 mission_suspended', async () => {
    const t = await target();
    const req = await halfSent(t, '/reports/notes', JSON.stringify({ note: 'x'.repeat(200) }));
    await t.dev.missions.suspend(t.missionId);
    const answer = await req.finish();
    expect(answer).toMatch(/^HTTP\/1\.1 403[^]*"error":"mission_suspended"/);
    expect(t.echo.requests.filter((q) => q.url === '/reports/notes')).toHaveLength(0);
  });

  it('narrowed while the body was arriving: decided on the narrowed authority (out_of_authority), nothing forwarded', async () => {
    const t = await target();
    const req = await halfSent(t, '/payments', PAYMENT);
    await t.dev.missions.changeAuthority(t.missionId, [{ type: 'mission_resource_access', resource: API, actions: ['invoices.read'] }]);
    const answer = await req.finish();
    expect(answer).toMatch(/^HTTP\/1\.1 403[^]*"denial_reason":"out_of_authority"/);
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(0);
  });

  it('a body streamed to the upstream (over 64 KiB, or chunked) is cut with the upload when the Mission is revoked meanwhile: the upstream never gets the whole request (r13d)', async () => {
    const t = await target();
    const big = JSON.stringify({ note: 'x'.repeat(70 * 1024) });
    const streamed = await halfSent(t, '/reports/notes', big);
    const chunkedBody = JSON.stringify({ note: 'chunked' });
    const chunked = await halfSent(t, '/reports/notes', `${chunkedBody.length.toString(16)}\r\n${chunkedBody}\r\n0\r\n\r\n`, { 'Transfer-Encoding': 'chunked' }, true);
    await t.dev.missions.revoke(t.missionId);
    // The connection is cut: no answer, and the upstream saw an aborted request, never a whole one.
    expect(await streamed.finish()).toBe('');
    expect(await chunked.finish()).toBe('');
    await new Promise((r) => setTimeout(r, 200));
    expect(t.echo.requests.filter((q) => q.url === '/reports/notes')).toHaveLength(0);
    const records = t.gw.evidence().filter((e) => e['path'] === '/reports/notes');
    expect(records.map((r) => [r['decision'], r['upstream_status']])).toEqual([
      ['permit', 499],
      ['permit', 499],
    ]);
  });

  it('the token expired while the body was arriving: 401 token_invalid, nothing forwarded (r20d 4)', async () => {
    const t0 = await startTarget('token: { clock_skew_s: 0 }\n');
    targets.push(t0);
    const short = await t0.dev.issueAccessToken({ missionId: t0.missionId, resource: API, jkt: t0.agent.jkt, ttlSeconds: 2 });
    const t = { ...t0, token: short };
    const req = await halfSent(t, '/payments', PAYMENT);
    await new Promise((r) => setTimeout(r, 2_800));
    const answer = await req.finish();
    expect(answer).toMatch(/^HTTP\/1\.1 401[^]*"denial_reason":"token_invalid"/);
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(0);
  });

  it('with token.clock_skew_s 2 the skew is counted once, after exp: a body finished 2.5 s past exp is refused, one finished 1 s before exp is forwarded (r21b 9)', async () => {
    const t0 = await startTarget('token: { clock_skew_s: 2 }\n');
    targets.push(t0);
    /** Sends all but the body's last bytes, and those when the clock reads the token's exp plus `afterExpS`. */
    const send = async (ttlSeconds: number, afterExpS: number): Promise<string> => {
      const token = await t0.dev.issueAccessToken({ missionId: t0.missionId, resource: API, jkt: t0.agent.jkt, ttlSeconds });
      const { exp } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number };
      const req = await halfSent({ ...t0, token }, '/payments', PAYMENT);
      await new Promise((r) => setTimeout(r, (exp + afterExpS) * 1000 - Date.now()));
      return req.finish();
    };
    // exp is whole seconds and the check fractional: 0.5 s either side of exp + skew, exp + skew + 1
    // (one more second of leeway) and exp - skew (the skew taken before exp).
    const [late, early] = await Promise.all([send(1, 2.5), send(3, -1)]);
    expect(late).toMatch(/^HTTP\/1\.1 401[^]*"denial_reason":"token_invalid"/);
    expect(early).toMatch(/^HTTP\/1\.1 200/);
    expect(t0.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(1);
  });

  it('nothing changed while it arrived: the payment is forwarded', async () => {
    const t = await target();
    const req = await halfSent(t, '/payments', PAYMENT);
    expect(await req.finish()).toMatch(/^HTTP\/1\.1 200/);
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(1);
  });
});

describe('a body the gateway reads is declared as the UTF-8 it is read as', () => {
  it('a charset other than utf-8 (UTF-7 reads +ACI- as a quote), or two Content-Type fields, is 400 parameter_unparseable', async () => {
    const t = await target();
    const send = async (contentType: string | string[]) => {
      const dpop = await t.agent.proof('POST', `${API}/payments`, t.token);
      return t.send({ method: 'POST', path: '/payments', authorization: `DPoP ${t.token}`, dpop, headers: { 'content-type': contentType }, body: PAYMENT });
    };
    for (const ct of [
      'application/json; charset=utf-7',
      'application/json;charset="UTF-7"',
      'application/json; charset=utf-16le',
      'application/json; charset=utf-8; charset=utf-7',
      'application/json; charset=',
      // RFC 2231's forms, which Python's email parser, Django and Go read (r13d).
      "application/json; charset*=''utf-7",
      'application/json; charset*0=utf; charset*1=-7',
    ]) {
      const r = await send(ct);
      expect([ct, r.status, r.json<{ denial_reason: string }>().denial_reason]).toEqual([ct, 400, 'parameter_unparseable']);
    }
    for (const ct of ['application/json', 'application/json; charset=utf-8', 'application/json; charset="UTF-8"']) {
      expect([ct, (await send(ct)).status]).toEqual([ct, 200]);
    }
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(3);
    // Two fields: which one an upstream reads differs between servers.
    const req = await halfSent(t, '/payments', PAYMENT, { 'Content-Type': 'application/json; charset=utf-7' });
    expect(await req.finish()).toMatch(/^HTTP\/1\.1 400[^]*parameter_unparseable/);
  });

  it('a content-encoded body is 400 parameter_unparseable: an upstream that decodes it reads other parameters than the ones decided on (r19b 1)', async () => {
    const t = await target();
    const send = async (encoding: string) => {
      const dpop = await t.agent.proof('POST', `${API}/payments`, t.token);
      return t.send({ method: 'POST', path: '/payments', authorization: `DPoP ${t.token}`, dpop, headers: { 'content-type': 'application/json', 'content-encoding': encoding }, body: PAYMENT });
    };
    for (const encoding of ['gzip', 'br', 'deflate', 'GZIP', 'identity, gzip', 'x-gzip', 'zstd']) {
      const r = await send(encoding);
      expect([encoding, r.status, r.json<{ denial_reason: string }>().denial_reason]).toEqual([encoding, 400, 'parameter_unparseable']);
    }
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(0);
    for (const encoding of ['identity', 'Identity', '']) expect([encoding, (await send(encoding)).status]).toEqual([encoding, 200]);
    expect(t.echo.requests.filter((q) => q.url === '/payments')).toHaveLength(3);
  });
});
