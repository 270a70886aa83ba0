import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import type { DevAuthority } from '../../src/dev-authority/index.js';
import { API, clientAssertion, clientKey, ENTRIES, MAIL, newMission, postForm, start, type ClientKey } from './helpers.js';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

let dev: DevAuthority;
let gw: ClientKey;
let statusUrl: string;
let missionId: string;

beforeAll(async () => {
  dev = await start({ maxStaleSeconds: 30 });
  gw = await clientKey();
  dev.registerClient('gw-api', { keys: [gw.publicJwk] });
  statusUrl = `${dev.url}/mission/status`;
  missionId = await newMission(dev);
});
afterAll(() => dev.close());

async function query(params: Record<string, string>, opts: { key?: ClientKey; clientId?: string; aud?: string; accept?: string; assertion?: string | null } = {}): Promise<Response> {
  const assertion = opts.assertion === null ? {} : {
    client_assertion_type: JWT_BEARER,
    client_assertion: opts.assertion ?? (await clientAssertion(opts.key ?? gw, opts.clientId ?? 'gw-api', opts.aud ?? statusUrl)),
  };
  return postForm(statusUrl, { ...assertion, ...params }, opts.accept === undefined ? {} : { accept: opts.accept });
}

describe('Mission Status endpoint (draft-mcguinness-oauth-mission-status)', () => {
  it('answers an authenticated query with a signed mission-status-response+jwt that verifies with the JWKS', async () => {
    const res = await query({ mission_id: missionId, audience: API, nonce: 'nonce_K9pV4nT2sR7mB1xQ' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/mission-status-response+jwt');
    expect(res.headers.get('cache-control')).toBe('no-store');
    const { payload, protectedHeader } = await jwtVerify(await res.text(), createRemoteJWKSet(new URL(`${dev.url}/jwks`)), {
      typ: 'mission-status-response+jwt',
      issuer: dev.url,
      audience: API,
      subject: 'gw-api',
      algorithms: ['ES256'],
    });
    expect(typeof protectedHeader.kid).toBe('string');
    expect(payload['nonce']).toBe('nonce_K9pV4nT2sR7mB1xQ');
    expect(payload.exp! - payload.iat!).toBe(60);
    const m = dev.missions.get(missionId)!;
    expect(payload['mission']).toMatchObject({
      id: missionId,
      issuer: dev.url,
      authority_hash: m.authority_hash,
      state: 'active',
      version: 1,
      expires_at: m.expires_at,
      subject: { sub: 'user_3p2q8mN1a0kV7tR' },
      client_id: 'agent-1',
    });
    const fresh = Date.parse((payload['mission'] as { fresh_until: string }).fresh_until) / 1000;
    expect(fresh).toBeLessThanOrEqual(payload.iat! + 30);
    expect(fresh).toBeGreaterThan(payload.iat!);
    expect(payload['authorization_details']).toEqual([ENTRIES[0], ENTRIES[1]]);
  });

  it('filters authorization_details to the audience sent', async () => {
    const res = await query({ mission_id: missionId, audience: MAIL, nonce: 'n-mail' });
    const payload = decodeJwt(await res.text());
    expect(payload['aud']).toBe(MAIL);
    expect(payload['authorization_details']).toEqual([ENTRIES[2]]);
  });

  it('unauthenticated: no assertion, wrong aud, unregistered client, wrong key, or a replayed assertion -> 401 unauthorized', async () => {
    const params = { mission_id: missionId, audience: API, nonce: 'n1' };
    const stranger = await clientKey();
    const replayed = await clientAssertion(gw, 'gw-api', statusUrl);
    expect((await query(params, { assertion: replayed })).status).toBe(200);
    const cases = [
      query(params, { assertion: null }),
      query(params, { aud: `${dev.url}/token` }),
      query(params, { clientId: 'nobody', key: stranger }),
      query(params, { key: stranger }),
      query(params, { assertion: replayed }),
    ];
    for (const res of await Promise.all(cases)) {
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ error: 'unauthorized' });
    }
  });

  it('an unknown Mission and one the client may not see are the same 404 not_found', async () => {
    const unknown = await query({ mission_id: 'msn_does_not_exist', audience: API, nonce: 'n2' });
    expect(unknown.status).toBe(404);
    const restricted = await clientKey();
    dev.registerClient('gw-mail', restricted.publicJwk, { audiences: [MAIL] });
    const hidden = await query({ mission_id: missionId, audience: API, nonce: 'n2' }, { key: restricted, clientId: 'gw-mail' });
    expect(hidden.status).toBe(404);
    const a = (await unknown.json()) as Record<string, unknown>;
    const b = (await hidden.json()) as Record<string, unknown>;
    expect(a).toEqual(b);
    expect(a['error']).toBe('not_found');
    const allowed = await query({ mission_id: missionId, audience: MAIL, nonce: 'n3' }, { key: restricted, clientId: 'gw-mail' });
    expect(allowed.status).toBe(200);
  });

  it('a missing nonce is invalid_request', async () => {
    const res = await query({ mission_id: missionId, audience: API });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'invalid_request' });
  });

  it('reports non-active states as 200 with mission.state, suspend_until and on_expiry', async () => {
    const id = await newMission(dev);
    const until = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    await dev.missions.suspend(id, { suspend_until: until, on_expiry: 'revoke' });
    const res = await query({ mission_id: id, audience: API, nonce: 'n4' });
    expect(res.status).toBe(200);
    expect(decodeJwt(await res.text())['mission']).toMatchObject({ state: 'suspended', version: 2, suspend_until: until, on_expiry: 'revoke' });
  });

  it('AAuth: a query by mission_s256 answers with mission.approver and mission.s256', async () => {
    const m = dev.missions.get(missionId)!;
    const res = await query({ mission_s256: m.aauth.s256, audience: API, nonce: 'n5' });
    expect(res.status).toBe(200);
    expect(decodeJwt(await res.text())['mission']).toMatchObject({ id: missionId, approver: dev.url, s256: m.aauth.s256 });
  });

  it('seed 002 JSON is served for a JWT-preferring Accept only when the authority prefers JSON', async () => {
    const accept = 'application/mission-status-response+jwt, application/json;q=0.5';
    const jwt = await query({ mission_id: missionId, audience: API, nonce: 'n7' }, { accept });
    expect(jwt.headers.get('content-type')).toBe('application/mission-status-response+jwt');
    const lax = await start({ preferJsonStatus: true });
    try {
      lax.registerClient('gw-api', gw.publicJwk);
      const id = (await lax.missions.create({ subject: 's', client_id: 'c', purpose: 'p', authorization_details: ENTRIES })).id;
      const url = `${lax.url}/mission/status`;
      const res = await postForm(url, {
        client_assertion_type: JWT_BEARER,
        client_assertion: await clientAssertion(gw, 'gw-api', url),
        mission_id: id,
        audience: API,
        nonce: 'n8',
      }, { accept });
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(await res.json()).toMatchObject({ active: true, nonce: 'n8', mission: { id, state: 'active' } });
    } finally {
      await lax.close();
    }
  });

  it('client keys: a private JWK registers its public half; a kid-less registered key matches an assertion with kid; symmetric keys are refused', async () => {
    const { exportJWK, generateKeyPair } = await import('jose');
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const priv = await exportJWK(privateKey);
    const ck = { privateKey, publicJwk: {}, jkt: '' } as ClientKey;
    dev.registerClient('gw-priv', priv);
    const res = await query({ mission_id: missionId, audience: API, nonce: 'n9' }, { key: ck, clientId: 'gw-priv' });
    expect(res.status).toBe(200);
    const { SignJWT } = await import('jose');
    const withKid = await new SignJWT({ jti: 'kid-test' })
      .setProtectedHeader({ alg: 'ES256', kid: 'some-kid' })
      .setIssuer('gw-priv').setSubject('gw-priv').setAudience(statusUrl).setIssuedAt().setExpirationTime('1m')
      .sign(privateKey);
    expect((await query({ mission_id: missionId, audience: API, nonce: 'n10' }, { assertion: withKid })).status).toBe(200);
    expect(() => dev.registerClient('gw-oct', { kty: 'oct', k: 'c2VjcmV0' })).toThrow();
  });

  it("seed 002: Accept: application/json opts into the JSON shape", async () => {
    const res = await query({ mission_id: missionId, audience: API, nonce: 'n6' }, { accept: 'application/json' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      active: true,
      projection_issuer_authorized: true,
      mission: { id: missionId, origin: dev.url, state: 'active' },
    });
    expect(body['authority']).toEqual([ENTRIES[0]!, ENTRIES[1]!].map((e) => ({ substrate: 'oauth', type: e.type, authority: e })));
  });
});
