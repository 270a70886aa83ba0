import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CompiledRoute } from '../../src/config/compile.js';
import { MissionHolds, type Holder } from '../../src/mission/holds.js';
import { MAX_QUERIES_PER_ASKER, MissionStates } from '../../src/mission/state.js';
import type { MissionChange } from '../../src/mission/types.js';
import type { MissionReference, RequestContext } from '../../src/pipeline/context.js';
import { eventually } from '../helpers/gateway.js';
import { CLIENT_ID, clientKeyFile, context, counter, denialOf, ISSUER, lifecycleSet, LocalKeys, logger, makeConfig, MISSION_ID, newMetrics, RecordingBus, RESOURCE, signingKey, StatusServer, token, type SigningKey } from './helpers.js';

const REF: MissionReference = { form: 'claim', issuer: ISSUER, id: MISSION_ID, s256: null, authorityHash: null };
const iso = (ms: number): string => new Date(ms).toISOString();

let t: number;
const now = (): number => t;
let server: StatusServer;
let states: MissionStates;
let metrics: ReturnType<typeof newMetrics>;
let bus: RecordingBus;
let holds: MissionHolds;
let authKey: SigningKey;

let ck: ReturnType<typeof clientKeyFile>;

async function setup(mission: Record<string, unknown> = {}): Promise<void> {
  t = Date.now();
  ck = clientKeyFile();
  authKey = signingKey();
  const keys = new LocalKeys().add(ISSUER, authKey);
  server = await new StatusServer(ISSUER, authKey, ck.publicKey, now).start();
  server.missions.set(MISSION_ID, { state: 'active', version: 1, expires_at: '2099-12-31T23:59:59Z', fresh_until: null, subject: { sub: 'user_1' }, client_id: 'agent_1' });
  metrics = newMetrics();
  bus = new RecordingBus();
  const config = makeConfig({}, { client: { client_id: CLIENT_ID, private_key_file: ck.file }, authorities: [{ issuer: ISSUER, status_endpoint: server.url }], ...mission });
  holds = new MissionHolds({ logger, counted: () => {}, now });
  states = new MissionStates({ config, keys, metrics, logger, bus, holds, now });
}

afterEach(async () => {
  await states?.close();
  await server?.close();
});

function ctxFor(opts: { ref?: MissionReference; exp?: number; route?: Partial<CompiledRoute>; subject?: string } = {}): RequestContext {
  const ctx = context({ token: token({}, { exp: opts.exp ?? Math.floor(t / 1000) + 3600, subject: opts.subject ?? 'user_1' }), ...(opts.route ? { route: opts.route } : {}) });
  ctx.missionRef = opts.ref ?? REF;
  return ctx;
}

/** Runs the stage; returns the denial code (or null) and whether it completed synchronously. */
async function check(ctx = ctxFor()): Promise<{ code: string | null; sync: boolean; ctx: RequestContext; retryAfter?: number | undefined; extra?: Record<string, unknown> | undefined }> {
  let ret: void | Promise<void>;
  try {
    ret = states.stage()(ctx);
  } catch (e) {
    const d = await denialOf(() => {
      throw e;
    });
    return { code: d!.code, sync: true, ctx, retryAfter: d!.retryAfter, extra: d!.extra };
  }
  const sync = ret === undefined;
  const d = await denialOf(() => ret);
  return { code: d?.code ?? null, sync, ctx, retryAfter: d?.retryAfter, extra: d?.extra };
}

/** A change as a replica publishes it: with the SET it was read from, signed by `key` (the issuer's by default). */
async function signedChange(opts: { state: string; version: number; id?: string }, key: SigningKey = authKey): Promise<MissionChange> {
  const set = await lifecycleSet(key, opts);
  return { ...change({ state: opts.state, version: opts.version, ...(opts.id === undefined ? {} : { id: opts.id }) }), set };
}

const change = (over: Partial<MissionChange>): MissionChange => ({ issuer: ISSUER, id: MISSION_ID, state: 'revoked', version: 2, suspendUntil: null, expiresAt: null, refetch: false, jti: `set_${Math.random()}`, set: null, ...over });

describe('Missions a client names itself (header references) and the Status queries they cost', () => {
  beforeEach(() => setup({ accept_header_references: true }));

  it(`one client has at most MAX_QUERIES_PER_ASKER queries in flight; past them 503 at once, while another client's query goes ahead (r14d 3)`, async () => {
    server.delayMs = 300;
    const named = (i: number, subject = 'user_1'): RequestContext => ctxFor({ ref: { form: 'reference_header', issuer: ISSUER, id: `msn_flood_${i}`, s256: null, authorityHash: null }, subject });
    const flood = Array.from({ length: MAX_QUERIES_PER_ASKER + 4 }, (_, i) => check(named(i)));
    const other = check(named(999, 'user_2'));
    const results = await Promise.all(flood);
    // Unknown Missions: the first MAX_QUERIES_PER_ASKER were asked (403), the rest not (503).
    expect(results.filter((r) => r.code === 'state_unavailable').map((r) => [r.sync, r.retryAfter])).toEqual(Array(4).fill([false, 1]));
    expect(results.filter((r) => r.code === 'mission_terminated')).toHaveLength(MAX_QUERIES_PER_ASKER);
    expect((await other).code).toBe('mission_terminated');
    expect(server.requests).toHaveLength(MAX_QUERIES_PER_ASKER + 1);
    expect(await counter(metrics, 'mission_gateway_mission_status_requests_total', { outcome: 'client_limit' })).toBe(4);
    // Answered: room again.
    expect((await check(named(1000))).code).toBe('mission_terminated');
  });

  it('lookup (MCP _meta references) counts against the asker it is given', async () => {
    server.delayMs = 200;
    const ref = (i: number): MissionReference => ({ form: 'mcp_meta', issuer: ISSUER, id: `msn_meta_${i}`, s256: null, authorityHash: null });
    const settled = await Promise.allSettled(Array.from({ length: MAX_QUERIES_PER_ASKER + 2 }, (_, i) => states.lookup(ref(i), RESOURCE, { asker: 'agent' })));
    expect(settled.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(['state_unavailable', 'state_unavailable']);
  });

  it("the Mission the token names is not counted: its queries are the token's own, one Mission", async () => {
    server.delayMs = 100;
    const results = await Promise.all(Array.from({ length: MAX_QUERIES_PER_ASKER + 4 }, () => check(ctxFor())));
    expect(results.every((r) => r.code === null)).toBe(true);
    expect(server.requests).toHaveLength(1);
  });
});

describe('SPEC section 3: Mission state from Status, cached', () => {
  beforeEach(() => setup());

  it('a miss asks the authority (source fresh); a hit is served synchronously (source cached)', async () => {
    const first = await check();
    expect(first).toMatchObject({ code: null, sync: false });
    expect(first.ctx.mission).toMatchObject({ id: MISSION_ID, issuer: ISSUER, state: 'active', version: 1, source: 'fresh', subject: 'user_1', clientId: 'agent_1' });
    const second = await check();
    expect(second).toMatchObject({ code: null, sync: true });
    expect(second.ctx.mission?.source).toBe('cached');
    expect(server.requests.length).toBe(1);
    expect(await counter(metrics, 'mission_gateway_mission_cache_total', { result: 'miss' })).toBe(1);
    expect(await counter(metrics, 'mission_gateway_mission_cache_total', { result: 'hit' })).toBe(1);
  });

  it('entries are keyed by audience too', async () => {
    await check();
    const other = ctxFor();
    other.audience = 'https://api.example.com/mcp';
    expect(await check(other)).toMatchObject({ code: null, sync: false });
    expect(server.requests.map((r) => r.form.get('audience'))).toEqual([RESOURCE, 'https://api.example.com/mcp']);
  });

  const mcpCtx = (): RequestContext => {
    const c = ctxFor();
    c.audience = 'https://api.example.com/mcp';
    return c;
  };

  it.each([
    ['revoked (a terminal state)', 'revoked', 'mission_terminated'],
    ['suspended', 'suspended', 'mission_suspended'],
  ])("a Status answer for one audience later than another audience's entry: that entry is asked again, not served (%s; r21c 1)", async (_what, state, code) => {
    expect((await check(mcpCtx())).code).toBeNull(); // MCP entry: active v1
    Object.assign(server.missions.get(MISSION_ID)!, { state, version: 2 });
    expect((await check()).code).toBe(code); // the API's entry asked: v2
    const again = await check(mcpCtx());
    expect(again).toMatchObject({ code, sync: false });
    expect(again.ctx.mission).toMatchObject({ state, version: 2, source: 'fresh' });
    expect(server.requests).toHaveLength(3);
  });

  it('and the other way: a resume learned for one audience ends the suspension cached for another (r21c 1)', async () => {
    Object.assign(server.missions.get(MISSION_ID)!, { state: 'suspended', version: 2 });
    expect((await check(mcpCtx())).code).toBe('mission_suspended');
    Object.assign(server.missions.get(MISSION_ID)!, { state: 'active', version: 3 });
    expect((await check()).code).toBeNull();
    expect((await check(mcpCtx())).code).toBeNull();
    expect(server.requests).toHaveLength(3);
  });

  it('lifetime ends at fresh_until', async () => {
    server.missions.get(MISSION_ID)!.fresh_until = iso(t + 10_000);
    await check();
    t += 9_000;
    expect((await check()).sync).toBe(true);
    t += 1_000;
    expect((await check()).sync).toBe(false);
    expect(server.requests.length).toBe(2);
    expect(await counter(metrics, 'mission_gateway_mission_cache_total', { result: 'stale' })).toBe(1);
  });

  it('lifetime ends at mission.max_stale_s, whatever fresh_until says', async () => {
    server.missions.get(MISSION_ID)!.fresh_until = iso(t + 3_600_000);
    await check();
    t += 59_000;
    expect((await check()).sync).toBe(true);
    t += 1_000;
    expect((await check()).sync).toBe(false);
  });

  it("lifetime ends at the issuer's advertised mission_max_stale_seconds (metadata discovery), below mission.max_stale_s", async () => {
    await states.close();
    const keys = new LocalKeys().add(ISSUER, authKey);
    keys.meta.set(ISSUER, { issuer: ISSUER, mission_status_endpoint: server.url, mission_max_stale_seconds: 10 });
    const config = makeConfig({}, { client: { client_id: CLIENT_ID, private_key_file: ck.file }, authorities: [{ issuer: ISSUER }] });
    states = new MissionStates({ config, keys, metrics, logger, bus, holds, now });
    expect((await check()).code).toBeNull();
    server.missions.get(MISSION_ID)!.state = 'revoked';
    t += 9_000;
    expect(await check()).toMatchObject({ code: null, sync: true });
    t += 1_000;
    expect(await check()).toMatchObject({ code: 'mission_terminated', sync: false });
  });

  it("lifetime ends when the token stops being accepted: its exp plus token.clock_skew_s (30 s)", async () => {
    await check(ctxFor({ exp: Math.floor(t / 1000) + 5 }));
    t += 5_000 + 29_000;
    expect((await check()).sync).toBe(true);
    t += 1_000;
    expect((await check()).sync).toBe(false);
  });

  it('a token past its exp, still accepted inside the skew, is served from the cache its query filled (r21c 4)', async () => {
    const late = ctxFor({ exp: Math.floor(t / 1000) - 10 });
    expect(await check(late)).toMatchObject({ code: null, sync: false });
    for (let i = 0; i < 5; i++) expect(await check(ctxFor({ exp: Math.floor(t / 1000) - 10 }))).toMatchObject({ code: null, sync: true });
    expect(server.requests.length).toBe(1);
  });

  it('a fresh_until in the past serves the request but caches nothing', async () => {
    server.missions.get(MISSION_ID)!.fresh_until = iso(t - 1_000);
    expect((await check()).code).toBeNull();
    expect((await check()).sync).toBe(false);
    expect(server.requests.length).toBe(2);
  });

  it('a non-active state is cached no longer than an active one (no extension, no skew)', async () => {
    server.missions.set(MISSION_ID, { state: 'revoked', version: 3, fresh_until: iso(t + 10_000) });
    expect((await check()).code).toBe('mission_terminated');
    t += 10_000;
    server.missions.set(MISSION_ID, { state: 'revoked', version: 3, fresh_until: iso(t + 10_000) });
    expect((await check()).sync).toBe(false);
  });

  it('high-consequence routes always ask the authority, never the cache', async () => {
    const route = { actionClass: 'irreversible_action' } as Partial<CompiledRoute>;
    await check();
    expect((await check(ctxFor({ route }))).sync).toBe(false);
    expect((await check(ctxFor({ route }))).sync).toBe(false);
    expect(server.requests.length).toBe(3);
    expect((await check(ctxFor({ route: { actionClass: 'consequential_read' } as Partial<CompiledRoute> }))).sync).toBe(true);
  });

  it('the cache is bounded (mission.cache_max_entries) and evictions are counted', async () => {
    await states.close();
    await server.close();
    await setup({ cache_max_entries: 100 });
    for (let i = 0; i < 101; i++) {
      server.missions.set(`msn_${i}`, { state: 'active', version: 1 });
      expect((await check(ctxFor({ ref: { ...REF, id: `msn_${i}` } }))).code).toBeNull();
    }
    expect(await counter(metrics, 'mission_gateway_cache_evictions_total', { cache: 'mission' })).toBe(1);
    expect((await check(ctxFor({ ref: { ...REF, id: 'msn_0' } }))).sync).toBe(false);
    expect((await check(ctxFor({ ref: { ...REF, id: 'msn_100' } }))).sync).toBe(true);
  });
});

describe('SPEC section 5: denials from state', () => {
  beforeEach(() => setup());

  it.each([['revoked'], ['expired'], ['completed'], ['superseded'], ['cascaded']])('%s -> 403 mission_terminated with mission_status', async (state) => {
    server.missions.set(MISSION_ID, { state, version: 2 });
    const r = await check();
    expect(r.code).toBe('mission_terminated');
    expect(r.extra).toEqual({ mission_status: state });
    expect(r.ctx.mission?.state).toBe(state);
  });

  it('a state this gateway does not know -> mission_status unknown', async () => {
    server.missions.set(MISSION_ID, { state: 'paused_by_robot', version: 2 });
    expect((await check()).extra).toEqual({ mission_status: 'unknown' });
  });

  it('Status 404 -> mission_terminated, mission_status unknown', async () => {
    server.missions.clear();
    const r = await check();
    expect(r).toMatchObject({ code: 'mission_terminated', extra: { mission_status: 'unknown' } });
  });

  it('suspended -> mission_suspended with Retry-After from suspend_until', async () => {
    server.missions.set(MISSION_ID, { state: 'suspended', version: 2, suspend_until: iso(t + 120_000) });
    const r = await check();
    expect(r.code).toBe('mission_suspended');
    expect(r.retryAfter).toBe(120);
  });

  it('suspended past expires_at -> mission_terminated expired; before it, Retry-After points no later than expires_at (r21c 2)', async () => {
    server.missions.set(MISSION_ID, { state: 'suspended', version: 2, suspend_until: iso(t + 600_000), expires_at: iso(t + 60_000) });
    expect(await check()).toMatchObject({ code: 'mission_suspended', retryAfter: 60 });
    t += 60_000;
    expect(await check()).toMatchObject({ code: 'mission_terminated', extra: { mission_status: 'expired' } });
  });

  it('active but past expires_at -> mission_terminated expired', async () => {
    server.missions.set(MISSION_ID, { state: 'active', version: 2, expires_at: iso(t - 1000) });
    expect(await check()).toMatchObject({ code: 'mission_terminated', extra: { mission_status: 'expired' } });
  });

  it('MAS mode: a header-named Mission must belong to the token subject and client', async () => {
    const headerRef: MissionReference = { ...REF, form: 'reference_header' };
    expect((await check(ctxFor({ ref: headerRef }))).code).toBeNull();
    expect((await check(ctxFor({ ref: headerRef, subject: 'someone_else' }))).code).toBe('mission_reference_conflict');
    server.missions.set('msn_nosub', { state: 'active', version: 1 });
    expect((await check(ctxFor({ ref: { ...headerRef, id: 'msn_nosub' } }))).code).toBe('mission_reference_conflict');
  });
});

describe('MAS mode joins across issuers and states (r19d 1, 4)', () => {
  const OTHER = 'https://other-as.example.com';
  const headerRef: MissionReference = { ...REF, form: 'reference_header' };
  const from = (issuer: string, subject = 'user_1'): RequestContext => {
    const ctx = context({ token: token({ iss: issuer }, { issuer, subject, exp: Math.floor(t / 1000) + 3600 }) });
    ctx.missionRef = headerRef;
    return ctx;
  };

  it("with one token issuer, a bare sub is that issuer's; a subject.iss naming another issuer does not join", async () => {
    await setup({ accept_header_references: true });
    expect((await check(from(ISSUER))).code).toBeNull();
    server.missions.set(MISSION_ID, { state: 'active', version: 2, subject: { sub: 'user_1', iss: OTHER }, client_id: 'agent_1' });
    await states.close();
    await setup({ accept_header_references: true });
    server.missions.set(MISSION_ID, { state: 'active', version: 2, subject: { sub: 'user_1', iss: OTHER }, client_id: 'agent_1' });
    expect((await check(from(ISSUER))).code).toBe('mission_reference_conflict');
  });

  it("with several token issuers, another issuer's same-named subject does not join; subject.iss decides when given", async () => {
    await setup({ accept_header_references: true });
    const config = makeConfig({ issuers: [{ issuer: ISSUER, algorithms: ['ES256'] }, { issuer: OTHER, algorithms: ['ES256'] }] }, { client: { client_id: CLIENT_ID, private_key_file: ck.file }, authorities: [{ issuer: ISSUER, status_endpoint: server.url }], accept_header_references: true });
    await states.close();
    states = new MissionStates({ config, keys: new LocalKeys().add(ISSUER, authKey), metrics, logger, bus, holds, now });
    // The Mission's issuer is the token's: its subject.
    expect((await check(from(ISSUER))).code).toBeNull();
    // Another trusted issuer's "user_1" / "agent_1" is someone else.
    expect((await check(from(OTHER))).code).toBe('mission_reference_conflict');
    // The authority says whose subject it is: that issuer's token joins, the Mission issuer's does not.
    server.missions.set('msn_other_sub', { state: 'active', version: 1, subject: { sub: 'user_1', iss: OTHER }, client_id: 'agent_1' });
    const named = (issuer: string): RequestContext => Object.assign(from(issuer), { missionRef: { ...headerRef, id: 'msn_other_sub' } });
    expect((await check(named(OTHER))).code).toBeNull();
    expect((await check(named(ISSUER))).code).toBe('mission_reference_conflict');
  });

  it("another subject's Mission is a conflict whatever its state; one Status does not know stays unknown", async () => {
    await setup({ accept_header_references: true });
    for (const state of ['suspended', 'revoked', 'completed']) {
      server.missions.set(`msn_${state}`, { state, version: 2, subject: { sub: 'user_2' }, client_id: 'agent_1' });
      const ctx = Object.assign(from(ISSUER), { missionRef: { ...headerRef, id: `msn_${state}` } });
      expect((await check(ctx)).code).toBe('mission_reference_conflict');
      // The owner learns the state.
      const own = Object.assign(from(ISSUER, 'user_2'), { missionRef: { ...headerRef, id: `msn_${state}` } });
      expect((await check(own)).code).toBe(state === 'suspended' ? 'mission_suspended' : 'mission_terminated');
    }
    const unknown = Object.assign(from(ISSUER), { missionRef: { ...headerRef, id: 'msn_nowhere' } });
    expect(await check(unknown)).toMatchObject({ code: 'mission_terminated', extra: { mission_status: 'unknown' } });
  });

  it("after a lifecycle event, the owner's issuer (subject.iss) is kept: another issuer's same-named subject is still a conflict (r21b 3)", async () => {
    await setup({ accept_header_references: true });
    server.missions.set(MISSION_ID, { state: 'active', version: 1, subject: { sub: 'user_1', iss: OTHER }, client_id: 'agent_1' });
    expect((await check(from(ISSUER))).code).toBe('mission_reference_conflict');
    states.applyChange(change({ state: 'suspended', version: 2 }));
    expect((await check(from(ISSUER))).code).toBe('mission_reference_conflict');
  });

  it('a Status answer naming only the subject, or only the client, still joins before the state is told (r21b 1)', async () => {
    await setup({ accept_header_references: true });
    server.missions.set('msn_sub_only', { state: 'suspended', version: 2, subject: { sub: 'user_2' } });
    server.missions.set('msn_client_only', { state: 'revoked', version: 2, client_id: 'agent_2' });
    for (const id of ['msn_sub_only', 'msn_client_only']) {
      const ctx = Object.assign(from(ISSUER), { missionRef: { ...headerRef, id } });
      expect((await check(ctx)).code, id).toBe('mission_reference_conflict');
    }
  });
});

describe('MAS mode: the owner of a Mission whose end came by event is told its state (r19e 1)', () => {
  it('revoked or suspended by a lifecycle event: mission_terminated / mission_suspended for its owner, not a conflict', async () => {
    await setup({ accept_header_references: true });
    const headerRef: MissionReference = { ...REF, form: 'reference_header' };
    expect((await check(ctxFor({ ref: headerRef }))).code).toBeNull();
    states.applyChange(change({ state: 'suspended', version: 2 }));
    expect((await check(ctxFor({ ref: headerRef }))).code).toBe('mission_suspended');
    states.applyChange(change({ state: 'revoked', version: 3 }));
    expect(await check(ctxFor({ ref: headerRef }))).toMatchObject({ code: 'mission_terminated', extra: { mission_status: 'revoked' } });
  });

  it('another subject naming it is told mission_reference_conflict when this gateway knows its owner: read before the event, or after it (r19e 4)', async () => {
    await setup({ accept_header_references: true });
    const headerRef: MissionReference = { ...REF, form: 'reference_header' };
    expect((await check(ctxFor({ ref: headerRef }))).code).toBeNull();
    states.applyChange(change({ state: 'revoked', version: 2 }));
    expect((await check(ctxFor({ ref: headerRef, subject: 'mallory' }))).code).toBe('mission_reference_conflict');
    expect((await check(ctxFor({ ref: headerRef }))).code).toBe('mission_terminated');

    // Never read here: a suspension is confirmed by Status first, whose answer names the owner.
    server.missions.set('msn_other', { state: 'suspended', version: 2, subject: { sub: 'user_1' }, client_id: 'agent_1' });
    states.applyChange(change({ id: 'msn_other', state: 'suspended', version: 2 }));
    const other: MissionReference = { ...headerRef, id: 'msn_other' };
    expect((await check(ctxFor({ ref: other, subject: 'mallory' }))).code).toBe('mission_reference_conflict');
    expect((await check(ctxFor({ ref: other }))).code).toBe('mission_suspended');
    expect((await check(ctxFor({ ref: other, subject: 'mallory' }))).code).toBe('mission_reference_conflict');
  });
});

describe('an AAuth Status answer speaks for its approver only (r19d 2)', () => {
  beforeEach(() => setup());

  it("an answer naming another issuer's Mission is not a verified answer", async () => {
    const aauth: MissionReference = { form: 'claim', issuer: ISSUER, id: null, s256: 'abc', authorityHash: null };
    server.missions.set('s256:abc', { state: 'active', version: 1, id: 'msn_A', issuer: 'https://other-as.example.com' });
    expect((await check(ctxFor({ ref: aauth }))).code).toBe('state_unavailable');
    server.missions.set('s256:abc', { state: 'active', version: 1, id: 'msn_A' });
    const ok = await check(ctxFor({ ref: aauth }));
    expect(ok.code).toBeNull();
    expect(ok.ctx.mission).toMatchObject({ id: 'msn_A', issuer: ISSUER });
  });
});

describe('SPEC section 3: concurrent misses share one Status request', () => {
  beforeEach(() => setup());

  it('100 concurrent misses -> exactly one Status request (real HTTP server)', async () => {
    server.delayMs = 50;
    const results = await Promise.all(Array.from({ length: 100 }, () => check()));
    expect(results.every((r) => r.code === null)).toBe(true);
    expect(server.requests.length).toBe(1);
  });
});

describe('SPEC section 3: fail closed when the authority is unreachable', () => {
  beforeEach(() => setup({ status_timeout_s: 0.3 }));

  it('down and nothing fresh -> 503 mission_state_unavailable with Retry-After; recovers when it comes back', async () => {
    server.down = true;
    const r = await check();
    expect(r.code).toBe('state_unavailable');
    expect(r.retryAfter).toBeGreaterThan(0);
    expect(await counter(metrics, 'mission_gateway_mission_status_requests_total', { outcome: 'error' })).toBe(1);
    server.down = false;
    expect((await check()).code).toBeNull();
  });

  it('slower than status_timeout_s -> 503', async () => {
    server.delayMs = 800;
    expect((await check()).code).toBe('state_unavailable');
    expect(await counter(metrics, 'mission_gateway_mission_status_requests_total', { outcome: 'timeout' })).toBe(1);
  });

  it('a response failing verification -> 503 (never fail open)', async () => {
    server.tamper = (c) => (c['nonce'] = 'replayed');
    expect((await check()).code).toBe('state_unavailable');
  });

  it('a cached state past its lifetime is not used when the authority is down', async () => {
    await check();
    t += 61_000;
    server.down = true;
    expect((await check()).code).toBe('state_unavailable');
  });

  it("429 Retry-After is honoured: no query until it passes, then the authority is asked again", async () => {
    server.respond = async () => ({ status: 429, headers: { 'retry-after': '10' }, body: '' });
    expect(await check()).toMatchObject({ code: 'state_unavailable', retryAfter: 10 });
    server.respond = null;
    t += 5_000;
    expect(await check()).toMatchObject({ code: 'state_unavailable', retryAfter: 5 });
    expect(server.requests.length).toBe(1);
    t += 5_000;
    expect((await check()).code).toBeNull();
    expect(server.requests.length).toBe(2);
  });
});

describe('draft-mcguinness-oauth-mission-signals: applying lifecycle changes', () => {
  beforeEach(() => setup());

  it('a revoke with a higher version denies the next request synchronously (source event)', async () => {
    await check();
    expect(states.applyChange(change({ state: 'revoked', version: 2 }))).toBe('accepted');
    const r = await check();
    expect(r).toMatchObject({ code: 'mission_terminated', sync: true, extra: { mission_status: 'revoked' } });
    expect(r.ctx.mission).toMatchObject({ state: 'revoked', version: 2, source: 'event' });
    expect(bus.published.length).toBe(1);
  });

  it('a duplicate jti is accepted once; a version not above the last applied is stale', async () => {
    await check();
    const c = change({ state: 'suspended', version: 2 });
    expect(states.applyChange(c)).toBe('accepted');
    expect(states.applyChange(c)).toBe('duplicate');
    expect(states.applyChange(change({ state: 'active', version: 2 }))).toBe('stale');
    expect(states.applyChange(change({ state: 'active', version: 1 }))).toBe('stale');
    expect((await check()).code).toBe('mission_suspended');
  });

  it('suspend then resume (higher version) allows again without asking the authority', async () => {
    await check();
    states.applyChange(change({ state: 'suspended', version: 2, suspendUntil: Math.floor(t / 1000) + 30 }));
    expect(await check()).toMatchObject({ code: 'mission_suspended', retryAfter: 30 });
    states.applyChange(change({ state: 'active', version: 3 }));
    expect(await check()).toMatchObject({ code: null, sync: true });
    expect(server.requests.length).toBe(1);
  });

  it('an event never extends a lifetime: resume does not keep an expired entry alive', async () => {
    server.missions.get(MISSION_ID)!.fresh_until = iso(t + 10_000);
    await check();
    states.applyChange(change({ state: 'active', version: 2 }));
    t += 10_000;
    expect((await check()).sync).toBe(false);
  });

  it('a version gap refetches Status', async () => {
    await check();
    server.missions.get(MISSION_ID)!.version = 5;
    expect(states.applyChange(change({ state: 'active', version: 5 }))).toBe('gap');
    const r = await check();
    expect(r).toMatchObject({ code: null, sync: false });
    expect(server.requests.length).toBe(2);
  });

  it('authority_changed refetches Status (and the new authority is used)', async () => {
    await check();
    server.missions.get(MISSION_ID)!.version = 2;
    server.missions.get(MISSION_ID)!.authorization_details = [{ type: 'mission_resource_access', resource: RESOURCE, actions: [] }];
    expect(states.applyChange(change({ state: 'active', version: 2, refetch: true }))).toBe('gap');
    const r = await check();
    expect(r.sync).toBe(false);
    expect(r.ctx.mission?.authority).toEqual([{ type: 'mission_resource_access', resource: RESOURCE, actions: [] }]);
  });

  it('a non-active state for an uncached Mission is remembered for max_stale_s', async () => {
    expect(states.applyChange(change({ state: 'revoked', version: 4 }))).toBe('accepted'); // remembered, not ignored (r21e 2)
    expect(await check()).toMatchObject({ code: 'mission_terminated', sync: true });
    expect(server.requests.length).toBe(0);
    t += 59_000;
    expect((await check()).sync).toBe(true);
    t += 1_000;
    server.missions.get(MISSION_ID)!.version = 4;
    server.missions.get(MISSION_ID)!.state = 'revoked';
    expect(await check()).toMatchObject({ code: 'mission_terminated', sync: false });
  });

  it('a lagging Status answer (lower version) never regresses an event-applied state', async () => {
    states.applyChange(change({ state: 'revoked', version: 4 }));
    t += 61_000;
    // The authority replica still says active at version 1.
    const r = await check();
    expect(r.code).toBe('mission_terminated');
    expect(r.ctx.mission).toMatchObject({ state: 'revoked', version: 4, source: 'event' });
  });

  it('a suspension that is the first event held for an uncached Mission is confirmed by one Status answer: a newer answer wins, an older or equal one does not (mission-contracts section 3)', async () => {
    // An old SET replayed to a fresh replica: suspended at 2, while the Mission was resumed at 3.
    server.missions.get(MISSION_ID)!.version = 3;
    expect(states.applyChange(change({ state: 'suspended', version: 2 }))).toBe('accepted');
    const r = await check();
    expect(r).toMatchObject({ code: null, sync: false });
    expect(r.ctx.mission).toMatchObject({ state: 'active', version: 3 });
    expect(server.requests.length).toBe(1);
    // A genuine suspension the authority's answer does not supersede stands, and is then served from memory.
    await setup();
    server.missions.get(MISSION_ID)!.version = 2;
    states.applyChange(change({ state: 'suspended', version: 2 }));
    expect(await check()).toMatchObject({ code: 'mission_suspended', sync: false });
    expect(await check()).toMatchObject({ code: 'mission_suspended', sync: true });
    expect(server.requests.length).toBe(1);
  });

  it('a suspension learned by event for an uncached Mission, with Status down: the event\'s denial, not 503 (r21b 2)', async () => {
    states.applyChange(change({ state: 'suspended', version: 2 }));
    server.respond = async () => ({ status: 503, headers: { 'retry-after': '5' }, body: '' });
    const r = await check();
    expect(r.code).toBe('mission_suspended');
    expect(server.requests.length).toBe(1); // it was asked, to confirm, and could not say
  });

  it('an active event for an uncached Mission changes nothing', async () => {
    expect(states.applyChange(change({ state: 'active', version: 9 }))).toBe('uncached');
    expect((await check()).sync).toBe(false);
  });

  it('changes from the bus (other replicas) are applied and not republished', async () => {
    await check();
    bus.deliver(await signedChange({ state: 'revoked', version: 2 }));
    await eventually(async () => (await counter(metrics, 'mission_gateway_events_total', { result: 'replicated_accepted' })) === 1);
    expect((await check()).code).toBe('mission_terminated');
    expect(bus.published.length).toBe(0);
  });

  it('a bus message applies only what its SET says, verified here: forged or unsigned messages change nothing', async () => {
    await check();
    // Claims active at version 50 while its SET says revoked at 2: the SET wins.
    bus.deliver({ ...(await signedChange({ state: 'revoked', version: 2 })), state: 'active', version: 50 });
    await eventually(async () => (await counter(metrics, 'mission_gateway_events_total', { result: 'replicated_accepted' })) === 1);
    const r = await check();
    expect(r.code).toBe('mission_terminated');
    expect(r.ctx.mission).toMatchObject({ state: 'revoked', version: 2 });
    // No SET, a SET signed by another key, a SET that is not one: dropped and counted, never applied.
    await setup();
    await check();
    bus.deliver(change({ state: 'revoked', version: 2 }));
    bus.deliver(await signedChange({ state: 'suspended', version: 3 }, signingKey(authKey.kid)));
    bus.deliver({ ...change({ state: 'revoked', version: 4 }), set: 'not.a.set' });
    await eventually(async () => (await counter(metrics, 'mission_gateway_events_total', { result: 'replicated_unverified' })) === 3);
    expect((await check()).code).toBeNull();
  });

  it('an event for an AAuth-referenced Mission reaches it through the governance id Status returned', async () => {
    const S = 'C'.repeat(43);
    server.missions.set(`s256:${S}`, { state: 'active', version: 1 });
    const aref: MissionReference = { form: 'aauth_claim', issuer: ISSUER, id: null, s256: S, authorityHash: null };
    expect((await check(ctxFor({ ref: aref }))).code).toBeNull();
    states.applyChange(change({ id: 'msn_from_s256', state: 'revoked', version: 2 }));
    expect((await check(ctxFor({ ref: aref }))).code).toBe('mission_terminated');
  });

  it('an exchange held under an AAuth reference is cut by an event naming the governance id; one relayed by a replica cuts too', async () => {
    const S = 'D'.repeat(43);
    server.missions.set(`s256:${S}`, { state: 'active', version: 1 });
    const aref: MissionReference = { form: 'aauth_claim', issuer: ISSUER, id: null, s256: S, authorityHash: null };
    const c = ctxFor({ ref: aref });
    expect((await check(c)).code).toBeNull();
    const h: Holder & { cuts: number } = { cuts: 0, cut: () => void h.cuts++ };
    expect(holds.hold(holds.ticket(c)!, h)).toBe(true);
    states.applyChange(change({ id: 'msn_from_s256', state: 'suspended', version: 2 }));
    expect(h.cuts).toBe(1);

    const plain = ctxFor({});
    expect((await check(plain)).code).toBeNull();
    const p: Holder & { cuts: number } = { cuts: 0, cut: () => void p.cuts++ };
    expect(holds.hold(holds.ticket(plain)!, p)).toBe(true);
    bus.deliver(await signedChange({ state: 'revoked', version: 2 }));
    await eventually(() => p.cuts === 1);
  });

  it('a replica-bus gap rechecks held exchanges at once: one whose Mission was revoked meanwhile is cut (r21b 5)', async () => {
    const c = ctxFor({});
    expect((await check(c)).code).toBeNull();
    const h: Holder & { cuts: number } = { cuts: 0, cut: () => void h.cuts++ };
    expect(holds.hold(holds.ticket(c)!, h)).toBe(true);
    // Revoked at the authority; the event went to another replica, and the bus lost it.
    server.missions.set(MISSION_ID, { state: 'revoked', version: 2 });
    bus.gap();
    await eventually(() => h.cuts === 1, 2000);
  });

  it('an AAuth request whose Status answer arrives after a revocation event for the governance id is denied (the event is not forgotten)', async () => {
    const S = 'E'.repeat(43);
    // The revocation arrives while nothing is cached under either key (as while the first request waits on Status).
    states.applyChange(change({ id: 'msn_from_s256', state: 'revoked', version: 2 }));
    // The authority's answer is behind it: still active, at version 1.
    server.missions.set(`s256:${S}`, { state: 'active', version: 1 });
    const aref: MissionReference = { form: 'aauth_claim', issuer: ISSUER, id: null, s256: S, authorityHash: null };
    expect((await check(ctxFor({ ref: aref }))).code).toBe('mission_terminated');
  });

  it('a Status answer read under one form of reference cuts what the Mission holds under the other too', async () => {
    const S = 'F'.repeat(43);
    server.missions.set(`s256:${S}`, { state: 'active', version: 1 });
    server.missions.set('msn_from_s256', { state: 'active', version: 1 });
    const aref: MissionReference = { form: 'aauth_claim', issuer: ISSUER, id: null, s256: S, authorityHash: null };
    const idRef: MissionReference = { form: 'claim', issuer: ISSUER, id: 'msn_from_s256', s256: null, authorityHash: null };
    const viaAauth = ctxFor({ ref: aref });
    const viaId = ctxFor({ ref: idRef });
    expect((await check(viaAauth)).code).toBeNull();
    expect((await check(viaId)).code).toBeNull();
    const a: Holder & { cuts: number } = { cuts: 0, cut: () => void a.cuts++ };
    const i: Holder & { cuts: number } = { cuts: 0, cut: () => void i.cuts++ };
    holds.hold(holds.ticket(viaAauth)!, a);
    holds.hold(holds.ticket(viaId)!, i);
    // Revoked at the authority, no event: a request under the AAuth form reads it from Status.
    server.missions.set(`s256:${S}`, { state: 'revoked', version: 2 });
    await states.lookup(aref, RESOURCE, { fresh: true });
    expect([a.cuts, i.cuts]).toEqual([1, 1]);
  });

  it('lookup() serves MCP / ID-JAG callers from the same cache', async () => {
    const v1 = await states.lookup(REF, RESOURCE);
    expect(v1.state).toBe('active');
    const v2 = states.lookup(REF, RESOURCE);
    expect(v2).not.toBeInstanceOf(Promise);
    await states.lookup(REF, RESOURCE, { fresh: true });
    expect(server.requests.length).toBe(2);
  });
});

describe('config reload: adopt()', () => {
  beforeEach(() => setup());

  it('a new instance keeps event-learned states and versions, not cached Status answers', async () => {
    await check();
    states.applyChange(change({ id: 'msn_revoked', state: 'revoked', version: 3, jti: 'set_a' }));
    states.applyChange(change({ state: 'active', version: 2, jti: 'set_b' }));
    const next = new MissionStates({ config: makeConfig({}, { client: { client_id: CLIENT_ID, private_key_file: clientKeyFile().file }, authorities: [{ issuer: ISSUER, status_endpoint: server.url }] }), keys: new LocalKeys(), metrics: newMetrics(), logger, bus: new RecordingBus(), now });
    next.adopt(states);
    const revokedCtx = ctxFor({ ref: { ...REF, id: 'msn_revoked' } });
    expect(() => next.stage()(revokedCtx)).toThrow(expect.objectContaining({ code: 'mission_terminated' }));
    expect(next.applyChange(change({ state: 'active', version: 2, jti: 'set_b' }))).toBe('duplicate');
    expect(next.applyChange(change({ state: 'active', version: 2, jti: 'set_c' }))).toBe('stale');
    const refetch = next.stage()(ctxFor());
    expect(refetch).toBeInstanceOf(Promise);
    await denialOf(() => refetch);
    await next.close();
  });
});

describe('event denials versus Status answers', () => {
  beforeEach(() => setup());

  it('a suspension learned from an event ends at its suspend_until: Status is read then, and a resume it answers is believed (r20d 1)', async () => {
    expect((await check()).code).toBeNull();
    states.applyChange(change({ state: 'suspended', version: 2, suspendUntil: Math.floor(t / 1000) + 2 }));
    const during = await check();
    expect(during).toMatchObject({ code: 'mission_suspended', sync: true });
    expect(during.retryAfter).toBeGreaterThanOrEqual(1);
    server.missions.set(MISSION_ID, { state: 'active', version: 3 });
    t += 3_000;
    const asked = server.requests.length;
    expect(await check()).toMatchObject({ code: null, sync: false });
    expect(server.requests.length).toBe(asked + 1);
  });

  it('past suspend_until, a lagging Status answer (version below the suspension) does not resume it', async () => {
    expect((await check()).code).toBeNull();
    states.applyChange(change({ state: 'suspended', version: 2, suspendUntil: Math.floor(t / 1000) + 2 }));
    t += 3_000;
    expect((await check()).code).toBe('mission_suspended');
  });

  it('a high-consequence request is still denied when Status answers the same version as a revoke event', async () => {
    states.applyChange(change({ state: 'revoked', version: 1 }));
    const r = await check(ctxFor({ route: { actionClass: 'external_commitment' } as Partial<CompiledRoute> }));
    expect(server.requests.length).toBe(1);
    expect(r.code).toBe('mission_terminated');
  });

  it('a strictly newer Status answer lifts an event denial', async () => {
    states.applyChange(change({ state: 'suspended', version: 1 }));
    server.missions.get(MISSION_ID)!.version = 2;
    const r = await check(ctxFor({ route: { actionClass: 'external_commitment' } as Partial<CompiledRoute> }));
    expect(r.code).toBeNull();
    expect((await check()).code).toBeNull();
  });
});

describe('bounded caches keep what events taught (r19g 1, 2)', () => {
  beforeEach(() => setup({ cache_max_entries: 100 }));

  const aauth = (s256: string): MissionReference => ({ form: 'aauth_claim', issuer: ISSUER, id: null, s256, authorityHash: null });
  const s256 = (i: number): string => `${i}`.padStart(43, 'A');

  /** Fills the cache with 150 other Missions' Status answers: MISSION_ID's record is evicted. */
  const fill = async (): Promise<void> => {
    for (let i = 0; i < 150; i++) {
      server.missions.set(`msn_fill_${i}`, { state: 'active', version: 1 });
      expect((await check(ctxFor({ ref: { ...REF, id: `msn_fill_${i}` } }))).code).toBeNull();
    }
  };

  it('a revocation kept past eviction survives a config reload: a lagging Status answer does not bring the Mission back (r21b 4)', async () => {
    expect((await check()).code).toBeNull();
    states.applyChange(change({ state: 'revoked', version: 2 }));
    await fill();
    const next = new MissionStates({ config: makeConfig({}, { client: { client_id: CLIENT_ID, private_key_file: ck.file }, authorities: [{ issuer: ISSUER, status_endpoint: server.url }], cache_max_entries: 100 }), keys: new LocalKeys().add(ISSUER, authKey), metrics: newMetrics(), logger, bus: new RecordingBus(), holds, now });
    next.adopt(states);
    await states.close();
    states = next;
    // Status still answers `active` version 1.
    expect((await check()).code).toBe('mission_terminated');
  });

  it("the id form's kept revocation reaches the Mission's first AAuth-form request (r21b 8)", async () => {
    expect((await check()).code).toBeNull();
    states.applyChange(change({ state: 'revoked', version: 2 }));
    await fill();
    // First asked for by its AAuth form; Status lags (`active` version 1) and names the id.
    server.missions.set(`s256:${s256(7)}`, { state: 'active', version: 1, id: MISSION_ID });
    expect((await check(ctxFor({ ref: aauth(s256(7)) }))).code).toBe('mission_terminated');
  });

  it('a revocation is remembered for max_stale_s while records for other Missions fill the cache: a lagging Status answer does not bring the Mission back', async () => {
    expect((await check()).code).toBeNull();
    states.applyChange(change({ state: 'revoked', version: 2 }));
    // Status still answers `active` version 1 for it (a replica that has not seen the revocation).
    for (let i = 0; i < 150; i++) {
      server.missions.set(`msn_other_${i}`, { state: 'active', version: 1 });
      expect((await check(ctxFor({ ref: { ...REF, id: `msn_other_${i}` } }))).code).toBeNull();
    }
    for (let i = 0; i < 150; i++) states.applyChange(change({ id: `msn_suspended_${i}`, state: 'suspended', version: 3 }));
    expect(await counter(metrics, 'mission_gateway_cache_evictions_total', { cache: 'mission' })).toBeGreaterThan(100);
    expect((await check()).code).toBe('mission_terminated');
  });

  it('an AAuth Mission in use keeps the alias its events arrive by, however many other AAuth Missions are read', async () => {
    server.missions.set(`s256:${s256(0)}`, { state: 'active', version: 1, id: 'msn_hot' });
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBeNull();
    for (let i = 1; i <= 130; i++) {
      server.missions.set(`s256:${s256(i)}`, { state: 'active', version: 1, id: `msn_aauth_${i}` });
      expect((await check(ctxFor({ ref: aauth(s256(i)) }))).code).toBeNull();
      if (i % 5 === 0) expect((await check(ctxFor({ ref: aauth(s256(0)) }))).sync).toBe(true);
    }
    states.applyChange(change({ id: 'msn_hot', state: 'revoked', version: 2 }));
    const after = await check(ctxFor({ ref: aauth(s256(0)) }));
    expect(after).toMatchObject({ code: 'mission_terminated', sync: true });
  });

  it('an AAuth Mission whose alias was evicted is read from Status again, and a revocation that arrived meanwhile stands', async () => {
    server.missions.set(`s256:${s256(0)}`, { state: 'active', version: 1, id: 'msn_cold' });
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBeNull();
    for (let i = 1; i <= 101; i++) {
      server.missions.set(`s256:${s256(i)}`, { state: 'active', version: 1, id: `msn_aauth_${i}` });
      expect((await check(ctxFor({ ref: aauth(s256(i)) }))).code).toBeNull();
    }
    states.applyChange(change({ id: 'msn_cold', state: 'revoked', version: 2 }));
    const asked = server.requests.length;
    // Status lags (still `active` version 1): the event learned under the governance id wins.
    const after = await check(ctxFor({ ref: aauth(s256(0)) }));
    expect(after).toMatchObject({ code: 'mission_terminated', sync: false });
    expect(server.requests.length).toBe(asked + 1);
  });

  it('a revocation that reaches a Mission only through its AAuth form is remembered under its id too: a lagging Status answer does not resurrect the id form (r20a 4)', async () => {
    server.missions.set(`s256:${s256(0)}`, { state: 'active', version: 1, id: MISSION_ID });
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBeNull();
    states.applyChange(change({ state: 'revoked', version: 2 }));
    // Status lags for the id form (`active` version 1).
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBe('mission_terminated');
    expect((await check()).code).toBe('mission_terminated');
  });

  it('a suspension kept past eviction keeps its AAuth alias: the resume reaches it (r20a 5)', async () => {
    server.missions.set(`s256:${s256(0)}`, { state: 'active', version: 1, id: 'msn_paused' });
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBeNull();
    states.applyChange(change({ id: 'msn_paused', state: 'suspended', version: 2 }));
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBe('mission_suspended');
    for (let i = 1; i <= 130; i++) {
      server.missions.set(`s256:${s256(i)}`, { state: 'active', version: 1, id: `msn_aauth_${i}` });
      expect((await check(ctxFor({ ref: aauth(s256(i)) }))).code).toBeNull();
    }
    server.missions.set(`s256:${s256(0)}`, { state: 'suspended', version: 2, id: 'msn_paused' });
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBe('mission_suspended');
    states.applyChange(change({ id: 'msn_paused', state: 'active', version: 3 }));
    server.missions.set(`s256:${s256(0)}`, { state: 'active', version: 3, id: 'msn_paused' });
    expect((await check(ctxFor({ ref: aauth(s256(0)) }))).code).toBeNull();
  });
});
