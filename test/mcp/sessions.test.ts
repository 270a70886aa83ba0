/**
 * The bounds of McpSessions (src/mcp/sessions.ts), each of which ends a session rather than
 * forgetting it (a forgotten session would escape its Mission's end): idle time, sessions per
 * principal, and what a session keeps of its task-augmented calls for a narrowing's review.
 * The gateway-level behaviour (real SDK upstream, real Mission authority) is in gateway.test.ts.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { MissionHolds } from '../../src/mission/holds.js';
import { refKey } from '../../src/mission/key.js';
import { IDLE_MS, MAX_CALL_BYTES, MAX_CALLS, MAX_PER_PRINCIPAL, MAX_SESSIONS, McpSessions } from '../../src/mcp/sessions.js';
import type { Review } from '../../src/mission/holds.js';
import { principalOf, type RequestContext } from '../../src/pipeline/context.js';
import { context, logger, token } from '../mission/helpers.js';
import { claimRef, view } from './harness.js';

let now = 1_000_000;
const none = (): Review | null => null;
const all: McpSessions[] = [];
afterEach(() => {
  for (const s of all.splice(0)) s.close();
});

function make(): { sessions: McpSessions; holds: MissionHolds; ended: string[] } {
  const holds = new MissionHolds({ logger, counted: () => {}, now: () => now });
  const sessions = new McpSessions(holds, logger, () => now);
  all.push(sessions);
  const ended: string[] = [];
  sessions.terminate = (id) => ended.push(id);
  return { sessions, holds, ended };
}

/** A finished request of `subject` under Mission m1, with a body of `bytes`. */
function request(subject = 'user_1', bytes = 100): RequestContext {
  const ctx = context({ token: token({}, { subject }) });
  ctx.mission = view('m1', null);
  ctx.missionRef = claimRef('m1');
  ctx.body = Buffer.alloc(bytes);
  (ctx as { res: ServerResponse }).res = new EventEmitter() as unknown as ServerResponse;
  return ctx;
}

describe('a request admitted before its Mission was cut (r18a 1, sessions part)', () => {
  it('ends the session it names instead of holding it: the upstream is told, later requests are denied', () => {
    const { sessions, holds, ended } = make();
    const ctx = request();
    (ctx as { started: number }).started = performance.now(); // admitted now
    holds.cut(refKey(claimRef('m1')), 'revoked'); // cut before the request reaches the session
    sessions.use('s', ctx, null, none);
    expect(ended).toEqual(['s']);
    expect(sessions.isEnded('s')).toBe(true);
    expect(sessions.ownerOf('s')).toBeUndefined();
    // Control: admitted after the cut, a request holds its session.
    const later = request();
    (later as { started: number }).started = performance.now() + 1;
    sessions.use('t', later, null, none);
    expect(sessions.isEnded('t')).toBe(false);
  });
});

describe('McpSessions bounds: a session is ended, never just forgotten', () => {
  it('unused for IDLE_MS: ended (upstream told), later requests denied', () => {
    const { sessions, ended } = make();
    sessions.use('a', request(), null, none);
    now += IDLE_MS / 2;
    sessions.use('b', request(), null, none);
    now += IDLE_MS / 2;
    sessions.sweep();
    expect(ended).toEqual(['a']);
    expect(sessions.isEnded('a')).toBe(true);
    expect(sessions.isEnded('b')).toBe(false);
  });

  it('a session bound at a bare initialize and used under no Mission (MAS mode) is not idle (r20a 6)', () => {
    const { sessions, ended } = make();
    const bare = (): RequestContext => {
      const ctx = request();
      ctx.mission = null;
      ctx.missionRef = null;
      return ctx;
    };
    sessions.created('s', bare());
    for (let i = 0; i < 4; i++) {
      now += IDLE_MS / 2;
      sessions.use('s', bare(), null, none);
      sessions.sweep();
    }
    expect(ended).toEqual([]);
    now += IDLE_MS;
    sessions.sweep();
    expect(ended).toEqual(['s']);
    // A session never held here is not made one by such a use.
    sessions.use('unknown', bare(), null, none);
    expect(sessions.ownerOf('unknown')).toBeUndefined();
  });

  it('past MAX_PER_PRINCIPAL sessions of one principal, its oldest is ended; another principal keeps its own', () => {
    const { sessions, ended } = make();
    sessions.use('other', request('user_2'), null, none);
    for (let i = 0; i <= MAX_PER_PRINCIPAL; i++) sessions.use(`s${i}`, request(), null, none);
    expect(ended).toEqual(['s0']);
    expect(sessions.ownerOf('other')).toBeDefined();
  });

  it('a client DELETE ends it here whatever the upstream does; the gateway sends no DELETE of its own', () => {
    const { sessions, holds, ended } = make();
    sessions.use('a', request(), null, none);
    sessions.closedByClient('a');
    expect(sessions.isEnded('a')).toBe(true);
    expect(ended).toEqual([]);
    // Nothing is held for it any more: the Mission's end has nothing to end.
    holds.cut(refKey(claimRef('m1')), 'revoked');
    expect(ended).toEqual([]);
  });

  it('calls past MAX_CALLS requests or MAX_CALL_BYTES are not kept: any narrowing then ends the session', () => {
    const { sessions, holds, ended } = make();
    const permits = () => (): boolean => true;
    for (let i = 0; i < MAX_CALLS; i++) sessions.use('few', request(), null, permits);
    sessions.use('many', request(), null, permits);
    for (let i = 0; i < MAX_CALLS; i++) sessions.use('many', request(), null, permits);
    sessions.use('big', request('user_1', MAX_CALL_BYTES + 1), null, permits);
    holds.review(refKey(claimRef('m1')), 'https://api.example.com', view('m1', []));
    expect(ended.sort()).toEqual(['big', 'many']);
  });

  it("each Mission of a request (MAS mode) is reviewed for its own calls, whichever request made them (r16f F2)", () => {
    const { sessions, holds, ended } = make();
    const both = (): RequestContext => {
      const ctx = request();
      ctx.otherMissions = [{ ref: claimRef('m2'), view: view('m2', null), review: null }];
      return ctx;
    };
    // First a request whose calls ran under m1 only; then one with a call under m2.
    sessions.use('s', both(), null, (key) => (key === refKey(claimRef('m1')) ? () => true : null));
    let m2Permits = true;
    sessions.use('s', both(), null, (key) => (key === refKey(claimRef('m2')) ? () => m2Permits : null));
    holds.review(refKey(claimRef('m1')), 'https://api.example.com', view('m1', []));
    expect(ended).toEqual([]);
    m2Permits = false;
    holds.review(refKey(claimRef('m2')), 'https://api.example.com', view('m2', []));
    expect(ended).toEqual(['s']);
  });

  it('past MAX_SESSIONS held, the least recently used session is ended (a use makes it recent)', () => {
    const { sessions, ended } = make();
    // Spread over principals, so no principal's own bound is what ends one.
    const per = MAX_PER_PRINCIPAL / 2;
    for (let i = 0; i < MAX_SESSIONS; i++) sessions.use(`s${i}`, request(`user_${Math.floor(i / per)}`), null, none);
    expect(ended).toEqual([]);
    sessions.use('s0', request('user_0'), null, none); // s0 is now the most recently used
    sessions.use('new', request('user_new'), null, none);
    expect(ended).toEqual(['s1']);
    expect(sessions.isEnded('s1')).toBe(true);
    expect(sessions.ownerOf('s0')).toBe(sessions.ownerOf('s2'));
    expect(sessions.ownerOf('new')).toBeDefined();
  });

  it('a session is never counted as an open exchange; ending it releases its holds, and its request\'s hold goes when the response closes', () => {
    const { sessions, holds, ended } = make();
    const ctx = request();
    sessions.use('s', ctx, null, none);
    expect(holds.size).toBe(0); // the forwarder counts the exchange; the session's holders are not counted
    expect(holds.held().map((h) => h.key)).toEqual([refKey(claimRef('m1'))]);
    sessions.end('s');
    expect(ended).toEqual(['s']);
    // The request's own hold stays while its response flows...
    expect(holds.held()).toHaveLength(1);
    (ctx.res as unknown as EventEmitter).emit('close');
    // ...and nothing is held once it closed.
    expect(holds.held()).toEqual([]);
    holds.cut(refKey(claimRef('m1')), 'revoked');
    expect(ended).toEqual(['s']);
  });

  it('a session is bound to its creator when the upstream issues it; one who named the id before loses it (r19d 3)', () => {
    const { sessions, holds, ended } = make();
    // user_2 names an id the upstream has not issued yet (a guessable one), even ends it.
    const early = [request('user_2'), request('user_2')];
    sessions.use('sess-2', early[0]!, null, none);
    expect(sessions.ownerOf('sess-2')).toBeDefined();
    const bob = sessions.ownerOf('sess-2');
    sessions.closedByClient('sess-2');
    sessions.use('sess-3', early[1]!, null, none);
    for (const ctx of early) (ctx.res as unknown as EventEmitter).emit('close'); // the upstream answered them 404
    // The upstream then issues both to user_1's initialize.
    sessions.created('sess-2', request('user_1'));
    sessions.created('sess-3', request('user_1'));
    for (const id of ['sess-2', 'sess-3']) {
      expect(sessions.isEnded(id)).toBe(false);
      expect(sessions.ownerOf(id)).not.toBe(bob);
      expect(sessions.ownerOf(id)).toBeDefined();
    }
    expect(ended).toEqual([]);
    // user_2's session holds are released with it; the creator's requests hold it from their first use.
    expect(holds.held()).toEqual([]);
    // A request under no Mission (MAS mode's bare initialize) binds it to its principal (r19e 6);
    // one with no token binds nothing.
    const bare = request('user_3');
    bare.mission = null;
    sessions.created('sess-4', bare);
    expect(sessions.ownerOf('sess-4')).toBe(principalOf(bare));
    const anonymous = request('user_4');
    anonymous.token = null;
    sessions.created('sess-5', anonymous);
    expect(sessions.ownerOf('sess-5')).toBeUndefined();
  });

  it('a client DELETE of a session never held here is not remembered (ids sent only to fill memory)', () => {
    const { sessions } = make();
    sessions.closedByClient('never-seen');
    expect(sessions.isEnded('never-seen')).toBe(false);
  });
});
