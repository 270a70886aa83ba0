import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseRetryAfter, MissionStatusClient, StatusUnavailable, MAX_STATUS_BYTES, MAX_STATUS_CONNECTIONS } from '../../src/mission/status.js';
import { clientAssertion, parseClientKey } from '../../src/mission/client-key.js';
import type { MissionReference } from '../../src/pipeline/context.js';
import { CLIENT_ID, clientKeyFile, counter, ISSUER, LocalKeys, logger, makeConfig, MISSION_ID, newMetrics, RESOURCE, S256, signingKey, StatusServer } from './helpers.js';

const REF: MissionReference = { form: 'claim', issuer: ISSUER, id: MISSION_ID, s256: null, authorityHash: null };
const AAUTH_REF: MissionReference = { form: 'aauth_claim', issuer: ISSUER, id: null, s256: S256, authorityHash: null };

let server: StatusServer;
let keys: LocalKeys;
let client: MissionStatusClient;
let metrics: ReturnType<typeof newMetrics>;
let keyFile: string;

async function setup(opts: { format?: 'jwk' | 'pem'; authority?: Record<string, unknown>; timeout?: number; viaMetadata?: boolean } = {}): Promise<void> {
  const ck = clientKeyFile(opts.format ?? 'jwk');
  keyFile = ck.file;
  const authKey = signingKey();
  keys = new LocalKeys().add(ISSUER, authKey);
  server = await new StatusServer(ISSUER, authKey, ck.publicKey).start();
  server.missions.set(MISSION_ID, { state: 'active', version: 4, expires_at: '2099-12-31T23:59:59Z' });
  const authority = opts.viaMetadata ? { issuer: ISSUER, ...opts.authority } : { issuer: ISSUER, status_endpoint: server.url, ...opts.authority };
  if (opts.viaMetadata) keys.meta.set(ISSUER, { issuer: ISSUER, mission_status_endpoint: server.url, mission_max_stale_seconds: 20 });
  const config = makeConfig({}, { client: { client_id: CLIENT_ID, private_key_file: keyFile }, authorities: [authority], status_timeout_s: opts.timeout ?? 2 });
  metrics = newMetrics();
  client = new MissionStatusClient({ config, keys, metrics, logger, now: Date.now });
}

afterEach(async () => {
  await client?.close();
  await server?.close();
});

async function failure(p: Promise<unknown>): Promise<StatusUnavailable> {
  try {
    await p;
  } catch (e) {
    if (e instanceof StatusUnavailable) return e;
    throw e;
  }
  throw new Error('expected a failure');
}

describe('load on the authority', () => {
  beforeEach(() => setup({ timeout: 5 }));

  it(`queries for many Missions at once use at most MAX_STATUS_CONNECTIONS connections to the authority; the rest wait their turn (r14c 3)`, async () => {
    server.delayMs = 150;
    const sockets = new Set<unknown>();
    let inFlight = 0;
    let peak = 0;
    server.respond = (async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 50));
      inFlight--;
      return null;
    }) as unknown as StatusServer['respond'];
    (server as unknown as { server: import('node:http').Server }).server.on('connection', (s: unknown) => sockets.add(s));
    const refs = Array.from({ length: MAX_STATUS_CONNECTIONS * 3 }, (_, i): MissionReference => ({ ...REF, id: `msn_${i}` }));
    const results = await Promise.allSettled(refs.map((r) => client.query(r, RESOURCE)));
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true); // unknown Missions: 404, answered
    expect(server.requests).toHaveLength(refs.length);
    expect(sockets.size).toBeLessThanOrEqual(MAX_STATUS_CONNECTIONS);
    expect(peak).toBeLessThanOrEqual(MAX_STATUS_CONNECTIONS);
  });
});

describe('Mission Status request (draft-mcguinness-oauth-mission-status, SPEC section 3)', () => {
  beforeEach(() => setup());

  it('POSTs mission_id, audience, a fresh nonce and a private_key_jwt assertion (aud = endpoint URL)', async () => {
    const r = await client.query(REF, RESOURCE);
    await client.query(REF, RESOURCE);
    expect(r).toMatchObject({ state: 'active', version: 4, id: MISSION_ID, issuer: ISSUER, authorityHash: 'sha-256:x' });
    expect(r.authority).toEqual([{ type: 'mission_resource_access', resource: RESOURCE, actions: ['invoices.read'] }]);
    expect(r.freshUntil).toBeGreaterThan(Date.now() / 1000);
    const [a, b] = server.requests;
    expect(a!.form.get('mission_id')).toBe(MISSION_ID);
    expect(a!.form.get('audience')).toBe(RESOURCE);
    expect(a!.form.get('nonce')).toMatch(/^[A-Za-z0-9_-]{22,}$/);
    expect(a!.form.get('nonce')).not.toBe(b!.form.get('nonce'));
    expect(a!.assertion).toMatchObject({ iss: CLIENT_ID, sub: CLIENT_ID, aud: server.url });
    expect(a!.assertion.jti).not.toBe(b!.assertion.jti);
    expect(a!.assertion.exp! - a!.assertion.iat!).toBeLessThanOrEqual(60);
    expect(await counter(metrics, 'mission_gateway_mission_status_requests_total', { outcome: 'ok' })).toBe(2);
  });

  it('an AAuth reference is queried by mission_s256 and checked by approver and s256', async () => {
    server.missions.set(`s256:${S256}`, { state: 'active', version: 2 });
    const r = await client.query(AAUTH_REF, RESOURCE);
    expect(server.requests[0]!.form.get('mission_s256')).toBe(S256);
    expect(server.requests[0]!.form.has('mission_id')).toBe(false);
    expect(r.id).toBe('msn_from_s256');
    server.tamper = (c) => ((c['mission'] as Record<string, unknown>)['s256'] = 'B'.repeat(43));
    expect((await failure(client.query(AAUTH_REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it('a signed answer to an AAuth query that names neither approver nor s256 is not an answer for it (r21b 13)', async () => {
    server.missions.set(`s256:${S256}`, { state: 'active', version: 2 });
    server.tamper = (c) => {
      const m = c['mission'] as Record<string, unknown>;
      delete m['s256'];
      delete m['approver'];
    };
    expect((await failure(client.query(AAUTH_REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it('404 means the Mission is unknown (an answer, not a failure)', async () => {
    const r = await client.query({ ...REF, id: 'msn_nope' }, RESOURCE);
    expect(r.state).toBe('unknown');
    expect(await counter(metrics, 'mission_gateway_mission_status_requests_total', { outcome: 'not_found' })).toBe(1);
  });

  it('429 and 503 are unavailable with the Retry-After the authority sent', async () => {
    server.respond = async () => ({ status: 429, headers: { 'retry-after': '7' }, body: '{"error":"rate_limited"}' });
    const e = await failure(client.query(REF, RESOURCE));
    expect(e.outcome).toBe('rate_limited');
    expect(e.retryAfter).toBe(7);
    server.respond = async () => ({ status: 503, headers: { 'retry-after': '3' }, body: '' });
    expect(await failure(client.query(REF, RESOURCE))).toMatchObject({ outcome: 'unavailable', retryAfter: 3 });
  });

  it('other statuses (401, 500) are failures', async () => {
    server.respond = async () => ({ status: 500, body: '' });
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('http_error');
  });

  it('an authority slower than status_timeout_s is unreachable', async () => {
    await client.close();
    await server.close();
    await setup({ timeout: 0.2 });
    server.delayMs = 4000;
    const started = Date.now();
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(2500);
  });

  it('slow key resolution counts against the same status_timeout_s budget', async () => {
    await client.close();
    await server.close();
    await setup({ timeout: 0.2 });
    keys.resolveDelayMs = 600;
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('timeout');
  });

  it('a connection failure is unreachable', async () => {
    server.down = true;
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('error');
    expect(await counter(metrics, 'mission_gateway_mission_status_requests_total', { outcome: 'error' })).toBe(1);
  });

  it('a response larger than the bound is refused', async () => {
    server.respond = async () => ({ status: 200, headers: { 'content-type': 'application/mission-status-response+jwt' }, body: 'a'.repeat(MAX_STATUS_BYTES + 10) });
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });
});

describe('Mission Status response verification: any failed check counts as the authority unreachable', () => {
  beforeEach(() => setup());

  const cases: Array<[string, (c: Record<string, unknown>) => void]> = [
    ['wrong nonce', (c) => (c['nonce'] = 'nonce_other')],
    ['missing nonce', (c) => delete c['nonce']],
    ['wrong audience', (c) => (c['aud'] = 'https://other.example.com')],
    ['expired (beyond the 30 s skew)', (c) => ((c['iat'] = Math.floor(Date.now() / 1000) - 200), (c['exp'] = Math.floor(Date.now() / 1000) - 31))],
    ['issued in the future', (c) => ((c['iat'] = Math.floor(Date.now() / 1000) + 120), (c['exp'] = Math.floor(Date.now() / 1000) + 180))],
    ['issued long before the query (iat beyond the 30 s skew), still unexpired', (c) => ((c['iat'] = Math.floor(Date.now() / 1000) - 3600), (c['exp'] = Math.floor(Date.now() / 1000) + 3600))],
    ['issued 45 s before the query (jose would add its clock tolerance to a 30 s maxTokenAge; r20d 5)', (c) => ((c['iat'] = Math.floor(Date.now() / 1000) - 45), (c['exp'] = Math.floor(Date.now() / 1000) + 60))],
    ['issued 45 s after the query (beyond the 30 s skew, inside a doubled one; r21b su04)', (c) => ((c['iat'] = Math.floor(Date.now() / 1000) + 45), (c['exp'] = Math.floor(Date.now() / 1000) + 105))],
    ['wrong sub (not our client_id)', (c) => (c['sub'] = 'someone-else')],
    ['wrong iss', (c) => (c['iss'] = 'https://other-as.example.com')],
    ['wrong mission id', (c) => ((c['mission'] as Record<string, unknown>)['id'] = 'msn_other')],
    ['no mission object', (c) => delete c['mission']],
    ['no state', (c) => delete (c['mission'] as Record<string, unknown>)['state']],
    ['no version', (c) => delete (c['mission'] as Record<string, unknown>)['version']],
    ['an unparseable fresh_until', (c) => ((c['mission'] as Record<string, unknown>)['fresh_until'] = 'soon')],
    ['malformed authorization_details', (c) => (c['authorization_details'] = [{ type: 'mission_resource_access', resource: RESOURCE }])],
  ];
  it.each(cases)('%s', async (_name, tamper) => {
    server.tamper = tamper;
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it.each([-25, 25])('issued %i s from the query (inside the 30 s skew) is accepted', async (offset) => {
    server.tamper = (c) => ((c['iat'] = Math.floor(Date.now() / 1000) + offset), (c['exp'] = Math.floor(Date.now() / 1000) + offset + 60));
    expect((await client.query(REF, RESOURCE)).state).toBe('active');
  });

  it('bad signature (another key under the same kid)', async () => {
    const forged = signingKey(server.key.kid);
    server.respond = async (req) => {
      const iat = Math.floor(Date.now() / 1000);
      const { SignJWT } = await import('jose');
      const jwt = await new SignJWT({ iss: ISSUER, aud: RESOURCE, sub: CLIENT_ID, nonce: req.form.get('nonce'), iat, exp: iat + 60, mission: { id: MISSION_ID, state: 'active', version: 1 } })
        .setProtectedHeader({ alg: 'ES256', kid: forged.kid, typ: 'mission-status-response+jwt' })
        .sign(forged.privateKey);
      return { status: 200, headers: { 'content-type': 'application/mission-status-response+jwt' }, body: jwt };
    };
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it.each([['JWT'], ['at+jwt'], ['secevent+jwt']])('typ %s is refused', async (typ) => {
    server.respond = async (req, sign) => {
      const iat = Math.floor(Date.now() / 1000);
      const jwt = await sign({ iss: ISSUER, aud: RESOURCE, sub: CLIENT_ID, nonce: req.form.get('nonce'), iat, exp: iat + 60, mission: { id: MISSION_ID, state: 'active', version: 1 } }, { typ });
      return { status: 200, headers: { 'content-type': 'application/mission-status-response+jwt' }, body: jwt };
    };
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it('alg none is refused', async () => {
    server.respond = async (req) => {
      const iat = Math.floor(Date.now() / 1000);
      const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const body = `${enc({ alg: 'none', typ: 'mission-status-response+jwt' })}.${enc({ iss: ISSUER, aud: RESOURCE, sub: CLIENT_ID, nonce: req.form.get('nonce'), iat, exp: iat + 60, mission: { id: MISSION_ID, state: 'active', version: 1 } })}.`;
      return { status: 200, headers: { 'content-type': 'application/mission-status-response+jwt' }, body };
    };
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it('a 200 with another content type is refused', async () => {
    server.respond = async () => ({ status: 200, headers: { 'content-type': 'application/json' }, body: '{"active":true}' });
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it('a 404 echoing another nonce is refused', async () => {
    server.respond = async () => ({ status: 404, headers: { 'content-type': 'application/json' }, body: '{"error":"not_found","nonce":"other"}' });
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });
});

describe("seed 002's JSON Status shape: only where the operator opts in (accept_json_status)", () => {
  const seedBody = (nonce: string | null, active = true, state = 'active') =>
    JSON.stringify({
      active,
      projection_issuer_authorized: true,
      ...(nonce === null ? {} : { nonce }),
      mission: { id: MISSION_ID, origin: ISSUER, state, expiry: '2099-10-15T18:00:00Z', authority_hash: 'o2j2' },
      authority: [{ substrate: 'aauth', type: 'aauth_scope', authority: { resource: RESOURCE, scope: ['notification.send'] } }],
    });

  it('is accepted with accept_json_status and mapped to the draft form', async () => {
    await setup({ authority: { accept_json_status: true } });
    server.respond = async (req) => ({ status: 200, headers: { 'content-type': 'application/json' }, body: seedBody(req.form.get('nonce')) });
    const r = await client.query(REF, RESOURCE);
    expect(server.requests[0]!.accept).toContain('application/json');
    expect(r).toMatchObject({ state: 'active', version: null, id: MISSION_ID, issuer: ISSUER, authorityHash: 'o2j2' });
    expect(r.expiresAt).toBe(Date.parse('2099-10-15T18:00:00Z') / 1000);
    expect(r.authority).toEqual([{ type: 'mission_resource_access', resource: RESOURCE, actions: ['notification.send'] }]);
  });

  it('`active` contradicting `state` is a state this gateway does not know', async () => {
    await setup({ authority: { accept_json_status: true } });
    server.respond = async (req) => ({ status: 200, headers: { 'content-type': 'application/json' }, body: seedBody(req.form.get('nonce'), false, 'active') });
    expect((await client.query(REF, RESOURCE)).state).toBe('unknown');
  });

  it('a JSON answer with another nonce is refused', async () => {
    await setup({ authority: { accept_json_status: true } });
    server.respond = async () => ({ status: 200, headers: { 'content-type': 'application/json' }, body: seedBody('other') });
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
  });

  it('is refused without the opt-in', async () => {
    await setup();
    server.respond = async (req) => ({ status: 200, headers: { 'content-type': 'application/json' }, body: seedBody(req.form.get('nonce')) });
    expect(server.requests.length).toBe(0);
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('invalid_response');
    expect(server.requests[0]!.accept).toBe('application/mission-status-response+jwt');
  });
});

describe('endpoint discovery and client keys', () => {
  it('without a configured status_endpoint, uses the issuer metadata (mission_status_endpoint, mission_max_stale_seconds)', async () => {
    await setup({ viaMetadata: true });
    const r = await client.query(REF, RESOURCE);
    expect(r.maxStaleSeconds).toBe(20);
    expect(keys.metadataCalls).toBe(1);
    expect(server.requests.length).toBe(1);
  });

  it('metadata advertising a plain-http endpoint on a public host is refused', async () => {
    await setup({ viaMetadata: true });
    keys.meta.set(ISSUER, { mission_status_endpoint: 'http://status.example.com/mission/status' });
    expect((await failure(client.query(REF, RESOURCE))).outcome).toBe('no_endpoint');
  });

  it('a PKCS#8 PEM client key works as well as a private JWK', async () => {
    await setup({ format: 'pem' });
    expect((await client.query(REF, RESOURCE)).state).toBe('active');
  });

  it('a public JWK or garbage is refused at load, with no key material in the message', () => {
    const { publicKey } = signingKey();
    const pub = JSON.stringify(publicKey.export({ format: 'jwk' }));
    expect(() => parseClientKey(pub)).toThrow(/not a private key/);
    expect(() => parseClientKey('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----')).toThrow(/neither a private JWK nor a PKCS#8 PEM/);
  });

  it('alg follows the key: EdDSA for Ed25519, a JWK alg wins', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const ed = generateKeyPairSync('ed25519').privateKey;
    expect(parseClientKey(ed.export({ format: 'pem', type: 'pkcs8' }) as string).alg).toBe('EdDSA');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const jwk = { ...rsa.export({ format: 'jwk' }), alg: 'PS256', kid: randomUUID() };
    expect(parseClientKey(JSON.stringify(jwk))).toMatchObject({ alg: 'PS256', kid: jwk.kid });
  });

  it('an Ed25519 JWK may say "alg": "Ed25519" (RFC 9864), and signs assertions with it (r21a 4)', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { decodeProtectedHeader, jwtVerify } = await import('jose');
    const pair = generateKeyPairSync('ed25519');
    const key = parseClientKey(JSON.stringify({ ...pair.privateKey.export({ format: 'jwk' }), alg: 'Ed25519' }));
    expect(key.alg).toBe('Ed25519');
    const jwt = await clientAssertion(key, CLIENT_ID, ISSUER, Date.now());
    expect(decodeProtectedHeader(jwt).alg).toBe('Ed25519');
    await jwtVerify(jwt, pair.publicKey, { algorithms: ['Ed25519'], audience: ISSUER });
    // Not with another key type.
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    expect(() => parseClientKey(JSON.stringify({ ...ec.export({ format: 'jwk' }), alg: 'Ed25519' }))).toThrow(/cannot be used with this key \(ES256 can\)/);
  });

  it('an RSA JWK whose alg is not an RSA one (ES256, HS256) is refused (r21b 16)', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
    for (const alg of ['ES256', 'HS256', 'EdDSA']) expect(() => parseClientKey(JSON.stringify({ ...rsa, alg })), alg).toThrow(/cannot be used with this key \(RS256 can\)/);
    expect(parseClientKey(JSON.stringify({ ...rsa, alg: 'PS384' })).alg).toBe('PS384');
  });

  it('without mission.client no Status query is possible (unreachable, fail closed)', async () => {
    const c = new MissionStatusClient({ config: makeConfig(), keys: new LocalKeys(), metrics: newMetrics(), logger, now: Date.now });
    expect((await failure(c.query(REF, RESOURCE))).outcome).toBe('not_configured');
    await c.close();
  });
});

describe('RFC 9110 Retry-After', () => {
  it('delay-seconds, HTTP-date, bounded', () => {
    const now = Date.parse('2026-11-26T12:00:00Z');
    expect(parseRetryAfter('12', now)).toBe(12);
    expect(parseRetryAfter('Thu, 26 Nov 2026 12:00:30 GMT', now)).toBe(30);
    expect(parseRetryAfter('999999', now)).toBe(300);
    expect(parseRetryAfter('0', now)).toBe(1);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});
