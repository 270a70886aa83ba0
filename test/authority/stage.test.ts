import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { authorityHash } from '../../src/authority/params.js';
import { authorityHashMismatch, createAuthorityStage, createParametersStage } from '../../src/authority/stage.js';
import { compileRoutes } from '../../src/config/compile.js';
import { configSchema } from '../../src/config/schema.js';
import { isDenial, type Denial } from '../../src/errors.js';
import type { AuthorityEntry, MissionView, RequestContext } from '../../src/pipeline/context.js';

const config = configSchema.parse({
  public_base_url: 'https://API.example.com:443',
  resource: 'https://api.example.com',
  upstream: { url: 'http://127.0.0.1:3000' },
  issuers: [{ issuer: 'https://as.example.com' }],
  routes: [
    { match: { method: 'POST', path: '/payments' }, action: 'payments.create', params: { amount: { body: '/amount' }, currency: { body: '/currency' } } },
    { match: { path: '/files/**' }, action: 'files.read' },
    { match: { method: 'POST', path: '/wire' }, action: 'payments.create', action_class: 'irreversible_action' },
  ],
});
const routes = compileRoutes(config);
const ISS = 'https://as.example.com';
const SET: AuthorityEntry[] = [
  { type: 'mission_resource_access', resource: 'https://api.example.com', actions: ['payments.create'], constraints: { max_amount: { amount: '500.00', currency: 'USD' } } },
  { type: 'mission_resource_access', resource: 'https://api.example.com/files', resource_match: 'prefix', actions: ['files.*'] },
];

function mission(over: Partial<MissionView> = {}): MissionView {
  return { id: 'msn_1', issuer: ISS, state: 'active', version: 1, authorityHash: null, source: 'cached', authority: SET, expiresAt: null, suspendUntil: null, subject: null, subjectIssuer: null, clientId: null, ...over };
}

function ctx(over: Partial<RequestContext> & { body?: Buffer | null; contentType?: string }): RequestContext {
  const headers = over.contentType === undefined ? {} : { 'content-type': over.contentType };
  return {
    id: 'dec_x',
    started: 0,
    req: { headers, rawHeaders: Object.entries(headers).flat() } as unknown as IncomingMessage,
    res: {} as never,
    method: 'POST',
    path: '/payments',
    search: '',
    clientIp: '127.0.0.1',
    kind: 'route',
    route: routes[0]!,
    audience: 'https://api.example.com',
    credentials: null,
    token: null,
    proof: null,
    missionRef: null,
    mission: mission(),
    action: 'payments.create',
    params: null,
    parameterDigest: null,
    body: null,
    upstreamStatus: null,
    dpopNonce: null,
    stage: 'parameters',
    ...over,
  } as RequestContext;
}

const params = createParametersStage();
const authority = createAuthorityStage({ config });

function denial(f: () => void): Denial | null {
  try {
    f();
    return null;
  } catch (err) {
    if (isDenial(err)) return err;
    throw err;
  }
}

describe('parameters stage', () => {
  it('sets params and parameter_digest from the buffered body', () => {
    const c = ctx({ body: Buffer.from('{"amount":"100.00","currency":"USD","other":1}'), contentType: 'application/json' });
    params(c);
    expect(c.params).toEqual({ amount: '100.00', currency: 'USD' });
    expect(c.parameterDigest).toMatch(/^sha-256:[A-Za-z0-9_-]{43}$/);
  });

  it('a route without params gets {} and a null digest', () => {
    const c = ctx({ route: routes[1]!, path: '/files/a', action: 'files.read' });
    params(c);
    expect(c.params).toEqual({});
    expect(c.parameterDigest).toBeNull();
  });

  it('bad JSON is parameter_unparseable', () => {
    expect(denial(() => params(ctx({ body: Buffer.from('{'), contentType: 'application/json' })))?.code).toBe('parameter_unparseable');
  });

  describe('SPEC §4: a bound number a double cannot hold is decided as the exact decimal it writes (r7b F2)', () => {
    const PLAIN: AuthorityEntry[] = [{ type: 'mission_resource_access', resource: 'https://api.example.com', actions: ['payments.create'] }];
    /** Both stages on one request, as the pipeline runs them; the denial code or 'permit'. */
    const run = (amount: string, entries: AuthorityEntry[] = SET): string => {
      const c = ctx({ body: Buffer.from(`{"amount":${amount},"currency":"USD"}`), contentType: 'application/json', mission: mission({ authority: entries }) });
      const d = denial(() => {
        params(c);
        authority(c);
      });
      return d === null ? 'permit' : d.code;
    };

    it('over max_amount 500.00: 403 parameter_violation, never 400 parameter_unparseable', () => {
      for (const lit of ['500.0000000000000001', '500.0000000000000000001', '12345678901234567890', '1e400', '5.000000000000000001e2']) {
        expect(run(lit), lit).toBe('parameter_violation');
      }
    });

    it('within it: permitted, with the RFC 8785 digest of the double', () => {
      for (const lit of ['499.99999999999999999', '-0', '-0.0', '1e-400', '0.30000000000000000001']) expect(run(lit), lit).toBe('permit');
      const c = ctx({ body: Buffer.from('{"amount":499.99999999999999999,"currency":"USD"}'), contentType: 'application/json' });
      params(c);
      const plain = ctx({ body: Buffer.from('{"amount":500,"currency":"USD"}'), contentType: 'application/json' });
      params(plain);
      expect(c.parameterDigest).toBe(plain.parameterDigest);
    });

    it('a negative amount stays negative, even one a double reads as -0', () => {
      expect(run('-1e-400')).toBe('parameter_violation');
      expect(run('-1')).toBe('parameter_violation');
    });

    it('a number beyond the double range has no RFC 8785 form: decided first, then not permitted without its digest', () => {
      const c = ctx({ body: Buffer.from('{"amount":1e400,"currency":"USD"}'), contentType: 'application/json' });
      params(c);
      expect(c.parameterDigest).toBeNull();
      expect(run('1e400', PLAIN)).toBe('parameter_unparseable');
      expect(run('1e308', PLAIN)).toBe('permit');
    });

    it('anything that is not a valid number still fails closed', () => {
      for (const bad of ['NaN', 'Infinity', '01', '1.', '.5', '+1', '0x10', '1e']) expect(run(bad), bad).toBe('parameter_unparseable');
    });
  });

  it('leaves MCP requests alone', () => {
    const c = ctx({ kind: 'mcp', route: null, params: { a: 1 } });
    params(c);
    expect(c.params).toEqual({ a: 1 });
  });
});

describe('authority stage (SPEC §4, §5)', () => {
  it('permits within the Mission authority', () => {
    const c = ctx({ params: { amount: '100.00', currency: 'USD' } });
    expect(denial(() => authority(c))).toBeNull();
  });

  it('a constraint failure is parameter_violation naming the constraint, not its value', () => {
    const d = denial(() => authority(ctx({ params: { amount: '900.00', currency: 'USD' } })));
    expect(d?.code).toBe('parameter_violation');
    expect(d?.spec.status).toBe(403);
    expect(d?.message).toContain('max_amount');
    expect(d?.message).not.toContain('900');
  });

  it('prefix entries match public_base_url origin + normalized path', () => {
    expect(denial(() => authority(ctx({ route: routes[1]!, path: '/files/a/b', action: 'files.read', params: {} })))).toBeNull();
    expect(denial(() => authority(ctx({ route: routes[1]!, path: '/filesx', action: 'files.read', params: {} })))?.code).toBe('out_of_authority');
  });

  it('the token side narrows the Status side', () => {
    const token = { claims: { authorization_details: [{ type: 'mission_resource_access', resource: 'https://api.example.com', actions: ['invoices.read'] }] } } as unknown as RequestContext['token'];
    expect(denial(() => authority(ctx({ token, params: { amount: '1', currency: 'USD' } })))?.code).toBe('out_of_authority');
  });

  it('authorization_details that is not an array denies', () => {
    const token = { claims: { authorization_details: { type: 'mission_resource_access' } } } as unknown as RequestContext['token'];
    expect(denial(() => authority(ctx({ token, params: { amount: '1', currency: 'USD' } })))?.code).toBe('out_of_authority');
  });

  it('no action denies', () => {
    expect(denial(() => authority(ctx({ action: null })))?.code).toBe('out_of_authority');
  });

  describe('mission-contracts §4 high-consequence classes: fresh state, single-use (DPoP-bound) permit', () => {
    const proof = { jkt: 'k', jti: 'p1', iat: 0 };
    const wire = (over: Partial<RequestContext>): RequestContext => ctx({ route: routes[2]!, path: '/wire', params: { amount: '1', currency: 'USD' }, proof, ...over });
    it('fresh state and a proof: decided normally', () => {
      expect(denial(() => authority(wire({ mission: mission({ source: 'fresh' }) })))).toBeNull();
      expect(denial(() => authority(wire({ mission: mission({ source: 'fresh' }), params: { amount: '501', currency: 'USD' } })))?.code).toBe('parameter_violation');
    });
    it('cached or event-fed state is not enough', () => {
      for (const source of ['cached', 'event'] as const) {
        const d = denial(() => authority(wire({ mission: mission({ source }) })));
        expect(d?.code).toBe('state_unavailable');
        expect(d?.retryAfter).toBe(1);
      }
      expect(denial(() => authority(wire({ mission: null })))?.code).toBe('state_unavailable');
    });
    it('no DPoP proof (Bearer): refused', () => {
      expect(denial(() => authority(wire({ mission: mission({ source: 'fresh' }), proof: null })))?.code).toBe('dpop_invalid');
    });
    it('other classes accept cached state', () => {
      expect(denial(() => authority(ctx({ params: { amount: '1', currency: 'USD' }, proof: null })))).toBeNull();
    });
  });

  describe("mission-contracts §7 authority_hash: the token's against the Status's own, never recomputed from a narrowed set", () => {
    const OTHER: AuthorityEntry = { type: 'mission_resource_access', resource: 'https://other.example', actions: ['x.read'] };
    // The Mission's FULL set has an entry for another resource; the Status carries this audience's only.
    const full = authorityHash(ISS, [...SET, OTHER]);
    const ref = (h: string | null): RequestContext['missionRef'] => ({ form: 'claim', issuer: ISS, id: 'msn_1', s256: null, authorityHash: h });
    const pay = (over: Partial<RequestContext>) => denial(() => authority(ctx({ params: { amount: '1', currency: 'USD' }, ...over })));

    it('a Status set filtered to this audience, declaring no authority_hash, is not compared (r7b F3)', () => {
      expect(authorityHash(ISS, SET)).not.toBe(full);
      expect(authorityHashMismatch({ missionRef: ref(full), mission: mission() })).toBeNull();
      expect(pay({ missionRef: ref(full) })).toBeNull();
    });

    it('nor is it compared when the Status declares the same hash', () => {
      expect(authorityHashMismatch({ missionRef: ref(full), mission: mission({ authorityHash: full }) })).toBeNull();
      expect(pay({ missionRef: ref(full), mission: mission({ authorityHash: full }) })).toBeNull();
    });

    it("a Status declaring another hash than the token's: out_of_authority, whatever its set", () => {
      for (const authority of [SET, [...SET, OTHER], null]) {
        expect(authorityHashMismatch({ missionRef: ref(full), mission: mission({ authorityHash: 'sha-256:narrowed', authority }) })).not.toBeNull();
      }
      // Even when the Status set happens to hash to the token's value: the declared hash is the Mission's.
      const own = authorityHash(ISS, SET);
      const d = pay({ missionRef: ref(own), mission: mission({ authorityHash: full }) });
      expect(d?.code).toBe('out_of_authority');
      expect(d?.message).toContain('authority_hash');
    });

    it('a Status that declares no hash still narrows through its entries (authority only narrows)', () => {
      const d = pay({ missionRef: ref(full), mission: mission({ authority: [OTHER] }) });
      expect(d?.code).toBe('out_of_authority');
    });

    it('no token hash, or no Mission state: nothing to compare', () => {
      expect(authorityHashMismatch({ missionRef: ref(null), mission: mission() })).toBeNull();
      expect(authorityHashMismatch({ missionRef: ref(full), mission: null })).toBeNull();
    });
  });
});
