/**
 * SPEC section 8 end to end: an agent gets an ID-JAG from the dev Mission Authority by token
 * exchange and presents it as a JWT bearer grant to a real oidc-provider behind the gateway.
 */
import { randomUUID } from 'node:crypto';
import { CompactEncrypt, decodeJwt, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevAuthority } from '../../src/dev-authority/index.js';
import { GRANT_JWT_BEARER } from '../../src/idjag/request.js';
import { newAgent } from '../helpers/agent.js';
import { eventually, startEcho } from '../helpers/gateway.js';
import { BASIC, mintIdJag, presentGrant, startScene, TOKEN_PATH, type GrantResponse, type Scene } from './harness.js';

let s: Scene;

beforeAll(async () => {
  s = await startScene();
});

afterAll(async () => {
  await s?.close();
});

/** A valid projection's claims for `missionId`, bound to the scene's agent; overrides win. */
function projection(missionId: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: s.dev.url,
    sub: 'user-123',
    aud: s.asIssuer,
    client_id: 'agent-1',
    mission_ref: missionId,
    purpose: 'https://example.com/purposes/schedule-meeting',
    iat: now,
    exp: now + 120,
    jti: `idjag_${randomUUID()}`,
    cnf: { jkt: s.agent.jkt },
    ...over,
  };
}

function signed(payload: Record<string, unknown>): Promise<string> {
  return s.dev.signJwt(payload, 'oauth-id-jag+jwt');
}

/** Expects an RFC 6749 section 5.2 error that never reached the AS, with its evidence record. */
async function expectRefused(r: GrantResponse, reason: string, callsBefore: number, error = 'invalid_grant'): Promise<void> {
  expect(r.status).toBe(400);
  expect(r.body).toMatchObject({ error, denial_reason: reason });
  expect(typeof r.body['error_description']).toBe('string');
  expect(r.headers.get('cache-control')).toBe('no-store');
  expect(r.headers.get('content-type')).toBe('application/json');
  const decisionId = r.body['decision_id'];
  expect(r.headers.get('mission-decision')).toBe(decisionId);
  expect(s.as.calls.length).toBe(callsBefore);
  const record = await eventually(() => s.gw.evidence().find((e) => e['decision_id'] === decisionId));
  expect(record).toMatchObject({ decision: 'deny', denial_reason: reason, path: TOKEN_PATH, audience: s.asIssuer, upstream_status: null });
}

describe('SPEC section 8: a valid Mission projection gets a token from the downstream AS', () => {
  it('forwards the grant with Authorization and DPoP intact; the AS binds its token to the proof key', async () => {
    const { missionId, idJag } = await mintIdJag(s);
    expect(decodeJwt(idJag)).toMatchObject({ mission_ref: missionId, aud: s.asIssuer, cnf: { jkt: s.agent.jkt } });
    const before = s.as.calls.length;
    const r = await presentGrant(s, idJag);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ token_type: 'DPoP', scope: 'crm.notes.write' });
    expect(typeof r.body['access_token']).toBe('string');
    expect(s.as.calls.length).toBe(before + 1);
    expect(s.as.calls.at(-1)).toEqual({ assertion: idJag, authorization: BASIC, dpopJkt: s.agent.jkt });

    // A permit record is written once the AS answered; the AS got its decision_id as Mission-Decision.
    const jti = decodeJwt(idJag).jti;
    const record = await eventually(() => s.gw.evidence().find((e) => e['token_jti'] === jti));
    expect(record).toMatchObject({
      decision: 'permit',
      denial_reason: null,
      action: 'id_jag.grant',
      audience: s.asIssuer,
      subject: 'user-123',
      client_id: 'agent-1',
      token_jti: decodeJwt(idJag).jti,
      jkt: s.agent.jkt,
      upstream_status: 200,
      mission: { id: missionId, issuer: s.dev.url, state: 'active' },
    });
    expect(JSON.stringify(record)).not.toContain(idJag.split('.')[2]);
  });
});

describe('SPEC section 8 / seed 000: violations get invalid_grant and the AS grant handler is never invoked', () => {
  it('aud naming another AS', async () => {
    const { idJag } = await mintIdJag(s, { audience: 'https://calendar-as.example.com' });
    const before = s.as.calls.length;
    await expectRefused(await presentGrant(s, idJag), 'id_jag_audience', before);
  });

  it('aud with two audiences, this AS among them', async () => {
    const { missionId } = await mintIdJag(s);
    const before = s.as.calls.length;
    const idJag = await signed(projection(missionId, { aud: [s.asIssuer, 'https://calendar-as.example.com'] }));
    await expectRefused(await presentGrant(s, idJag), 'id_jag_audience', before);
  });

  it('an expired assertion', async () => {
    const { missionId } = await mintIdJag(s);
    const now = Math.floor(Date.now() / 1000);
    const before = s.as.calls.length;
    const idJag = await signed(projection(missionId, { iat: now - 400, exp: now - 100 }));
    await expectRefused(await presentGrant(s, idJag), 'id_jag_expired', before);
  });

  it('a lifetime above id_jag.max_lifetime_s (default 300)', async () => {
    const { missionId } = await mintIdJag(s);
    const now = Math.floor(Date.now() / 1000);
    const before = s.as.calls.length;
    const idJag = await signed(projection(missionId, { iat: now, exp: now + 3600 }));
    await expectRefused(await presentGrant(s, idJag), 'id_jag_time_invalid', before);
  });

  it('a replayed assertion (jti single use), even with a fresh DPoP proof', async () => {
    const { idJag } = await mintIdJag(s);
    const before = s.as.calls.length;
    expect((await presentGrant(s, idJag)).status).toBe(200);
    await expectRefused(await presentGrant(s, idJag), 'replayed', before + 1);
  });

  it('a replayed assertion under parameter names in another case (an AS reading them case-insensitively takes it)', async () => {
    const { idJag } = await mintIdJag(s);
    const before = s.as.calls.length;
    expect((await presentGrant(s, idJag)).status).toBe(200);
    const res = await fetch(s.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC, dpop: await s.agent.proof('POST', s.tokenUrl) },
      body: `GRANT_TYPE=${encodeURIComponent(GRANT_JWT_BEARER)}&ASSERTION=${idJag}`,
    });
    await expectRefused({ status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> }, 'replayed', before + 1);
  });

  it('client_context present', async () => {
    const { missionId } = await mintIdJag(s);
    const before = s.as.calls.length;
    const idJag = await signed(projection(missionId, { client_context: { purpose: { kind: 'https://example.com/purposes/schedule-meeting' } } }));
    await expectRefused(await presentGrant(s, idJag), 'id_jag_forbidden_claim', before);
  });

  it('display and authorization_details present (authority-model internals)', async () => {
    const { missionId } = await mintIdJag(s);
    const before = s.as.calls.length;
    await expectRefused(await presentGrant(s, await signed(projection(missionId, { display: { title: 'Schedule Meeting' } }))), 'id_jag_forbidden_claim', before);
    const rar = [{ type: 'mission_resource_access', resource: s.asIssuer, actions: ['crm.notes.write'] }];
    await expectRefused(await presentGrant(s, await signed(projection(missionId, { authorization_details: rar }))), 'id_jag_forbidden_claim', before);
  });

  it('a minimum claim missing (mission_ref, purpose)', async () => {
    const { missionId } = await mintIdJag(s);
    const before = s.as.calls.length;
    const p = projection(missionId);
    delete p['mission_ref'];
    await expectRefused(await presentGrant(s, await signed(p)), 'id_jag_claim_missing', before);
    const q = projection(missionId);
    delete q['purpose'];
    await expectRefused(await presentGrant(s, await signed(q)), 'id_jag_claim_missing', before);
  });

  it('an untrusted issuer (another authority, valid signature of its own)', async () => {
    const other = await startDevAuthority({ quiet: true, log: () => undefined });
    try {
      const m = await other.missions.create({ subject: 'user-123', client_id: 'agent-1', purpose: 'p', authorization_details: [{ type: 'mission_resource_access', resource: s.asIssuer, actions: ['crm.notes.write'] }] });
      const idJag = await other.signJwt({ ...projection(m.id), iss: other.url }, 'oauth-id-jag+jwt');
      const before = s.as.calls.length;
      await expectRefused(await presentGrant(s, idJag), 'id_jag_untrusted_issuer', before);
    } finally {
      await other.close();
    }
  });

  it('a forged signature (trusted iss, key not the issuer’s)', async () => {
    const other = await startDevAuthority({ quiet: true, log: () => undefined });
    try {
      const { missionId } = await mintIdJag(s);
      const idJag = await other.signJwt(projection(missionId), 'oauth-id-jag+jwt');
      const before = s.as.calls.length;
      await expectRefused(await presentGrant(s, idJag), 'id_jag_invalid', before);
    } finally {
      await other.close();
    }
  });

  it('a revoked Mission (the assertion was minted while it was active)', async () => {
    const { missionId, idJag } = await mintIdJag(s);
    await s.dev.missions.revoke(missionId);
    const before = s.as.calls.length;
    const r = await presentGrant(s, idJag);
    await expectRefused(r, 'mission_inactive', before);
    expect(r.body['mission_status']).toBe('revoked');
    // The token endpoint's own member (mission-contracts section 7), as the AS would answer it.
    expect(r.body['mission_error']).toBe('mission_revoked');
  });

  it('an ID-JAG encrypted to the AS (a nested JWT): the guard cannot read it, so it is refused (r17c 1)', async () => {
    const { missionId, idJag } = await mintIdJag(s);
    await s.dev.missions.revoke(missionId);
    const { publicKey } = await generateKeyPair('RSA-OAEP-256');
    const wrapped = await new CompactEncrypt(new TextEncoder().encode(idJag)).setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'JWT' }).encrypt(publicKey);
    const before = s.as.calls.length;
    await expectRefused(await presentGrant(s, wrapped), 'request_malformed', before, 'invalid_request');
  });

  it('a suspended Mission (Retry-After when suspend_until is known)', async () => {
    const { missionId, idJag } = await mintIdJag(s);
    await s.dev.missions.suspend(missionId, { suspend_until: Math.floor(Date.now() / 1000) + 600 });
    const before = s.as.calls.length;
    const r = await presentGrant(s, idJag);
    await expectRefused(r, 'mission_inactive', before);
    expect(r.body['mission_status']).toBe('suspended');
    expect(r.body['mission_error']).toBeUndefined(); // the drafts name none for a suspension
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(500);
  });

  it('key mismatch: the DPoP proof is signed by another key than cnf.jkt', async () => {
    const { idJag } = await mintIdJag(s);
    const thief = await newAgent();
    const before = s.as.calls.length;
    await expectRefused(await presentGrant(s, idJag, { agent: thief }), 'id_jag_key_mismatch', before);
  });

  it('key mismatch: a key-bound assertion presented without any DPoP proof', async () => {
    const { idJag } = await mintIdJag(s);
    const before = s.as.calls.length;
    await expectRefused(await presentGrant(s, idJag, { proof: null }), 'id_jag_key_mismatch', before);
  });

  it('RFC 9449 section 5: a DPoP proof for another htu is invalid_dpop_proof', async () => {
    const { idJag } = await mintIdJag(s);
    const before = s.as.calls.length;
    const proof = await s.agent.proof('POST', `${s.asIssuer}/other`);
    await expectRefused(await presentGrant(s, idJag, { proof }), 'dpop_invalid', before, 'invalid_dpop_proof');
  });

  it('RFC 6749 section 3.2: a repeated grant_type is invalid_request', async () => {
    const { idJag } = await mintIdJag(s);
    const before = s.as.calls.length;
    const res = await fetch(s.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC, dpop: await s.agent.proof('POST', s.tokenUrl) },
      body: `grant_type=client_credentials&grant_type=${encodeURIComponent(GRANT_JWT_BEARER)}&assertion=${idJag}`,
    });
    await expectRefused({ status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> }, 'request_malformed', before, 'invalid_request');
  });
});

describe('a token request the AS could read otherwise than the guard is refused, never forwarded (rerun of r13)', () => {
  it('a form in UTF-16 (the guard would see no grant, an AS honouring the charset an ID-JAG), two Content-Type fields, a NUL after the grant type', async () => {
    const { idJag } = await mintIdJag(s);
    const form = `grant_type=${encodeURIComponent(GRANT_JWT_BEARER)}&assertion=${idJag}`;
    const send = async (contentType: string | string[], body: string | Buffer) => {
      const { request } = await import('node:http');
      const dpop = await s.agent.proof('POST', s.tokenUrl);
      const u = new URL(s.gw.url);
      return new Promise<GrantResponse>((resolve, reject) => {
        const req = request({ host: u.hostname, port: u.port, path: TOKEN_PATH, method: 'POST', headers: { 'content-type': contentType, authorization: BASIC, dpop } }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: new Headers(res.headers as Record<string, string>), body: JSON.parse(text) as Record<string, unknown> }));
        });
        req.on('error', reject);
        req.end(body);
      });
    };
    const before = s.as.calls.length;
    await expectRefused(await send('application/x-www-form-urlencoded; charset=utf-16le', Buffer.from(form, 'utf16le')), 'request_malformed', before, 'invalid_request');
    await expectRefused(await send(['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-16le'], form), 'request_malformed', before, 'invalid_request');
    await expectRefused(await send('application/x-www-form-urlencoded', form.replace('jwt-bearer', 'jwt-bearer%00')), 'request_malformed', before, 'invalid_request');
  });
});

describe('RFC 6749 section 3.2: the token endpoint takes POST', () => {
  it('an ID-JAG grant in the query of a GET is refused invalid_request, never forwarded', async () => {
    const { idJag } = await mintIdJag(s);
    const before = s.as.calls.length;
    const query = new URLSearchParams({ grant_type: GRANT_JWT_BEARER, assertion: idJag }).toString();
    const res = await fetch(`${s.tokenUrl}?${query}`, { headers: { authorization: BASIC, dpop: await s.agent.proof('GET', s.tokenUrl) } });
    await expectRefused({ status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> }, 'request_malformed', before, 'invalid_request');
  });
});

describe('SPEC section 8: grants that are not ID-JAGs pass through to the AS', () => {
  it('a jwt-bearer grant whose assertion is not an ID-JAG (typ JWT) reaches the AS grant handler', async () => {
    const { missionId } = await mintIdJag(s);
    const plain = await s.dev.signJwt(projection(missionId, { client_context: { x: 1 } }), 'JWT');
    const before = s.as.calls.length;
    const records = s.gw.evidence().length;
    const r = await presentGrant(s, plain);
    expect(r.status).toBe(200);
    expect(s.as.calls.length).toBe(before + 1);
    expect(s.as.calls.at(-1)?.assertion).toBe(plain);
    const record = await eventually(() => s.gw.evidence()[records]);
    expect(record).toMatchObject({ decision: 'permit', denial_reason: null, action: null, token_jti: null, upstream_status: 200 });
  });

  it('a client_credentials grant is answered by the AS itself', async () => {
    const before = s.as.calls.length;
    const res = await fetch(s.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC },
      body: 'grant_type=client_credentials',
    });
    const body = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);
    expect(body['token_type']).toBe('Bearer');
    expect(s.as.calls.length).toBe(before);
  });
});

describe('SPEC section 8: what the AS receives', () => {
  it('pass-through and permitted bodies arrive byte-identical, with Authorization and DPoP, without Mission references', async () => {
    const echo = await startEcho();
    const scene = await startScene({ upstream: echo.url });
    try {
      const odd = 'grant_type=client_credentials&scope=a%20b&x=%F0%9F%98%80&&y=+';
      // Mission references are the gateway's to read, never the AS's (SPEC section 6; r17c 2).
      const refs = { 'mission-reference': 'msn_other', 'aauth-mission': 'approver="https://ps.example"; s256="x"' };
      const r1 = await fetch(scene.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC, dpop: 'not-a-proof', ...refs }, body: odd });
      expect(r1.status).toBe(200);
      const seen1 = echo.requests.at(-1)!;
      expect(seen1.body.toString('latin1')).toBe(odd);
      expect(seen1.headers['authorization']).toBe(BASIC);
      expect(seen1.headers['dpop']).toBe('not-a-proof');
      expect(seen1.headers['mission-reference']).toBeUndefined();
      expect(seen1.headers['aauth-mission']).toBeUndefined();

      const { idJag } = await mintIdJag(scene);
      const proof = await scene.agent.proof('POST', scene.tokenUrl);
      const body = `grant_type=${encodeURIComponent(GRANT_JWT_BEARER)}&assertion=${idJag}&scope=crm.notes.write`;
      const r2 = await fetch(scene.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC, dpop: proof, ...refs }, body });
      expect(r2.status).toBe(200);
      const seen2 = echo.requests.at(-1)!;
      expect(seen2.url).toBe(TOKEN_PATH);
      expect(seen2.body.toString('latin1')).toBe(body);
      expect(seen2.headers['authorization']).toBe(BASIC);
      expect(seen2.headers['dpop']).toBe(proof);
      expect(seen2.headers['mission-reference']).toBeUndefined();
      expect(seen2.headers['aauth-mission']).toBeUndefined();
      const jti = decodeJwt(idJag).jti;
      const record = await eventually(() => scene.gw.evidence().find((e) => e['token_jti'] === jti));
      expect(seen2.headers['mission-decision']).toBe(record['decision_id']);
    } finally {
      await scene.close();
      await echo.close();
    }
  });
});

describe('seed 000 local policy and the limits, in config', () => {
  let r: Scene;

  beforeAll(async () => {
    r = await startScene({
      idJag: (dev) =>
        [
          '  forbidden_claims: [client_id]',
          '  policy:',
          `    - { issuer: "${dev}", purposes: [https://example.com/purposes/schedule-meeting], act_profiles: [ai_agent] }`,
        ].join('\n'),
      top: 'max_body_bytes: 2048',
    });
  });

  afterAll(async () => {
    await r?.close();
  });

  it('id_jag.forbidden_claims adds to the built-in list (the dev authority projects client_id)', async () => {
    const { idJag } = await mintIdJag(r);
    const before = r.as.calls.length;
    const res = await presentGrant(r, idJag);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_grant', denial_reason: 'id_jag_forbidden_claim' });
    expect(r.as.calls.length).toBe(before);
  });

  it('id_jag.policy: a purpose or actor profile outside the issuer’s entry is refused, one inside passes', async () => {
    const { missionId } = await mintIdJag(r);
    const now = Math.floor(Date.now() / 1000);
    const base = { iss: r.dev.url, sub: 'user-123', aud: r.asIssuer, mission_ref: missionId, iat: now, exp: now + 60, cnf: { jkt: r.agent.jkt } };
    const sign = (extra: Record<string, unknown>): Promise<string> => r.dev.signJwt({ ...base, jti: randomUUID(), ...extra }, 'oauth-id-jag+jwt');
    const before = r.as.calls.length;
    const otherPurpose = await presentGrant(r, await sign({ purpose: 'https://example.com/purposes/wire-money' }));
    expect(otherPurpose.body).toMatchObject({ error: 'invalid_grant', denial_reason: 'id_jag_policy' });
    const service = await presentGrant(r, await sign({ purpose_kind: 'https://example.com/purposes/schedule-meeting', act: { sub: 'svc', sub_profile: 'service' } }));
    expect(service.body).toMatchObject({ error: 'invalid_grant', denial_reason: 'id_jag_policy' });
    expect(r.as.calls.length).toBe(before);
    const ok = await presentGrant(r, await sign({ purpose: 'https://example.com/purposes/schedule-meeting', act: { sub: 'assistant-agent-v2', sub_profile: 'ai_agent' } }));
    expect(ok.status).toBe(200);
    expect(r.as.calls.length).toBe(before + 1);
  });

  it('SPEC section 5: a token request body above max_body_bytes is 413 and never reaches the AS', async () => {
    const { idJag } = await mintIdJag(r);
    const before = r.as.calls.length;
    const res = await presentGrant(r, idJag, { extra: { padding: 'x'.repeat(4096) } });
    expect(res.status).toBe(413);
    expect(res.body).toMatchObject({ error: 'payload_too_large', denial_reason: 'body_too_large' });
    expect(r.as.calls.length).toBe(before);
  });
});

describe('SPEC section 3: Mission state that cannot be established fails closed', () => {
  it('authority unreachable: 503 mission_state_unavailable and the AS is never called', async () => {
    const scene = await startScene();
    let closed = false;
    try {
      const first = await mintIdJag(scene);
      expect((await presentGrant(scene, first.idJag)).status).toBe(200); // issuer keys now cached
      const { idJag } = await mintIdJag(scene, { missionId: first.missionId });
      await scene.dev.close();
      closed = true;
      const before = scene.as.calls.length;
      const res = await presentGrant(scene, idJag);
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ error: 'mission_state_unavailable', denial_reason: 'state_unavailable' });
      expect(scene.as.calls.length).toBe(before);
      // The assertion was not used: its jti was released, so the retry is judged again (still 503
      // while the authority is down), not refused as a replay.
      const again = await presentGrant(scene, idJag);
      expect(again.status).toBe(503);
      expect(again.body).toMatchObject({ denial_reason: 'state_unavailable' });
    } finally {
      if (closed) {
        await scene.gw.close();
        await scene.as.close();
      } else {
        await scene.close();
      }
    }
  });
});

describe('fail closed on the replay store; counted in metrics', () => {
  it('replay store unreachable: 503 replay_store_unavailable, the AS is never called', async () => {
    const { idJag } = await mintIdJag(s);
    const store = (s.gw.gateway as unknown as { longLived: { replay: { claim: (key: string, ttl: number) => boolean | Promise<boolean> } } }).longLived.replay;
    const claim = store.claim;
    store.claim = () => Promise.reject(new Error('store down'));
    try {
      const before = s.as.calls.length;
      const res = await presentGrant(s, idJag);
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ error: 'temporarily_unavailable', denial_reason: 'replay_store_unavailable' });
      expect(s.as.calls.length).toBe(before);
    } finally {
      store.claim = claim;
    }
  });

  it('SPEC section 9: refusals are counted by denial_reason', async () => {
    const count = async (reason: string): Promise<number> => {
      const metrics = await (await fetch(`${s.gw.adminUrl}/metrics`)).text();
      return Number(new RegExp(`^mission_gateway_requests_total\\{decision="deny",reason="${reason}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0);
    };
    const [replayed, audience] = [await count('replayed'), await count('id_jag_audience')];
    const other = await mintIdJag(s, { audience: 'https://calendar-as.example.com' });
    expect((await presentGrant(s, other.idJag)).status).toBe(400);
    const { idJag } = await mintIdJag(s);
    expect((await presentGrant(s, idJag)).status).toBe(200);
    expect((await presentGrant(s, idJag)).status).toBe(400);
    expect(await count('id_jag_audience')).toBe(audience + 1);
    expect(await count('replayed')).toBe(replayed + 1);
  });
});

describe('an assertion the AS refuses for another reason than a DPoP nonce stays spent (r18a 3)', () => {
  it('400 invalid_grant without DPoP-Nonce: the same assertion again is replayed, and the AS is not asked twice', async () => {
    const as = await startEcho((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end('{"error":"invalid_grant","error_description":"refused by the AS"}');
    });
    const scene = await startScene({ upstream: as.url });
    try {
      const { idJag } = await mintIdJag(scene);
      const first = await presentGrant(scene, idJag);
      expect(first.status).toBe(400);
      expect(first.body).toMatchObject({ error: 'invalid_grant', error_description: 'refused by the AS' });
      expect(as.requests).toHaveLength(1);
      const again = await presentGrant(scene, idJag);
      expect(again.status).toBe(400);
      expect(again.body).toMatchObject({ error: 'invalid_grant', denial_reason: 'replayed' });
      expect(as.requests).toHaveLength(1);
    } finally {
      await scene.close();
      await as.close();
    }
  });
});

describe('RFC 9449 section 8: a downstream AS that requires DPoP nonces', () => {
  let n: Scene;
  beforeAll(async () => {
    n = await startScene({ requireDpopNonce: true });
  });
  afterAll(async () => {
    await n?.close();
  });

  it('the AS answers use_dpop_nonce; the retry of the same assertion with the nonce gets the token; a third use is a replay', async () => {
    const { idJag } = await mintIdJag(n);
    const first = await presentGrant(n, idJag);
    expect(first.status).toBe(400);
    expect(first.body['error']).toBe('use_dpop_nonce');
    const nonce = first.headers.get('dpop-nonce');
    expect(nonce).toEqual(expect.any(String));

    const second = await presentGrant(n, idJag, { proof: await n.agent.proof('POST', n.tokenUrl, undefined, { nonce }) });
    expect(second.status).toBe(200);
    expect(second.body).toMatchObject({ token_type: 'DPoP' });
    expect(n.as.calls.at(-1)?.dpopJkt).toBe(n.agent.jkt);

    const third = await presentGrant(n, idJag, { proof: await n.agent.proof('POST', n.tokenUrl, undefined, { nonce }) });
    expect(third.status).toBe(400);
    expect(third.body).toMatchObject({ error: 'invalid_grant', denial_reason: 'replayed' });
  });
});
