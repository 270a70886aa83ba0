/**
 * The whole gateway under fuzzing, on real sockets: generated requests (request targets with dot
 * segments and odd escapes, reference headers, forged or real tokens and proofs, bodies) and
 * generated SETs pushed to the RFC 8935 receiver (signed by the trusted authority, with every claim
 * in a wrong shape). The gateway never answers 5xx (every dependency is up), answers every
 * pipeline refusal in the SPEC section 5 JSON shape, never lets a request reach the upstream
 * without a valid token, and keeps serving.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIFECYCLE_EVENT, SSF_VERIFICATION_EVENT } from '../../src/dev-authority/index.js';
import { raw, rawSocket } from '../helpers/http.js';
import { API, startFaultTarget, type FaultTarget } from '../faults/harness.js';
import { RUNS } from './bounds.js';

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

describe('the running gateway under generated requests and SETs', () => {
  let t: FaultTarget;
  let token: string;
  beforeAll(async () => {
    t = await startFaultTarget({ yaml: '  - match: { path: /public/** }\n    auth: none' });
    token = (await t.mission()).token;
  });
  afterAll(async () => {
    await t?.close();
  });

  const pathPiece = fc.constantFrom('/', 'invoices', 'public', 'admin', '..', '.', '%2e%2e', '%2F', '%5C', ';', '%00', '%zz', '1', '*', '%C3%A9', '?', '?a=1&a=2', '#f', '//');
  const target = fc.oneof(
    fc.array(pathPiece, { maxLength: 8 }).map((p) => '/' + p.join('/')),
    fc.constantFrom('*', 'http://evil.example/invoices/1', '/invoices/1', '/public/x'),
  );
  const header = fc.oneof(
    fc.constantFrom<[string, string]>(
      ['authorization', 'Bearer abc'],
      ['authorization', 'DPoP'],
      ['authorization', 'Basic dXNlcjpwYXNz'],
      ['dpop', 'a.b.c'],
      ['dpop', `${b64({ typ: 'dpop+jwt', alg: 'none' })}.${b64({})}.`],
      ['mission-reference', 'id="msn_x", issuer="https://evil.example"'],
      ['mission-reference', '(((('],
      ['aauth-mission', 'approver="x";s256="y"'],
      ['content-type', 'application/json'],
      ['transfer-encoding', 'chunked'],
      ['x-forwarded-for', '1.2.3.4'],
      ['x-mission-id', 'forged'],
      ['host', 'other.example'],
    ),
    fc.tuple(fc.constantFrom('authorization', 'dpop', 'mission-reference', 'x-a'), fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 })),
  );
  const realToken = fc.boolean();

  it('every answer is a documented status; refusals carry the SPEC shape; the upstream sees only authorized requests', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'POST', 'DELETE', 'OPTIONS', 'PATCH'), target, fc.array(header, { maxLength: 5 }), realToken, fc.option(fc.string({ maxLength: 40 }), { nil: undefined }), async (method, path, headers, useToken, body) => {
        const lines = [`${method} ${path} HTTP/1.1`, 'host: gw.test'];
        if (useToken) lines.push(`authorization: DPoP ${token}`);
        for (const [n, v] of headers) lines.push(`${n}: ${v}`);
        // A complete request either way: chunked framing when the generator chose it, else a length.
        const chunked = headers.some(([n]) => n === 'transfer-encoding');
        let payload = body ?? '';
        if (chunked) payload = (payload === '' ? '' : `${Buffer.byteLength(payload).toString(16)}\r\n${payload}\r\n`) + '0\r\n\r\n';
        else if (body !== undefined) lines.push(`content-length: ${Buffer.byteLength(body)}`);
        lines.push('connection: close');
        const before = t.echo.requests.length;
        const answer = await rawSocket(t.gw.url, lines.join('\r\n') + '\r\n\r\n' + payload, 3000);
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
        expect([200, 400, 401, 403, 405, 413, 431], answer.slice(0, 300)).toContain(status);
        if (status >= 400) {
          const json = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4) || '{}') as Record<string, unknown>;
          expect(typeof json['error'] === 'string' || typeof json['err'] === 'string', answer.slice(0, 300)).toBe(true);
        }
        // Only the unauthenticated route may reach the upstream for these requests (no valid proof).
        for (const r of t.echo.requests.slice(before)) expect(r.url.split('?')[0]!.split('/')[1], r.url).toBe('public');
      }),
      { numRuns: Math.max(100, RUNS / 3) },
    );
    expect((await t.admin('/healthz')).status).toBe(200);
    expect((await t.admin('/readyz')).status).toBe(200);
  });

  it('RFC 8935 push: generated SETs signed by the trusted key are 202 or 400 {err, description}, never 5xx', async () => {
    const now = Math.floor(Date.now() / 1000);
    const absent = undefined;
    const lifecycle = fc.record(
      {
        mission: fc.constantFrom<unknown>(absent, 'x', { id: 'msn_fuzz_1', issuer: t.proxy.url }, { id: '', issuer: t.proxy.url }, { id: 'msn_fuzz_2', issuer: 'https://evil.example' }, { id: 5 }),
        state: fc.constantFrom<unknown>('revoked', 'suspended', 'active', 'weird', '', 5, absent),
        version: fc.constantFrom<unknown>(1, 2, 7, 0, -1, 1.5, '2', 1e20, absent),
        suspend_until: fc.constantFrom<unknown>(absent, '2030-01-01T00:00:00Z', 'soon', 5, null),
        expires_at: fc.constantFrom<unknown>(absent, '2030-01-01T00:00:00Z', [], 'x'),
        authority_changed: fc.constantFrom<unknown>(absent, true, 'yes'),
      },
      { requiredKeys: [] },
    );
    const payload = fc.record(
      {
        iss: fc.constantFrom<unknown>(t.proxy.url, t.proxy.url, 'https://evil.example', 7),
        aud: fc.constantFrom<unknown>(API, [API], [API, 'x'], 'https://other.example', absent),
        iat: fc.constantFrom<unknown>(now, now - 10, now + 3600, 'x', -1),
        jti: fc.oneof(fc.uuid(), fc.constantFrom<unknown>('', 5, 'j'.repeat(300))),
        events: fc.oneof(
          fc.constantFrom<unknown>(absent, 'x', {}, { [SSF_VERIFICATION_EVENT]: { state: 'x' } }, { 'urn:other': {} }),
          lifecycle.map((l) => ({ [LIFECYCLE_EVENT]: Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined)) })),
        ),
      },
      { requiredKeys: ['iss', 'iat', 'jti'] },
    );
    await fc.assert(
      fc.asyncProperty(payload, fc.constantFrom('secevent+jwt', 'secevent+jwt', 'JWT'), fc.constantFrom('application/secevent+jwt', 'application/jwt', ''), async (p, typ, contentType) => {
        const clean = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined));
        const set = await t.dev.signJwt(clean as never, typ);
        const r = await raw(t.gw.url, { method: 'POST', path: '/.well-known/ssf/push', headers: contentType === '' ? {} : { 'content-type': contentType }, body: set });
        expect([202, 400], r.text()).toContain(r.status);
        if (r.status === 400) expect(Object.keys(r.json()).sort()).toEqual(['description', 'err']);
      }),
      { numRuns: Math.max(100, RUNS / 3) },
    );
    expect((await t.admin('/healthz')).status).toBe(200);
  });
});
