/** MissionHolds: exchanges held under a Mission are cut when it stops being active (unit). */
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { MissionHolds, SWEEP_MS, type CutCause, type Holder, type Review, type Ticket } from '../../src/mission/holds.js';
import { refKey } from '../../src/mission/key.js';
import { newRequestContext, type MissionReference, type MissionView, type RequestContext } from '../../src/pipeline/context.js';

const ISSUER = 'https://mas.example.com';

function holder(): Holder & { cuts: number } {
  const h = { cuts: 0, cut: () => void h.cuts++ };
  return h;
}

function ticket(id: string, opts: { expiresAt?: number | null; admittedAt?: number; review?: Review | null; audience?: string; more?: Ticket[] } = {}): Ticket {
  return {
    key: `${ISSUER}\n${id}`,
    ref: { form: 'claim', issuer: ISSUER, id, s256: null, authorityHash: null },
    audience: opts.audience ?? 'https://api.example.com',
    issuer: ISSUER,
    id,
    expiresAt: opts.expiresAt ?? null,
    admittedAt: opts.admittedAt ?? performance.now(),
    more: opts.more ?? null,
    review: opts.review ?? null,
  };
}

/** A Mission view whose authority grants `actions`. */
function granting(...actions: string[]): MissionView {
  return { id: 'msn_a', issuer: ISSUER, state: 'active', version: 2, authority: [{ type: 'mission_resource_access', resource: 'https://api.example.com', actions }] } as unknown as MissionView;
}

/** A review as the pipeline's: the request's action must still be granted. */
function needs(action: string): Review {
  return (view) => (view.authority ?? []).some((e) => e.actions.includes(action));
}

let holds: MissionHolds;
let counted: [CutCause, number][];
let clock: number;

function make(): MissionHolds {
  counted = [];
  clock = Date.now();
  holds = new MissionHolds({ logger: pino({ level: 'silent' }), counted: (c, n) => void counted.push([c, n]), now: () => clock });
  return holds;
}

afterEach(() => holds?.close());

describe('MissionHolds', () => {
  it('cuts every exchange held under the Mission, and only those', () => {
    make();
    const a1 = holder();
    const a2 = holder();
    const b = holder();
    const ta = ticket('msn_a');
    expect(holds.hold(ta, a1)).toBe(true);
    expect(holds.hold(ta, a2)).toBe(true);
    expect(holds.hold(ticket('msn_b'), b)).toBe(true);
    expect(holds.size).toBe(3);
    expect(holds.cut(ta.key, 'revoked')).toBe(2);
    expect([a1.cuts, a2.cuts, b.cuts]).toEqual([1, 1, 0]);
    expect(counted).toEqual([['state_change', 2]]);
    expect(holds.size).toBe(1);
    // A second change cuts nothing more.
    expect(holds.cut(ta.key, 'revoked')).toBe(0);
    expect(a1.cuts).toBe(1);
  });

  it('a released exchange is not cut', () => {
    make();
    const h = holder();
    const t = ticket('msn_a');
    holds.hold(t, h);
    holds.release(t, h);
    expect(holds.size).toBe(0);
    expect(holds.cut(t.key, 'suspended')).toBe(0);
    expect(h.cuts).toBe(0);
  });

  it('refuses to hold a response of a request admitted before its Mission was cut', () => {
    make();
    const before = ticket('msn_a', { admittedAt: performance.now() - 1000 });
    holds.cut(before.key, 'revoked');
    expect(holds.hold(before, holder())).toBe(false);
    // A request admitted after the cut (the Mission active again, e.g. resumed) is held.
    expect(holds.hold(ticket('msn_a', { admittedAt: performance.now() + 1 }), holder())).toBe(true);
  });

  it('a Mission active again (reinstate) lets a response start, whenever its request was admitted', () => {
    make();
    const before = ticket('msn_a', { admittedAt: performance.now() - 1000 });
    holds.cut(before.key, 'suspended');
    expect(holds.hold(before, holder())).toBe(false);
    holds.reinstate(before.key);
    expect(holds.hold(before, holder())).toBe(true);
  });

  it('past the cuts it remembers, it forgets the oldest and refuses every response of a request admitted before that cut', () => {
    make();
    const admitted = performance.now() - 1;
    const mine = ticket('msn_mine', { admittedAt: admitted });
    holds.cut(mine.key, 'revoked');
    for (let i = 0; i < 10_000; i++) holds.cut(`${ISSUER}\nmsn_other_${i}`, 'revoked');
    // msn_mine's cut is forgotten, yet its late response is still refused (fail closed) ...
    expect(holds.hold(mine, holder())).toBe(false);
    // ... as is any other request admitted before it; one admitted after every cut is held.
    expect(holds.hold(ticket('msn_unrelated', { admittedAt: admitted }), holder())).toBe(false);
    expect(holds.hold(ticket('msn_unrelated', { admittedAt: performance.now() + 1 }), holder())).toBe(true);
  });

  it('a response held under several Missions (an MCP batch) is cut when any of them ends, once', () => {
    make();
    const a = ticket('msn_a');
    const t: Ticket = { ...a, more: [ticket('msn_b')] };
    // Like an exchange: a cut one leaves every group it was in.
    const h = { cuts: 0, cut: () => (h.cuts++, holds.release(t, h)) };
    expect(holds.hold(t, h)).toBe(true);
    expect(holds.size).toBe(1);
    expect(holds.cut(`${ISSUER}\nmsn_b`, 'revoked')).toBe(1);
    expect(holds.cut(a.key, 'revoked')).toBe(0);
    expect(h.cuts).toBe(1);
    expect(holds.size).toBe(0);
    // A late response under the batch is refused when any one of its Missions was cut.
    const late: Ticket = { ...ticket('msn_c', { admittedAt: performance.now() - 1000 }), more: [ticket('msn_b', { admittedAt: performance.now() - 1000 })] };
    expect(holds.hold(late, holder())).toBe(false);
  });

  it('a refused response is counted like a cut, by cause', () => {
    make();
    const t = ticket('msn_a', { admittedAt: performance.now() - 1000 });
    holds.cut(t.key, 'revoked');
    counted = [];
    expect(holds.hold(t, holder())).toBe(false);
    expect(holds.hold(ticket('msn_b', { expiresAt: clock - 1 }), holder())).toBe(false);
    expect(counted).toEqual([
      ['state_change', 1],
      ['expired', 1],
    ]);
  });

  it('refuses to hold under a Mission whose expires_at has passed', () => {
    make();
    expect(holds.hold(ticket('msn_a', { expiresAt: clock - 1 }), holder())).toBe(false);
    expect(holds.hold(ticket('msn_a', { expiresAt: clock + 60_000 }), holder())).toBe(true);
  });

  it("cuts a Mission's exchanges once its expires_at passes, with no event", async () => {
    make();
    const soon = holder();
    const later = holder();
    const never = holder();
    holds.hold(ticket('msn_soon', { expiresAt: clock + 1000 }), soon);
    holds.hold(ticket('msn_later', { expiresAt: clock + 60_000 }), later);
    holds.hold(ticket('msn_never'), never);
    await new Promise((r) => setTimeout(r, SWEEP_MS * 2));
    expect(soon.cuts).toBe(0);
    clock += 1000;
    await new Promise((r) => setTimeout(r, SWEEP_MS * 2));
    expect([soon.cuts, later.cuts, never.cuts]).toEqual([1, 0, 0]);
    expect(counted).toEqual([['expired', 1]]);
  });

  it('one failing cut does not keep the others open', () => {
    make();
    const bad: Holder = {
      cut: () => {
        throw new Error('socket gone');
      },
    };
    const good = holder();
    const t = ticket('msn_a');
    holds.hold(t, bad);
    holds.hold(t, good);
    expect(holds.cut(t.key, 'revoked')).toBe(2);
    expect(good.cuts).toBe(1);
  });

  it('tickets: none without an established Mission; keyed like the state cache', () => {
    make();
    const ctx = newRequestContext({ id: 'dec_1', started: 5, req: {} as RequestContext['req'], res: {} as RequestContext['res'], method: 'GET', path: '/', search: '', clientIp: '', audience: 'https://api.example.com' });
    expect(holds.ticket(ctx)).toBeNull();
    const ref: MissionReference = { form: 'claim', id: 'msn_a', issuer: ISSUER, s256: null, authorityHash: null };
    ctx.missionRef = ref;
    ctx.mission = { id: 'msn_a', issuer: ISSUER, state: 'active', version: 1, expiresAt: 1_900_000_000 } as MissionView;
    expect(holds.ticket(ctx)).toEqual({ key: refKey(ref), ref, audience: 'https://api.example.com', issuer: ISSUER, id: 'msn_a', expiresAt: 1_900_000_000_000, admittedAt: 5, more: null, review: null });
    const review = needs('events.read');
    expect(holds.ticket(ctx, review)?.review).toBe(review);
  });

  describe('review: the Mission read again while active, with other authority', () => {
    it('cuts the exchanges whose request it no longer permits, and only those', () => {
      make();
      const events = holder();
      const feed = holder();
      const unreviewed = holder();
      const other = holder();
      holds.hold(ticket('msn_a', { review: needs('events.read') }), events);
      holds.hold(ticket('msn_a', { review: needs('feed.read') }), feed);
      holds.hold(ticket('msn_a'), unreviewed); // e.g. an MCP GET stream: no action to decide again
      holds.hold(ticket('msn_b', { review: needs('feed.read') }), other);
      expect(holds.review(`${ISSUER}\nmsn_a`, 'https://api.example.com', granting('events.read'))).toBe(1);
      expect([events.cuts, feed.cuts, unreviewed.cuts, other.cuts]).toEqual([0, 1, 0, 0]);
      expect(counted).toEqual([['authority_changed', 1]]);
      expect(holds.size).toBe(3);
      // Nothing more to cut under the same authority; the Mission is not remembered as cut.
      expect(holds.review(`${ISSUER}\nmsn_a`, 'https://api.example.com', granting('events.read'))).toBe(0);
      expect(holds.hold(ticket('msn_a', { admittedAt: performance.now() - 1000 }), holder())).toBe(true);
    });

    it('reviews only the exchanges of the audience the authority was read for', () => {
      make();
      const api = holder();
      const mcp = holder();
      holds.hold(ticket('msn_a', { review: needs('feed.read') }), api);
      holds.hold(ticket('msn_a', { review: needs('feed.read'), audience: 'https://api.example.com/mcp' }), mcp);
      expect(holds.review(`${ISSUER}\nmsn_a`, 'https://api.example.com/mcp', granting('events.read'))).toBe(1);
      expect([api.cuts, mcp.cuts]).toEqual([0, 1]);
      // The re-read lists every audience held, so each one's authority is read again.
      expect(holds.held().map((h) => h.audience)).toEqual(['https://api.example.com']);
    });

    it('lists one re-read per audience held under a Mission', () => {
      make();
      holds.hold(ticket('msn_a'), holder());
      holds.hold(ticket('msn_a'), holder());
      holds.hold(ticket('msn_a', { audience: 'https://api.example.com/mcp' }), holder());
      expect(holds.held().map((h) => h.audience)).toEqual(['https://api.example.com', 'https://api.example.com/mcp']);
    });

    it('a review that fails cuts its exchange (fail closed), and the others are still reviewed', () => {
      make();
      const broken = holder();
      const fine = holder();
      holds.hold(ticket('msn_a', { review: () => { throw new Error('boom'); } }), broken);
      holds.hold(ticket('msn_a', { review: needs('events.read') }), fine);
      expect(holds.review(`${ISSUER}\nmsn_a`, 'https://api.example.com', granting('events.read'))).toBe(1);
      expect([broken.cuts, fine.cuts]).toEqual([1, 0]);
    });

    it('an exchange held under a second key (an AAuth governance id) is reviewed under that key too, and cut once', () => {
      make();
      const h = holder();
      const byId = ticket('msn_gov', { review: needs('feed.read') });
      const root = ticket('msn_s256', { review: needs('feed.read'), more: [byId] });
      holds.hold(root, h);
      expect(holds.review(byId.key, 'https://api.example.com', granting('events.read'))).toBe(1);
      expect(h.cuts).toBe(1);
      expect(holds.size).toBe(0);
      expect(holds.review(root.key, 'https://api.example.com', granting('events.read'))).toBe(0);
      expect(h.cuts).toBe(1);
    });
  });
});
