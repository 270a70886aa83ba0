import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import type { DevAuthority } from '../../src/dev-authority/index.js';
import { API, clientAssertion, clientKey, dpopProof, ENTRIES, MAIL, newMission, postForm, start, type ClientKey } from './helpers.js';

let dev: DevAuthority;
let key: ClientKey;
let token: string;
let missionId: string;

beforeAll(async () => {
  dev = await start();
  key = await clientKey();
  token = `${dev.url}/token`;
  missionId = await newMission(dev);
});
afterAll(() => dev.close());

const cc = (extra: Record<string, string | string[]> = {}): Record<string, string | string[]> => ({
  grant_type: 'client_credentials',
  client_id: 'agent-1',
  mission_id: missionId,
  resource: API,
  ...extra,
});

async function dpopToken(extra: Record<string, string | string[]> = {}): Promise<Response> {
  return postForm(token, cc(extra), { dpop: await dpopProof(key, token) });
}

describe('token endpoint: client_credentials (RFC 6749 §4.4, RFC 9068, RFC 9449 §5)', () => {
  it('RFC 9068 §2: mints a verifiable at+jwt bound to the proof key, carrying the Mission claim and applying entries', async () => {
    const res = await dpopToken();
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body['token_type']).toBe('DPoP');
    expect(body['expires_in']).toBe(300);
    const at = body['access_token'] as string;
    const { payload, protectedHeader } = await jwtVerify(at, createRemoteJWKSet(new URL(`${dev.url}/jwks`)), {
      typ: 'at+jwt',
      issuer: dev.url,
      audience: API,
      algorithms: ['ES256'],
    });
    expect(typeof protectedHeader.kid).toBe('string');
    const m = dev.missions.get(missionId)!;
    expect(payload).toMatchObject({
      sub: 'user_3p2q8mN1a0kV7tR',
      aud: API,
      client_id: 'agent-1',
      cnf: { jkt: key.jkt },
      scope: 'invoices.read payments.create',
      mission: { id: missionId, issuer: dev.url, authority_hash: m.authority_hash },
    });
    expect(typeof payload.jti).toBe('string');
    expect(payload.exp! - payload.iat!).toBe(300);
    // Only the entries whose resource applies to the requested resource.
    expect(payload['authorization_details']).toEqual([ENTRIES[0], ENTRIES[1]]);
  });

  it('RFC 9449 §5: a token request without a DPoP proof is refused (invalid_dpop_proof)', async () => {
    const res = await postForm(token, cc());
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_dpop_proof');
  });

  it('RFC 9449 §4.3: rejects a proof with the wrong htu, htm, typ, an old iat, a private key, or a replayed jti', async () => {
    const proofs = [
      await dpopProof(key, `${dev.url}/other`),
      await dpopProof(key, token, { htm: 'GET' }),
      await dpopProof(key, token, { typ: 'JWT' }),
      await dpopProof(key, token, { iat: Math.floor(Date.now() / 1000) - 600 }),
      await dpopProof(key, token, { jwk: { ...key.publicJwk, d: 'AAAA' } }),
    ];
    for (const p of proofs) {
      const res = await postForm(token, cc(), { dpop: p });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toBe('invalid_dpop_proof');
    }
    const once = await dpopProof(key, token);
    expect((await postForm(token, cc(), { dpop: once })).status).toBe(200);
    const replay = await postForm(token, cc(), { dpop: once });
    expect(replay.status).toBe(400);
    expect(((await replay.json()) as { error: string }).error).toBe('invalid_dpop_proof');
  });

  it('RFC 9449 §4.3: htu compares after normalization (case of scheme/host, default port)', async () => {
    const u = new URL(token);
    const htu = `HTTP://${u.host.toUpperCase()}${u.pathname}?q=1`;
    expect((await postForm(token, cc(), { dpop: await dpopProof(key, htu) })).status).toBe(200);
  });

  it('mints a Bearer (no cnf) token when token_type=Bearer is asked for', async () => {
    const res = await postForm(token, cc({ token_type: 'Bearer' }));
    const body = (await res.json()) as Record<string, unknown>;
    expect(body['token_type']).toBe('Bearer');
    expect(decodeJwt(body['access_token'] as string)['cnf']).toBeUndefined();
  });

  it('allowBearer: no DPoP header mints an unbound token; a proof still binds', async () => {
    const lax = await start({ allowBearer: true });
    try {
      const id = await newMission(lax);
      const url = `${lax.url}/token`;
      const bearer = (await (await postForm(url, cc({ mission_id: id }))).json()) as Record<string, unknown>;
      expect(bearer['token_type']).toBe('Bearer');
      expect(decodeJwt(bearer['access_token'] as string)['cnf']).toBeUndefined();
      const bound = (await (await postForm(url, cc({ mission_id: id }), { dpop: await dpopProof(key, url) })).json()) as Record<string, unknown>;
      expect(decodeJwt(bound['access_token'] as string)['cnf']).toEqual({ jkt: key.jkt });
    } finally {
      await lax.close();
    }
  });

  it('SPEC §3: mission_claim_form yields every reference form', async () => {
    const m = dev.missions.get(missionId)!;
    const claims = async (form: string): Promise<Record<string, unknown>> =>
      decodeJwt(((await (await dpopToken({ mission_claim_form: form })).json()) as { access_token: string }).access_token);
    expect((await claims('origin'))['mission']).toEqual({ id: missionId, origin: dev.url });
    const ref = await claims('mission_ref');
    expect(ref['mission_ref']).toBe(missionId);
    expect(ref['mission']).toBeUndefined();
    expect((await claims('aauth'))['mission']).toEqual({ approver: dev.url, s256: m.aauth.s256 });
    expect((await claims('mission_s256'))['mission_s256']).toBe(m.aauth.s256);
    const none = await claims('none');
    expect(none['mission']).toBeUndefined();
    expect(none['mission_ref']).toBeUndefined();
    expect(none['sub']).toBe(m.subject);
    const bad = await dpopToken({ mission_claim_form: 'other' });
    expect(bad.status).toBe(400);
  });

  it('RFC 8707: the MCP resource gets only its entries; several resources give an audience array', async () => {
    const mail = decodeJwt(((await (await dpopToken({ resource: MAIL })).json()) as { access_token: string }).access_token);
    expect(mail['aud']).toBe(MAIL);
    expect(mail['authorization_details']).toEqual([ENTRIES[2]]);
    const both = decodeJwt(((await (await dpopToken({ resource: [API, MAIL] })).json()) as { access_token: string }).access_token);
    expect(both['aud']).toEqual([API, MAIL]);
    expect(both['authorization_details']).toEqual(ENTRIES);
    const missing = await postForm(token, { grant_type: 'client_credentials', client_id: 'agent-1', mission_id: missionId }, { dpop: await dpopProof(key, token) });
    expect(((await missing.json()) as { error: string }).error).toBe('invalid_target');
  });

  it('a Mission that is not active is invalid_grant (with mission_error where the drafts define one)', async () => {
    const id = await newMission(dev);
    await dev.missions.suspend(id);
    const suspended = await dpopToken({ mission_id: id });
    expect(suspended.status).toBe(400);
    expect(await suspended.json()).toMatchObject({ error: 'invalid_grant' });
    await dev.missions.revoke(id);
    const revoked = await dpopToken({ mission_id: id });
    expect(await revoked.json()).toMatchObject({ error: 'invalid_grant', mission_error: 'mission_revoked' });
    const unknown = await dpopToken({ mission_id: 'msn_unknown' });
    expect(await unknown.json()).toMatchObject({ error: 'invalid_grant' });
    // mission-contracts section 7 names the other two (r18a 7).
    const superseded = await newMission(dev);
    await dev.missions.supersede(superseded);
    expect(await (await dpopToken({ mission_id: superseded })).json()).toMatchObject({ error: 'invalid_grant', mission_error: 'mission_superseded' });
    const expired = await newMission(dev);
    await dev.missions.expire(expired);
    expect(await (await dpopToken({ mission_id: expired })).json()).toMatchObject({ error: 'invalid_grant', mission_error: 'mission_expired' });
  });

  it('RFC 7523 §2.2: a registered client may authenticate with private_key_jwt; a bad assertion is invalid_client', async () => {
    const ck = await clientKey();
    dev.registerClient('agent-pk', ck.publicJwk);
    const good = await postForm(token, {
      grant_type: 'client_credentials',
      mission_id: missionId,
      resource: API,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(ck, 'agent-pk', token),
    }, { dpop: await dpopProof(key, token) });
    expect(good.status).toBe(200);
    expect(decodeJwt(((await good.json()) as { access_token: string }).access_token)['client_id']).toBe('agent-pk');
    const bad = await postForm(token, {
      grant_type: 'client_credentials',
      mission_id: missionId,
      resource: API,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(key, 'agent-pk', token),
    }, { dpop: await dpopProof(key, token) });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toMatchObject({ error: 'invalid_client' });
  });

  it('RFC 6749 §5.2: an unknown grant type is unsupported_grant_type', async () => {
    const res = await postForm(token, { grant_type: 'password', client_id: 'x' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'unsupported_grant_type' });
  });

  it('in-process issueAccessToken mints a token for any Mission state (for tests of revocation at the gateway)', async () => {
    const id = await newMission(dev);
    await dev.missions.revoke(id);
    const at = await dev.issueAccessToken({ missionId: id, resource: API, jkt: key.jkt, ttlSeconds: 60 });
    expect(decodeProtectedHeader(at).typ).toBe('at+jwt');
    expect(decodeJwt(at)).toMatchObject({ mission: { id }, cnf: { jkt: key.jkt }, client_id: 'agent-1' });
  });
});

describe('token exchange for an ID-JAG (RFC 8693, seed 000 projection profile)', () => {
  const XCHG = 'urn:ietf:params:oauth:grant-type:token-exchange';
  const CRM = 'https://crm-as.example.com';

  async function accessToken(id = missionId): Promise<string> {
    return ((await (await dpopToken({ mission_id: id })).json()) as { access_token: string }).access_token;
  }
  const exchange = (subject: string, extra: Record<string, string> = {}): Record<string, string> => ({
    grant_type: XCHG,
    requested_token_type: 'urn:openid:params:token-type:id-jag',
    subject_token: subject,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    audience: CRM,
    ...extra,
  });

  it('issues an oauth-id-jag+jwt with the minimum projection claims, bound to the proof key', async () => {
    const res = await postForm(token, exchange(await accessToken()), { dpop: await dpopProof(key, token) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ issued_token_type: 'urn:openid:params:token-type:id-jag', token_type: 'N_A' });
    const { payload, protectedHeader } = await jwtVerify(body['access_token'] as string, createRemoteJWKSet(new URL(`${dev.url}/jwks`)), {
      typ: 'oauth-id-jag+jwt',
      issuer: dev.url,
      audience: CRM,
    });
    expect(typeof protectedHeader.kid).toBe('string');
    expect(payload).toMatchObject({
      aud: CRM,
      sub: 'user_3p2q8mN1a0kV7tR',
      client_id: 'agent-1',
      mission_ref: missionId,
      purpose: 'https://example.com/purposes/reconcile',
      cnf: { jkt: key.jkt },
    });
    expect(typeof payload.jti).toBe('string');
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(300);
    for (const forbidden of ['client_context', 'display', 'authorization_details', 'mission', 'scope']) expect(payload).not.toHaveProperty(forbidden);
  });

  it('refuses without a DPoP proof, with another key than the subject token, or a foreign subject token', async () => {
    const at = await accessToken();
    expect((await postForm(token, exchange(at))).status).toBe(400);
    const other = await clientKey();
    const wrongKey = await postForm(token, exchange(at), { dpop: await dpopProof(other, token) });
    expect(await wrongKey.json()).toMatchObject({ error: 'invalid_grant' });
    const forged = `${at.slice(0, at.lastIndexOf('.'))}.${'A'.repeat(86)}`;
    const bad = await postForm(token, exchange(forged), { dpop: await dpopProof(key, token) });
    expect(await bad.json()).toMatchObject({ error: 'invalid_grant' });
  });

  it('refuses when the Mission is no longer active', async () => {
    const id = await newMission(dev);
    const at = await accessToken(id);
    await dev.missions.complete(id);
    const res = await postForm(token, exchange(at), { dpop: await dpopProof(key, token) });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'invalid_grant' });
  });
});
