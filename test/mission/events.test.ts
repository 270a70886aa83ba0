/**
 * RFC 8935 push and RFC 8936 poll of Mission lifecycle SETs, on real sockets: the receiver is
 * MissionStates.handlePush behind a node:http server; the poll transmitter is a node:http server.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MissionHolds, type Holder } from '../../src/mission/holds.js';
import { refKey } from '../../src/mission/key.js';
import { handleSetPush, MAX_POLL_BURST, type SetSink } from '../../src/mission/delivery.js';
import { SetRejected, type SetVerifier } from '../../src/mission/events.js';
import { MissionStates } from '../../src/mission/state.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import type { MissionReference, RequestContext } from '../../src/pipeline/context.js';
import { eventually } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';
import { CLIENT_ID, clientKeyFile, context, counter, denialOf, ISSUER, lifecycleSet, LocalKeys, logger, makeConfig, MISSION_ID, newMetrics, RecordingBus, RESOURCE, signingKey, StatusServer, token, type SigningKey } from './helpers.js';

const REF: MissionReference = { form: 'claim', issuer: ISSUER, id: MISSION_ID, s256: null, authorityHash: null };
const PUSH = '/.well-known/ssf/push';

let t: number;
const now = (): number => t;
let statusServer: StatusServer;
let receiver: Server;
let base: string;
let states: MissionStates;
let metrics: ReturnType<typeof newMetrics>;
let bus: RecordingBus;
let authKey: SigningKey;
let holds: MissionHolds;
let keys: LocalKeys;

async function setup(mission: Record<string, unknown> = {}, realClock = false, log: Logger = logger): Promise<void> {
  t = Date.now();
  const clock = realClock ? Date.now : now;
  const ck = clientKeyFile();
  authKey = signingKey();
  keys = new LocalKeys().add(ISSUER, authKey).add('https://other-as.example.com', signingKey());
  statusServer = await new StatusServer(ISSUER, authKey, ck.publicKey, clock).start();
  statusServer.missions.set(MISSION_ID, { state: 'active', version: 1, fresh_until: null });
  metrics = newMetrics();
  bus = new RecordingBus();
  const config = makeConfig(
    { issuers: [{ issuer: ISSUER, algorithms: ['ES256'] }, { issuer: 'https://other-as.example.com', algorithms: ['ES256'] }] },
    { client: { client_id: CLIENT_ID, private_key_file: ck.file }, authorities: [{ issuer: ISSUER, status_endpoint: statusServer.url }], ...mission },
  );
  holds = new MissionHolds({ logger, counted: () => {}, now: clock });
  states = new MissionStates({ config, keys, metrics, logger: log, bus, holds, now: clock });
  receiver = createServer((req, res) => {
    if (req.url === PUSH) states.handlePush(req, res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
}

afterEach(async () => {
  await states?.close();
  await statusServer?.close();
  receiver?.closeAllConnections();
  await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
});

const push = (set: string, contentType = 'application/secevent+jwt') => raw(base, { method: 'POST', path: PUSH, headers: { 'content-type': contentType }, body: set });

function ctx(): RequestContext {
  const c = context({ token: token({}, { exp: Math.floor(t / 1000) + 3600 }) });
  c.missionRef = REF;
  return c;
}

async function deniedWith(c = ctx()): Promise<string | null> {
  return (await denialOf(() => states.stage()(c)))?.code ?? null;
}

describe('RFC 8935 push delivery at mission.events.push_path', () => {
  beforeEach(() => setup());

  it('a verified revoke is applied before the 202: the next request is denied', async () => {
    expect(await deniedWith()).toBeNull();
    const res = await push(await lifecycleSet(authKey, { state: 'revoked', version: 2 }));
    expect(res.status).toBe(202);
    expect(res.body.length).toBe(0);
    expect(await deniedWith()).toBe('mission_terminated');
    expect(bus.published).toHaveLength(1);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'accepted' })).toBe(1);
  });

  it('RFC 3339 as written (lower-case t and z, a leap second) is read; a revocation whose timestamps cannot be read is applied all the same, an activation is refused (r14b 3)', async () => {
    expect(await deniedWith()).toBeNull();
    // Suspended until a lower-case, leap-second instant: read (Retry-After counts to it), not a 400.
    expect((await push(await lifecycleSet(authKey, { state: 'suspended', version: 2, extra: { expires_at: '2099-12-31t23:59:59.123456789012z', suspend_until: '2098-12-31T23:59:60Z' } }))).status).toBe(202);
    const suspended = await denialOf(() => states.stage()(ctx()));
    expect(suspended?.code).toBe('mission_suspended');
    expect(suspended?.retryAfter).toBe(Math.ceil(Date.UTC(2098, 11, 31, 23, 59, 59) / 1000 - t / 1000));
    // An active event with an unreadable expires_at is refused: nothing is lifted on a doubt.
    const resumed = await push(await lifecycleSet(authKey, { state: 'active', version: 3, extra: { expires_at: 'tomorrow' } }));
    expect(resumed.status).toBe(400);
    expect(await deniedWith()).toBe('mission_suspended');
    // A revocation is never lost to a member that only bounds how long it is remembered.
    const revoked = await push(await lifecycleSet(authKey, { state: 'revoked', version: 4, extra: { expires_at: '2099-02-30T00:00:00Z' } }));
    expect(revoked.status).toBe(202);
    expect(await deniedWith()).toBe('mission_terminated');
  });

  it('a revocation is applied whatever its clock claims say (a fast transmitter clock, a retried push past exp); an activation is refused on them (r17a 2)', async () => {
    const nowS = Math.floor(Date.now() / 1000);
    const off = [{ iat: nowS + 40 }, { exp: nowS - 100 }, { nbf: nowS + 100 }];
    // An activation: refused on each (it would lift a denial).
    for (const claims of off) {
      expect((await push(await lifecycleSet(authKey, { state: 'active', version: 2, claims }))).status).toBe(400);
    }
    expect(await deniedWith()).toBeNull();
    // Each end is applied (202) and denies at once.
    let version = 2;
    for (const [i, claims] of off.entries()) {
      expect((await push(await lifecycleSet(authKey, { state: i === 0 ? 'suspended' : 'revoked', version: version++, claims }))).status).toBe(202);
      expect(await deniedWith()).toBe(i === 0 ? 'mission_suspended' : 'mission_terminated');
    }
  });

  it('a duplicate jti is 202 and applied once', async () => {
    await deniedWith();
    const set = await lifecycleSet(authKey, { state: 'suspended', version: 2, jti: 'set_dup' });
    expect((await push(set)).status).toBe(202);
    expect((await push(set)).status).toBe(202);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'duplicate' })).toBe(1);
    expect(bus.published).toHaveLength(1);
  });

  it('a stale SET (version not above the last applied) is still 202 and changes nothing', async () => {
    await deniedWith();
    expect((await push(await lifecycleSet(authKey, { state: 'suspended', version: 3 }))).status).toBe(202);
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 2 }))).status).toBe(202);
    expect(await deniedWith()).toBe('mission_suspended');
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'stale' })).toBe(1);
  });

  it('events in order: suspend, resume, revoke', async () => {
    await deniedWith();
    await push(await lifecycleSet(authKey, { state: 'suspended', version: 2 }));
    expect(await deniedWith()).toBe('mission_suspended');
    await push(await lifecycleSet(authKey, { state: 'active', version: 3 }));
    expect(await deniedWith()).toBeNull();
    await push(await lifecycleSet(authKey, { state: 'revoked', version: 4 }));
    expect(await deniedWith()).toBe('mission_terminated');
    expect(statusServer.requests).toHaveLength(1);
  });

  it('a revoked Mission stays revoked: a later active event, or a later Status answer saying active, is not believed', async () => {
    await deniedWith();
    await push(await lifecycleSet(authKey, { state: 'revoked', version: 2 }));
    expect(await deniedWith()).toBe('mission_terminated');
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 3 }))).status).toBe(202);
    expect(await deniedWith()).toBe('mission_terminated');
    // Past the event's deny window the cache asks Mission Status, which now (wrongly) says active.
    statusServer.missions.set(MISSION_ID, { state: 'active', version: 4, fresh_until: null });
    t += 60_001;
    expect(await deniedWith()).toBe('mission_terminated');
    expect(statusServer.requests.length).toBeGreaterThan(1);
  });

  it('a SET naming a Mission not in the cache is 202; its non-active state is remembered', async () => {
    expect((await push(await lifecycleSet(authKey, { state: 'revoked', version: 3 }))).status).toBe(202);
    expect(await deniedWith()).toBe('mission_terminated');
    expect(statusServer.requests).toHaveLength(0);
  });

  it('a gap refetches Status', async () => {
    await deniedWith();
    statusServer.missions.get(MISSION_ID)!.version = 7;
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 7 }))).status).toBe(202);
    expect(await deniedWith()).toBeNull();
    expect(statusServer.requests).toHaveLength(2);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'gap' })).toBe(1);
  });

  it('authority_changed refetches Status', async () => {
    await deniedWith();
    statusServer.missions.get(MISSION_ID)!.version = 2;
    await push(await lifecycleSet(authKey, { state: 'active', version: 2, extra: { authority_changed: true } }));
    await deniedWith();
    expect(statusServer.requests).toHaveLength(2);
  });

  it('authority_changed while a Status query is in flight: that answer is not shared with later requests nor cached; they ask again and see the new authority', async () => {
    const WIDE = [{ type: 'mission_resource_access', resource: RESOURCE, actions: ['invoices.read', 'invoices.pay'] }];
    const NARROW = [{ type: 'mission_resource_access', resource: RESOURCE, actions: ['invoices.read'] }];
    statusServer.missions.set(MISSION_ID, { state: 'active', version: 1, authorization_details: WIDE });
    statusServer.delayMs = 300;
    // The first query is answered as the authority stood when it was asked: version 1, wide.
    let answered = 0;
    statusServer.tamper = (claims) => {
      if (answered++ === 0) {
        (claims['mission'] as Record<string, unknown>)['version'] = 1;
        claims['authorization_details'] = WIDE;
      }
    };
    const early = ctx();
    const inFlight = states.stage()(early) as Promise<void>;
    await eventually(() => statusServer.requests.length === 1);
    statusServer.missions.set(MISSION_ID, { state: 'active', version: 2, authorization_details: NARROW });
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 2, extra: { authority_changed: true } }))).status).toBe(202);

    const later = ctx();
    await states.stage()(later);
    expect(statusServer.requests).toHaveLength(2);
    expect(later.mission?.authority).toEqual(NARROW);
    await inFlight;
    // The request that was waiting already gets the answer it asked for; nothing of it is cached.
    expect(early.mission?.authority).toEqual(WIDE);
    const next = ctx();
    await states.stage()(next);
    expect(next.mission?.authority).toEqual(NARROW);
    expect(statusServer.requests).toHaveLength(2);
  });

  it('a Status answer behind an applied authority change (a lagging authority) is not believed: 503, then the caught-up answer', async () => {
    await deniedWith();
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 2, extra: { authority_changed: true } }))).status).toBe(202);
    // The authority still answers version 1.
    expect(await deniedWith()).toBe('state_unavailable');
    statusServer.missions.get(MISSION_ID)!.version = 2;
    expect(await deniedWith()).toBeNull();
  });

  const rejects: Array<[string, () => Promise<string>, string]> = [
    ['a bad signature', async () => lifecycleSet(signingKey(authKey.kid), { state: 'revoked', version: 2 }), 'invalid_key'],
    ['an unknown kid', async () => lifecycleSet(signingKey(), { state: 'revoked', version: 2 }), 'invalid_key'],
    ['a wrong aud', async () => lifecycleSet(authKey, { state: 'revoked', version: 2, aud: 'https://other.example.com' }), 'invalid_audience'],
    ['an aud that only prefixes ours', async () => lifecycleSet(authKey, { state: 'revoked', version: 2, aud: `${RESOURCE}/x` }), 'invalid_audience'],
    ['an aud array naming other receivers only (r21b 15)', async () => lifecycleSet(authKey, { state: 'revoked', version: 2, aud: ['https://other.example.com', `${RESOURCE}/x`] }), 'invalid_audience'],
    ['an untrusted iss', async () => lifecycleSet(authKey, { issuer: 'https://evil.example.com', state: 'revoked', version: 2 }), 'invalid_issuer'],
    ['an issuer speaking for another issuer\'s Mission', async () => lifecycleSet(authKey, { state: 'revoked', version: 2, missionIssuer: 'https://other-as.example.com' }), 'invalid_issuer'],
    ['typ JWT', async () => lifecycleSet(authKey, { state: 'revoked', version: 2, header: { typ: 'JWT' } }), 'invalid_request'],
    ['no version', async () => lifecycleSet(authKey, { state: 'revoked', version: undefined as unknown as number }), 'invalid_request'],
    ['a version of 0', async () => lifecycleSet(authKey, { state: 'revoked', version: 0 }), 'invalid_request'],
    ['not a JWT', async () => 'not-a-jwt', 'invalid_request'],
    [
      'alg none',
      async () => {
        const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
        const payload = jose.decodeJwt(await lifecycleSet(authKey, { state: 'revoked', version: 2 }));
        return `${enc({ alg: 'none', typ: 'secevent+jwt' })}.${enc(payload)}.`;
      },
      'invalid_key',
    ],
  ];
  it.each(rejects)('%s is 400 with RFC 8935 error JSON and changes nothing', async (_name, make, err) => {
    await deniedWith();
    const res = await push(await make());
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.json()).toEqual({ err, description: expect.any(String) });
    expect(await deniedWith()).toBeNull();
    expect(bus.published).toHaveLength(0);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'rejected' })).toBe(1);
  });

  it('a wrong Content-Type is 400', async () => {
    const res = await push(await lifecycleSet(authKey, { state: 'revoked', version: 2 }), 'application/jwt');
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ err: 'invalid_request' });
  });

  it('a body over the SET size bound is 400', async () => {
    const res = await push('a'.repeat(70 * 1024));
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ err: 'invalid_request' });
  });

  it('GET is refused', async () => {
    expect((await raw(base, { path: PUSH })).status).toBe(405);
  });

  it('mission.events.audience replaces resource as the expected aud, exactly', async () => {
    await states.close();
    await statusServer.close();
    receiver.closeAllConnections();
    await new Promise<void>((r) => receiver.close(() => r()));
    await setup({ events: { audience: 'urn:example:receiver' } });
    expect((await push(await lifecycleSet(authKey, { state: 'revoked', version: 2 }))).status).toBe(400);
    expect((await push(await lifecycleSet(authKey, { state: 'revoked', version: 2, aud: 'urn:example:receiver' }))).status).toBe(202);
  });

  it('a SET signed with a key the gateway cannot fetch yet is 503 with Retry-After (retried, not dropped as a 400 would be), and 202 once the key is there', async () => {
    await deniedWith();
    const rotated = signingKey('k_rotated');
    keys.add(ISSUER, rotated);
    keys.pending.add('k_rotated');
    const set = await lifecycleSet(rotated, { state: 'revoked', version: 2 });
    const r = await push(set);
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('5');
    expect(r.json()).toMatchObject({ err: 'temporarily_unavailable' });
    expect(await deniedWith()).toBeNull();
    keys.pending.delete('k_rotated');
    expect((await push(set)).status).toBe(202);
    expect(await deniedWith()).toBe('mission_terminated');
  });

  it('when the bus cannot reach the other replicas, the push is 503 and the retry is published', async () => {
    await deniedWith();
    bus.fail = true;
    const set = await lifecycleSet(authKey, { state: 'revoked', version: 2 });
    expect((await push(set)).status).toBe(503);
    // Applied locally all the same (fail closed here).
    expect(await deniedWith()).toBe('mission_terminated');
    bus.fail = false;
    expect((await push(set)).status).toBe(202);
    expect(bus.published).toHaveLength(1);
  });

  it('an SSF verification event is a heartbeat (202)', async () => {
    const jwt = await new jose.SignJWT({ iss: ISSUER, aud: RESOURCE, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), events: { 'https://schemas.openid.net/secevent/ssf/event-type/verification': { state: 'x' } } })
      .setProtectedHeader({ alg: 'ES256', kid: authKey.kid, typ: 'secevent+jwt' })
      .sign(authKey.privateKey);
    expect((await push(jwt)).status).toBe(202);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'heartbeat' })).toBe(1);
  });

  it('clock claims bound an activation and a heartbeat: exp exactly at the skew\'s edge is expired, a heartbeat issued in the future is refused (r18a 8)', async () => {
    t = Math.floor(t / 1000) * 1000; // a whole second: exp can sit exactly on now - 30 s
    const nowS = t / 1000;
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 2, claims: { iat: nowS - 100, exp: nowS - 30 } }))).status).toBe(400);
    expect((await push(await lifecycleSet(authKey, { state: 'active', version: 2, claims: { iat: nowS - 100, exp: nowS - 29 } }))).status).toBe(202);
    const heartbeat = (iat: number) =>
      new jose.SignJWT({ iss: ISSUER, aud: RESOURCE, iat, jti: randomUUID(), events: { 'https://schemas.openid.net/secevent/ssf/event-type/verification': { state: 'x' } } })
        .setProtectedHeader({ alg: 'ES256', kid: authKey.kid, typ: 'secevent+jwt' })
        .sign(authKey.privateKey);
    expect((await push(await heartbeat(nowS + 600))).status).toBe(400);
    expect((await push(await heartbeat(nowS))).status).toBe(202);
  });

  it('stream liveness: once an issuer pushes, silence past max_stale_s makes older entries stale', async () => {
    await push(await lifecycleSet(authKey, { id: 'msn_other', state: 'active', version: 1 }));
    t += 1_000;
    await deniedWith();
    t += 30_000;
    const c1 = ctx();
    expect(states.stage()(c1)).toBeUndefined(); // still a synchronous hit
    t += 30_000; // 61 s since the last SET: the stream is silent
    const c2 = ctx();
    const r = states.stage()(c2);
    expect(r).toBeInstanceOf(Promise);
    await r;
    expect(statusServer.requests).toHaveLength(2);
  });
});

describe('revocation is applied before the 202 (the latency bar itself is measured by npm run bench)', () => {
  beforeEach(() => setup({}, true));

  it('the first request after the 202 is denied, decided synchronously from the cache (no Status round trip)', async () => {
    for (let i = 0; i < 150; i++) {
      const id = `msn_lat_${i}`;
      statusServer.missions.set(id, { state: 'active', version: 1, fresh_until: null });
      const ref = { ...REF, id };
      const c = context({ token: token() });
      c.missionRef = ref;
      expect(await denialOf(() => states.stage()(c))).toBeNull();
      const set = await lifecycleSet(authKey, { id, state: 'revoked', version: 2 });
      const res = await push(set);
      expect(res.status).toBe(202);
      const queries = statusServer.requests.length;
      const c2 = context({ token: token() });
      c2.missionRef = ref;
      let code: string | null = null;
      try {
        const r = states.stage()(c2);
        expect(r).toBeUndefined();
      } catch (e) {
        code = (e as { code: string }).code;
      }
      expect(code).toBe('mission_terminated');
      expect(statusServer.requests).toHaveLength(queries);
    }
  });
});

describe('what a refused push logs (r18c 3)', () => {
  /** A debug logger and the lines it wrote, parsed. */
  function logLines(): { log: Logger; lines: Array<{ level: number; msg: string; issuer?: string }> } {
    const lines: Array<{ level: number; msg: string; issuer?: string }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as { level: number; msg: string });
        done();
      },
    });
    return { log: createLogger('debug', sink), lines };
  }

  it('junk anyone could send is logged at debug; a SET the issuer signed and the gateway refused, at warn with the issuer', async () => {
    const { log, lines } = logLines();
    await setup({}, false, log);
    const warns = () => lines.filter((l) => l.level === 40 && l.msg === 'SET rejected');
    expect((await push('not.a.jwt')).status).toBe(400);
    expect((await push(await lifecycleSet(signingKey(), { state: 'revoked', version: 2 }))).status).toBe(400); // not the issuer's key
    expect(warns()).toHaveLength(0);
    expect(lines.filter((l) => l.level === 20 && l.msg === 'SET rejected before its signature verified')).toHaveLength(2);
    expect((await push(await lifecycleSet(authKey, { state: 'revoked', version: 2, aud: 'https://other.example.com' }))).status).toBe(400);
    expect(warns()).toEqual([expect.objectContaining({ issuer: ISSUER })]);
  });

  it('pushes whose key is not known yet: one warn line a minute, each counted and 503 (r20b 5)', async () => {
    const { log, lines } = logLines();
    await setup({}, false, log);
    const rotated = signingKey('k_unknown');
    keys.add(ISSUER, rotated);
    keys.pending.add('k_unknown');
    for (let i = 0; i < 5; i++) expect((await push(await lifecycleSet(rotated, { state: 'revoked', version: 2, jti: `set_${i}` }))).status).toBe(503);
    const about = lines.filter((l) => l.msg === 'SET not verifiable yet; the transmitter is asked to retry');
    expect(about.map((l) => l.level)).toEqual([40, 20, 20, 20, 20]);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'deferred' })).toBe(5);
  });
});

describe('the replica bus lost changes before this replica read them (r18d 2)', () => {
  beforeEach(() => setup());

  it('every cached state is asked of Mission Status again before it is used', async () => {
    expect(await deniedWith()).toBeNull();
    expect(await deniedWith()).toBeNull();
    expect(statusServer.requests).toHaveLength(1); // cached
    // Revoked at the authority; the change went to another replica and was trimmed from the stream.
    statusServer.missions.set(MISSION_ID, { state: 'revoked', version: 2, fresh_until: null });
    expect(await deniedWith()).toBeNull(); // still cached: nothing told this replica
    bus.gap();
    expect(await deniedWith()).toBe('mission_terminated');
    expect(statusServer.requests).toHaveLength(2);
  });
});

describe('RFC 8936 poll delivery (mission.events.poll)', () => {
  let transmitter: Server;
  let queue: Map<string, string>;
  let polls: Array<Record<string, unknown>>;
  let failPolls: boolean;
  let claimMore: boolean;

  beforeEach(async () => {
    queue = new Map();
    polls = [];
    failPolls = false;
    claimMore = false;
    transmitter = createServer(async (req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      polls.push(body);
      if (failPolls) {
        res.writeHead(500).end();
        return;
      }
      for (const jti of (body['ack'] as string[]) ?? []) queue.delete(jti);
      for (const jti of Object.keys((body['setErrs'] as Record<string, unknown>) ?? {})) queue.delete(jti);
      // The oldest unacknowledged SETs first, at most maxEvents (RFC 8936 section 2.4).
      const max = Number(body['maxEvents']);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sets: Object.fromEntries([...queue].slice(0, max)), moreAvailable: claimMore || queue.size > max }));
    });
    await new Promise<void>((r) => transmitter.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(transmitter.address() as AddressInfo).port}/ssf/poll`;
    await setup({ events: { poll: { endpoint: url, interval_s: 1 } } });
  });

  afterEach(async () => {
    transmitter.closeAllConnections();
    await new Promise<void>((r) => transmitter.close(() => r()));
  });

  it('applies polled SETs, acknowledges them, reports setErrs for bad ones', async () => {
    await deniedWith();
    const good = await lifecycleSet(authKey, { state: 'revoked', version: 2, jti: 'set_good' });
    const bad = await lifecycleSet(signingKey(), { state: 'active', version: 3, jti: 'set_bad' });
    queue.set('set_good', good);
    queue.set('set_bad', bad);
    expect(states.ready()).toBe(false);
    await states.pollOnce();
    expect(states.ready()).toBe(true);
    expect(await deniedWith()).toBe('mission_terminated');
    expect(polls[0]).toMatchObject({ ack: [], returnImmediately: true, maxEvents: 100 });
    await states.pollOnce();
    expect(polls[1]!['ack']).toEqual(['set_good']);
    expect(polls[1]!['setErrs']).toEqual({ set_bad: { err: 'invalid_key', description: expect.any(String) } });
    expect(queue.size).toBe(0);
  });

  it('a polled change the replicas could not be told of is not acknowledged at first: redelivered, then shared and acknowledged', async () => {
    await deniedWith();
    queue.set('set_rev', await lifecycleSet(authKey, { state: 'revoked', version: 2, jti: 'set_rev' }));
    bus.fail = true;
    await states.pollOnce();
    // Applied here all the same.
    expect(await deniedWith()).toBe('mission_terminated');
    bus.fail = false;
    await states.pollOnce();
    expect(polls[1]!['ack']).toEqual([]);
    expect(bus.published.map((c) => c.state)).toEqual(['revoked']);
    await states.pollOnce();
    expect(polls[2]!['ack']).toEqual(['set_rev']);
    expect(queue.size).toBe(0);
  });

  it('a change still not shared when delivered again is acknowledged (the queue moves on) and published once the bus is back', async () => {
    await deniedWith();
    queue.set('set_rev', await lifecycleSet(authKey, { state: 'revoked', version: 2, jti: 'set_rev' }));
    bus.fail = true;
    await states.pollOnce();
    await states.pollOnce();
    await states.pollOnce();
    expect(polls[2]!['ack']).toEqual(['set_rev']);
    expect(queue.size).toBe(0);
    expect(bus.published).toEqual([]);
    bus.fail = false;
    await eventually(() => bus.published.length === 1, 5000);
    expect(bus.published[0]).toMatchObject({ id: MISSION_ID, state: 'revoked', version: 2 });
  });

  it('with the bus down, the oldest SETs cannot hold back newer ones: a revocation behind more than maxEvents others is applied within a few polls', async () => {
    await states.close();
    await setup({ events: { poll: { endpoint: `http://127.0.0.1:${(transmitter.address() as AddressInfo).port}/ssf/poll`, interval_s: 1, max_events: 2 } } });
    await deniedWith();
    for (let i = 0; i < 4; i++) queue.set(`set_other_${i}`, await lifecycleSet(authKey, { id: `msn_other_${i}`, state: 'suspended', version: 2, jti: `set_other_${i}` }));
    queue.set('set_rev', await lifecycleSet(authKey, { state: 'revoked', version: 2, jti: 'set_rev' }));
    bus.fail = true;
    for (let i = 0; i < 8 && (await deniedWith()) !== 'mission_terminated'; i++) await states.pollOnce();
    expect(await deniedWith()).toBe('mission_terminated');
    expect(polls.length).toBeLessThanOrEqual(6);
  });

  it('with the bus hung, a poll answer\'s SETs are all applied at once: a revocation behind ten others waits for no publication (r18d 1)', async () => {
    await deniedWith();
    for (let i = 0; i < 10; i++) queue.set(`set_other_${i}`, await lifecycleSet(authKey, { id: `msn_other_${i}`, state: 'suspended', version: 2, jti: `set_other_${i}` }));
    queue.set('set_rev', await lifecycleSet(authKey, { state: 'revoked', version: 2, jti: 'set_rev' }));
    bus.fail = true;
    bus.failAfterMs = 400;
    const start = performance.now();
    const poll = states.pollOnce();
    await eventually(async () => (await deniedWith()) === 'mission_terminated', 300);
    await poll;
    // The eleven publications timed out together, not one after another (4.4 s).
    expect(performance.now() - start).toBeLessThan(1500);
    // None acknowledged: each is delivered again, as a push would be answered 503.
    await states.pollOnce();
    expect(polls[1]!['ack']).toEqual([]);
  });

  it('a SET signed with a key the gateway cannot fetch yet is neither acknowledged nor reported (so it comes again), and is applied once the key is there', async () => {
    await deniedWith();
    const rotated = signingKey('k_rotated');
    keys.add(ISSUER, rotated);
    keys.pending.add('k_rotated');
    queue.set('set_new_key', await lifecycleSet(rotated, { state: 'revoked', version: 2, jti: 'set_new_key' }));
    expect(await states.pollOnce()).toBe(false);
    await states.pollOnce();
    expect(polls[1]!['ack']).toEqual([]);
    expect(polls[1]!['setErrs']).toBeUndefined();
    expect(queue.has('set_new_key')).toBe(true);
    expect(await deniedWith()).toBeNull();
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'deferred' })).toBe(2);
    keys.pending.delete('k_rotated');
    await states.pollOnce();
    expect(await deniedWith()).toBe('mission_terminated');
    await states.pollOnce();
    expect(polls[3]!['ack']).toEqual(['set_new_key']);
  });

  it('ready() is false once the last successful poll is older than max_stale_s; cached states go stale', async () => {
    await states.pollOnce();
    await deniedWith();
    expect(states.ready()).toBe(true);
    failPolls = true;
    await expect(states.pollOnce()).rejects.toThrow();
    t += 60_001;
    expect(states.ready()).toBe(false);
    const r = states.stage()(ctx());
    expect(r).toBeInstanceOf(Promise);
    await r;
    expect(statusServer.requests).toHaveLength(2);
    expect(await counter(metrics, 'mission_gateway_events_total', { result: 'poll_failed' })).toBe(1);
  });

  it('a transmitter that claims moreAvailable but sends no SETs is polled on the interval, not in a loop', async () => {
    claimMore = true;
    states.startPolling();
    await new Promise((r) => setTimeout(r, 400));
    expect(polls.length).toBe(1);
    await states.close();
  });

  it('a transmitter that answers moreAvailable with one junk SET each time is polled at most MAX_POLL_BURST times at once, then on the interval', async () => {
    let n = 0;
    transmitter.removeAllListeners('request');
    transmitter.on('request', (req: IncomingMessage, res) => {
      req.resume();
      req.on('end', () => {
        polls.push({});
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sets: { [`junk-${n++}`]: 'not.a.jwt' }, moreAvailable: true }));
      });
    });
    states.startPolling();
    await eventually(() => polls.length >= MAX_POLL_BURST + 1, 5000);
    await new Promise((r) => setTimeout(r, 500)); // inside interval_s (1 s): no further poll
    expect(polls.length).toBe(MAX_POLL_BURST + 1);
    await states.close();
  });

  it('a rejected SET whose jti is __proto__ is reported in setErrs like any other', async () => {
    queue.set('__proto__', await lifecycleSet(signingKey(), { state: 'active', version: 3, jti: '__proto__' }));
    await states.pollOnce();
    await states.pollOnce();
    expect(Object.keys(polls[1]!['setErrs'] as object)).toEqual(['__proto__']);
  });

  it('startPolling runs the loop on its interval', async () => {
    queue.set('set_loop', await lifecycleSet(authKey, { state: 'revoked', version: 2, jti: 'set_loop' }));
    states.startPolling();
    for (let i = 0; i < 50 && (await deniedWith()) !== 'mission_terminated'; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await deniedWith()).toBe('mission_terminated');
    await states.close();
  });
});

describe('lifecycle changes and the exchanges a Mission holds (holds.ts)', () => {
  beforeEach(() => setup());

  const held = (): Holder & { cuts: number } => {
    const h = { cuts: 0, cut: () => void h.cuts++ };
    return h;
  };
  const ticket = (admittedAt: number) => ({ key: refKey(REF), ref: REF, audience: RESOURCE, issuer: ISSUER, id: MISSION_ID, expiresAt: null, admittedAt, more: null, review: null });

  it('a suspension cuts what the Mission holds; after the resume, a response admitted before the suspension may flow', async () => {
    expect(await deniedWith()).toBeNull();
    const open = held();
    const before = performance.now();
    expect(holds.hold(ticket(before), open)).toBe(true);
    await push(await lifecycleSet(authKey, { state: 'suspended', version: 2 }));
    expect(open.cuts).toBe(1);
    // Suspended: a response starting now for a request admitted before is refused.
    expect(holds.hold(ticket(before), held())).toBe(false);
    await push(await lifecycleSet(authKey, { state: 'active', version: 3 }));
    // Active again: it may flow (the Mission is active while it does; a later change cuts it).
    const late = held();
    expect(holds.hold(ticket(before), late)).toBe(true);
    await push(await lifecycleSet(authKey, { state: 'revoked', version: 4 }));
    expect(late.cuts).toBe(1);
  });

  it('an active Status answer that is not newer does not lift a remembered event denial', async () => {
    const before = performance.now();
    // Suspended by an event while nothing was cached; the authority answers active at the same version.
    await push(await lifecycleSet(authKey, { state: 'suspended', version: 2 }));
    statusServer.missions.set(MISSION_ID, { state: 'active', version: 2, fresh_until: null });
    // A fresh read (as a high-consequence route does) stores that answer: the event's denial stands.
    const view = await states.lookup(REF, RESOURCE, { fresh: true });
    expect(view.state).toBe('suspended');
    expect(holds.hold(ticket(before), held())).toBe(false);
  });
});


describe('RFC 8935 push receiver under a flood', () => {
  it('past maxPendingPushes SETs being verified, a push is answered 503; the count comes down as they are answered', async () => {
    const waiting: (() => void)[] = [];
    const verifier = {
      verify: () =>
        new Promise<never>((_, reject) => {
          waiting.push(() => reject(new SetRejected('invalid_key', 'the SET signature cannot be verified')));
        }),
    } as unknown as SetVerifier;
    const sink = { apply: () => 'accepted', publish: () => Promise.resolve(), forget: () => undefined, defer: () => undefined, isClosed: () => false } as unknown as SetSink;
    const pending = { count: 0 };
    const metrics = newMetrics();
    const server = createServer((req, res) => handleSetPush(req, res, { verifier, sink, metrics, logger, pending, maxPendingPushes: 2 }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const send = () => raw(url, { method: 'POST', path: PUSH, headers: { 'content-type': 'application/secevent+jwt' }, body: 'a.b.c' });
    try {
      const first = [send(), send()];
      await eventually(() => waiting.length === 2);
      const third = await send();
      expect(third.status).toBe(503);
      expect(third.headers['retry-after']).toBe('1');
      for (const release of waiting.splice(0)) release();
      expect((await Promise.all(first)).map((r) => r.status)).toEqual([400, 400]);
      // Answered: room again.
      const fourth = send();
      await eventually(() => waiting.length === 1);
      waiting.pop()!();
      expect((await fourth).status).toBe(400);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('pushes whose body is still arriving hold no slot, and are answered 408 and closed past the body timeout: slow clients cannot block a revocation', async () => {
    const verifier = { verify: () => Promise.reject(new SetRejected('invalid_key', 'the SET signature cannot be verified')) } as unknown as SetVerifier;
    const sink = { apply: () => 'accepted', publish: () => Promise.resolve(), forget: () => undefined, defer: () => undefined, isClosed: () => false } as unknown as SetSink;
    const pending = { count: 0 };
    const metrics = newMetrics();
    const server = createServer((req, res) => handleSetPush(req, res, { verifier, sink, metrics, logger, pending, maxPendingPushes: 2, bodyTimeoutMs: 300 }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const slow = await Promise.all(
      Array.from({ length: 5 }, () => new Promise<{ got: () => string; closed: () => boolean }>((resolve) => {
        let got = '';
        let closed = false;
        const sock = connect(port, '127.0.0.1', () => {
          sock.write(`POST ${PUSH} HTTP/1.1\r\nHost: a\r\nContent-Type: application/secevent+jwt\r\nContent-Length: 60000\r\n\r\na`);
          resolve({ got: () => got, closed: () => closed });
        });
        sock.on('data', (c: Buffer) => (got += c.toString()));
        sock.on('close', () => (closed = true));
        sock.on('error', () => undefined);
      })),
    );
    try {
      // A genuine push is read and verified while the slow ones wait (here: rejected, 400, not 503).
      const genuine = await raw(`http://127.0.0.1:${port}`, { method: 'POST', path: PUSH, headers: { 'content-type': 'application/secevent+jwt' }, body: 'a.b.c' });
      expect(genuine.status).toBe(400);
      await eventually(() => slow.every((c) => c.closed()), 3000);
      expect(slow.every((c) => /^HTTP\/1\.1 408 /.test(c.got()))).toBe(true);
      expect(pending.count).toBe(0);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
