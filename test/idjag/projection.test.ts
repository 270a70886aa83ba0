import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { BUILTIN_FORBIDDEN_CLAIMS, checkProjection, compileRules, IdJagRejection, type IdJagReason, type ProjectionRules } from '../../src/idjag/projection.js';

const IDP = 'https://idp.example.com';
const OTHER_IDP = 'https://idp2.example.com';
const AS = 'https://crm-as.example.com';
const NOW = 1_773_069_300;
const PURPOSE = 'https://example.com/purposes/schedule-meeting';

function rules(idJag: Record<string, unknown> = {}): ProjectionRules {
  const config = configSchema.parse({
    public_base_url: AS,
    resource: AS,
    upstream: { url: 'http://127.0.0.1:3000' },
    id_jag: { token_path: '/oauth2/token', trusted_issuers: [IDP, OTHER_IDP], ...idJag },
  });
  return compileRules(config.id_jag!, config.resource, config.token.clock_skew_s);
}

/** Seed 000's Phase 3 example, completed with iat and a cnf. */
function claims(over: Record<string, unknown> = {}, omit: string[] = []): Record<string, unknown> {
  const c: Record<string, unknown> = {
    iss: IDP,
    sub: 'user-123',
    sub_profile: 'user',
    aud: AS,
    act: { sub: 'assistant-agent-v2', sub_profile: 'ai_agent' },
    mission_ref: 'mr_7M9Qx2',
    purpose: PURPOSE,
    iat: NOW - 10,
    exp: NOW + 290,
    jti: 'id-jag-8f3a2b',
    cnf: { jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' },
    ...over,
  };
  for (const k of omit) delete c[k];
  return c;
}

function reasonOf(payload: Record<string, unknown>, r: ProjectionRules = rules()): IdJagReason {
  try {
    checkProjection(payload, r, NOW);
  } catch (err) {
    expect(err).toBeInstanceOf(IdJagRejection);
    return (err as IdJagRejection).reason;
  }
  throw new Error('expected a rejection');
}

describe('seed 000 Mission Projection Profile: minimum claims', () => {
  it('accepts the seed example projection and returns its facts', () => {
    const p = checkProjection(claims({ client_id: 'agent-client' }), rules(), NOW);
    expect(p).toEqual({
      issuer: IDP,
      subject: 'user-123',
      missionRef: 'mr_7M9Qx2',
      purpose: PURPOSE,
      iat: NOW - 10,
      exp: NOW + 290,
      jti: 'id-jag-8f3a2b',
      jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I',
      clientId: 'agent-client',
      actor: { sub: 'assistant-agent-v2', sub_profile: 'ai_agent' },
    });
  });

  it('accepts purpose_kind in place of purpose, and both when they agree', () => {
    expect(checkProjection(claims({ purpose_kind: PURPOSE }, ['purpose']), rules(), NOW).purpose).toBe(PURPOSE);
    expect(checkProjection(claims({ purpose_kind: PURPOSE }), rules(), NOW).purpose).toBe(PURPOSE);
  });

  it('accepts an unbound projection (no cnf) and one without an actor', () => {
    const p = checkProjection(claims({}, ['cnf', 'act']), rules(), NOW);
    expect(p.jkt).toBeNull();
    expect(p.actor).toBeNull();
  });

  for (const name of ['iss', 'aud', 'sub', 'mission_ref', 'iat', 'exp', 'jti']) {
    it(`rejects a projection without ${name}`, () => {
      expect(reasonOf(claims({}, [name]))).toBe('id_jag_claim_missing');
    });
  }

  it('rejects a projection with neither purpose nor purpose_kind', () => {
    expect(reasonOf(claims({}, ['purpose']))).toBe('id_jag_claim_missing');
  });

  it('rejects purpose and purpose_kind that disagree', () => {
    expect(reasonOf(claims({ purpose_kind: 'https://example.com/purposes/other' }))).toBe('id_jag_claim_missing');
  });

  it('rejects claims of the wrong type (empty strings, numbers, a purpose object, an oversized jti)', () => {
    expect(reasonOf(claims({ sub: '' }))).toBe('id_jag_claim_missing');
    expect(reasonOf(claims({ mission_ref: 42 }))).toBe('id_jag_claim_missing');
    expect(reasonOf(claims({ exp: String(NOW + 10) }))).toBe('id_jag_claim_missing');
    expect(reasonOf(claims({ purpose: { kind: PURPOSE, display: { title: 'x' } } }))).toBe('id_jag_claim_missing');
    expect(reasonOf(claims({ jti: 'j'.repeat(257) }))).toBe('id_jag_claim_missing');
  });
});

describe('SPEC section 8: aud is exactly this AS', () => {
  it('accepts a one-element array', () => {
    expect(checkProjection(claims({ aud: [AS] }), rules(), NOW).issuer).toBe(IDP);
  });

  it('rejects another audience, two audiences and an empty array', () => {
    expect(reasonOf(claims({ aud: 'https://calendar-as.example.com' }))).toBe('id_jag_audience');
    expect(reasonOf(claims({ aud: [AS, 'https://calendar-as.example.com'] }))).toBe('id_jag_audience');
    expect(reasonOf(claims({ aud: [AS, AS] }))).toBe('id_jag_audience');
    expect(reasonOf(claims({ aud: [] }))).toBe('id_jag_audience');
    expect(reasonOf(claims({ aud: AS + '/' }))).toBe('id_jag_audience');
  });

  it('uses id_jag.audience when configured, else resource', () => {
    const r = rules({ audience: 'https://other-as.example.com' });
    expect(r.audience).toBe('https://other-as.example.com');
    expect(reasonOf(claims(), r)).toBe('id_jag_audience');
    expect(rules().audience).toBe(AS);
  });
});

describe('seed 000 Downstream AS Processing: time validity', () => {
  const skew = 30; // token.clock_skew_s default

  it('rejects an expired projection, allowing the clock skew', () => {
    expect(reasonOf(claims({ iat: NOW - 300, exp: NOW - skew }))).toBe('id_jag_expired');
    expect(checkProjection(claims({ iat: NOW - 300, exp: NOW - skew + 1 }), rules(), NOW).exp).toBe(NOW - skew + 1);
  });

  it('rejects a lifetime above id_jag.max_lifetime_s', () => {
    expect(reasonOf(claims({ iat: NOW - 10, exp: NOW - 10 + 301 }))).toBe('id_jag_time_invalid');
    expect(checkProjection(claims({ iat: NOW - 10, exp: NOW - 10 + 300 }), rules(), NOW).jti).toBe('id-jag-8f3a2b');
    expect(reasonOf(claims({ iat: NOW - 10, exp: NOW + 60 }), rules({ max_lifetime_s: 60 }))).toBe('id_jag_time_invalid');
  });

  it('rejects iat in the future, exp not after iat, and nbf not reached', () => {
    expect(reasonOf(claims({ iat: NOW + skew + 1, exp: NOW + 200 }))).toBe('id_jag_time_invalid');
    expect(reasonOf(claims({ iat: NOW + 100, exp: NOW + 100 }))).toBe('id_jag_time_invalid');
    expect(reasonOf(claims({ nbf: NOW + skew + 1 }))).toBe('id_jag_time_invalid');
    expect(reasonOf(claims({ nbf: 'soon' }))).toBe('id_jag_time_invalid');
  });
});

describe('seed 000 Projection Minimization Rules: forbidden members', () => {
  for (const name of BUILTIN_FORBIDDEN_CLAIMS) {
    it(`rejects a projection carrying ${name}`, () => {
      expect(reasonOf(claims({ [name]: name === 'display' ? { title: 'Schedule Meeting' } : { x: 1 } }))).toBe('id_jag_forbidden_claim');
    });
  }

  it('names client_context, display, authorization_details and authority_hash among the built-in ones', () => {
    expect(BUILTIN_FORBIDDEN_CLAIMS).toEqual(expect.arrayContaining(['client_context', 'display', 'authorization_details', 'authority_hash']));
  });

  it('rejects a forbidden member even when it is null', () => {
    expect(reasonOf(claims({ client_context: null }))).toBe('id_jag_forbidden_claim');
  });

  it('adds the configured id_jag.forbidden_claims', () => {
    const r = rules({ forbidden_claims: ['email', 'params'] });
    expect(reasonOf(claims({ email: 'u@example.com' }), r)).toBe('id_jag_forbidden_claim');
    expect(reasonOf(claims({ params: { calendar: 'eng' } }), r)).toBe('id_jag_forbidden_claim');
    expect(checkProjection(claims({ params: { calendar: 'eng' } }), rules(), NOW).subject).toBe('user-123');
  });
});

describe('RFC 7800 cnf: only a jkt confirmation is understood', () => {
  it('rejects a cnf without jkt (x5t#S256) and a malformed cnf', () => {
    expect(reasonOf(claims({ cnf: { 'x5t#S256': 'abc' } }))).toBe('id_jag_invalid');
    expect(reasonOf(claims({ cnf: 'abc' }))).toBe('id_jag_invalid');
    expect(reasonOf(claims({ cnf: { jkt: '' } }))).toBe('id_jag_invalid');
  });
});

describe('seed 000 Downstream AS Processing: local policy (id_jag.policy)', () => {
  it('with no policy entries, any purpose and actor of a trusted issuer passes', () => {
    expect(rules().policy).toBeNull();
    expect(checkProjection(claims({ act: { sub: 'x', sub_profile: 'anything' } }), rules(), NOW).issuer).toBe(IDP);
  });

  it('rejects an issuer without an entry once any entry exists', () => {
    const r = rules({ policy: [{ issuer: OTHER_IDP }] });
    expect(reasonOf(claims(), r)).toBe('id_jag_policy');
    expect(checkProjection(claims({ iss: OTHER_IDP }), r, NOW).issuer).toBe(OTHER_IDP);
  });

  it('rejects a purpose outside purposes ∪ purpose_kinds', () => {
    const r = rules({ policy: [{ issuer: IDP, purposes: ['https://example.com/purposes/a'], purpose_kinds: [PURPOSE] }] });
    expect(checkProjection(claims(), r, NOW).purpose).toBe(PURPOSE);
    expect(checkProjection(claims({ purpose: 'https://example.com/purposes/a' }), r, NOW).purpose).toBe('https://example.com/purposes/a');
    expect(reasonOf(claims({ purpose: 'https://example.com/purposes/b' }), r)).toBe('id_jag_policy');
    expect(reasonOf(claims({ purpose_kind: 'https://example.com/purposes/b' }, ['purpose']), r)).toBe('id_jag_policy');
  });

  it('rejects an actor profile outside act_profiles, at every level of a delegation chain', () => {
    const r = rules({ policy: [{ issuer: IDP, act_profiles: ['ai_agent'] }] });
    expect(checkProjection(claims(), r, NOW).actor).toEqual({ sub: 'assistant-agent-v2', sub_profile: 'ai_agent' });
    expect(reasonOf(claims({ act: { sub: 's', sub_profile: 'service' } }), r)).toBe('id_jag_policy');
    expect(reasonOf(claims({ act: { sub: 'a' } }), r)).toBe('id_jag_policy');
    expect(reasonOf(claims({ act: { sub: 'a', sub_profile: 'ai_agent', act: { sub: 'b', sub_profile: 'service' } } }), r)).toBe('id_jag_policy');
    expect(checkProjection(claims({ act: { sub: 'a', sub_profile: 'ai_agent', act: { sub: 'b', sub_profile: 'ai_agent' } } }), r, NOW).issuer).toBe(IDP);
  });

  it('act_profiles: [] allows no actor at all; an absent act passes', () => {
    const r = rules({ policy: [{ issuer: IDP, act_profiles: [] }] });
    expect(reasonOf(claims(), r)).toBe('id_jag_policy');
    expect(checkProjection(claims({}, ['act']), r, NOW).actor).toBeNull();
  });

  it('entries for one issuer are alternatives: one permitting entry suffices', () => {
    const r = rules({
      policy: [
        { issuer: IDP, purposes: ['https://example.com/purposes/a'], act_profiles: [] },
        { issuer: IDP, purposes: [PURPOSE], act_profiles: ['ai_agent'] },
      ],
    });
    expect(checkProjection(claims(), r, NOW).purpose).toBe(PURPOSE);
    expect(reasonOf(claims({ purpose: 'https://example.com/purposes/a' }), r)).toBe('id_jag_policy');
  });

  it('rejects a malformed act (not an object, or nested too deep)', () => {
    expect(reasonOf(claims({ act: 'assistant-agent-v2' }))).toBe('id_jag_claim_missing');
    let deep: Record<string, unknown> = { sub: 'x' };
    for (let i = 0; i < 10; i++) deep = { sub: `x${i}`, act: deep };
    expect(reasonOf(claims({ act: deep }))).toBe('id_jag_claim_missing');
  });
});
