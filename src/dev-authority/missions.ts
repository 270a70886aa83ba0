/**
 * Missions and their lifecycle (mission-contracts.md section 1, the drafts' state machine).
 *
 * The store is synchronous and does no I/O: every change returns a `Transition`, which the caller
 * turns into lifecycle SETs. Deadlines (`expires_at`, `suspend_until`) are applied lazily on every
 * read and by a periodic sweep; those transitions go to `onDeadline`, since no caller awaits them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { authorityHash, type AuthorityEntry } from './authority.js';

export type MissionState = 'active' | 'suspended' | 'revoked' | 'expired' | 'completed' | 'superseded' | 'cascaded';
export type OnExpiry = 'resume' | 'revoke';
export type MissionEvent = 'suspend' | 'resume' | 'revoke' | 'complete' | 'expire' | 'supersede' | 'cascade';

export interface Mission {
  readonly id: string;
  readonly issuer: string;
  readonly subject: string;
  readonly client_id: string;
  readonly purpose: string;
  readonly authorization_details: readonly AuthorityEntry[];
  readonly authority_hash: string;
  readonly state: MissionState;
  /** Strictly monotonic: 1 at approval, +1 on every transition or authority change. */
  readonly version: number;
  readonly created_at: string;
  readonly committed_at: string;
  readonly expires_at: string;
  readonly suspend_until?: string;
  readonly on_expiry?: OnExpiry;
  readonly successor?: string;
  /** The AAuth reference this Mission answers to (approver = this authority). */
  readonly aauth: { readonly approver: string; readonly s256: string };
}

export interface Transition {
  readonly mission: Mission;
  /** null on approval. */
  readonly prior_state: MissionState | null;
  readonly authority_changed: boolean;
}

export class MissionError extends Error {
  override readonly name = 'MissionError';
  constructor(readonly code: 'not_found' | 'conflict' | 'invalid_request', message: string) {
    super(message);
  }
}

/** Legal sources of each event; anything else is a 409. */
const FROM: Readonly<Record<MissionEvent, readonly MissionState[]>> = {
  suspend: ['active'],
  resume: ['suspended'],
  revoke: ['active', 'suspended'],
  complete: ['active', 'suspended'],
  expire: ['active', 'suspended'],
  supersede: ['active'],
  cascade: ['active', 'suspended'],
};
const TO: Readonly<Record<MissionEvent, MissionState>> = {
  suspend: 'suspended',
  resume: 'active',
  revoke: 'revoked',
  complete: 'completed',
  expire: 'expired',
  supersede: 'superseded',
  cascade: 'cascaded',
};

export interface MissionInput {
  readonly subject: string;
  readonly client_id: string;
  readonly purpose: string;
  readonly authorization_details: readonly AuthorityEntry[];
  /** Epoch seconds. */
  readonly expiresAt: number;
}

export interface SuspendOptions {
  /** Epoch seconds. */
  readonly suspendUntil?: number | undefined;
  readonly onExpiry?: OnExpiry | undefined;
  readonly successor?: string | undefined;
}

interface Record_ {
  m: Mission;
  expiresAt: number;
  suspendUntil: number | null;
}

const MAX_MISSIONS = 100_000;

export const iso = (epochSeconds: number): string => new Date(epochSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

export class MissionStore {
  private readonly byId = new Map<string, Record_>();
  private readonly byS256 = new Map<string, string>();
  onDeadline: (t: Transition) => void = () => {};

  constructor(private readonly issuer: string, private readonly now: () => number) {}

  create(input: MissionInput): Transition {
    if (this.byId.size >= MAX_MISSIONS) throw new MissionError('conflict', 'too many missions');
    const nowS = this.nowS();
    if (input.expiresAt <= nowS) throw new MissionError('invalid_request', 'expires_at must be in the future');
    const id = `msn_${randomBytes(24).toString('base64url')}`;
    const created = iso(nowS);
    // The AAuth mission blob is modeled as the JSON bytes of the approval record; their SHA-256 is
    // the `s256` an AAuth reference (`mission: {approver, s256}`, `mission_s256`) carries.
    const blob = JSON.stringify({ approver: this.issuer, id, purpose: input.purpose, subject: input.subject, created_at: created });
    const s256 = createHash('sha256').update(blob).digest('base64url');
    const m: Mission = {
      id,
      issuer: this.issuer,
      subject: input.subject,
      client_id: input.client_id,
      purpose: input.purpose,
      authorization_details: input.authorization_details,
      authority_hash: authorityHash(this.issuer, input.authorization_details),
      state: 'active',
      version: 1,
      created_at: created,
      committed_at: created,
      expires_at: iso(input.expiresAt),
      aauth: { approver: this.issuer, s256 },
    };
    this.byId.set(id, { m, expiresAt: input.expiresAt, suspendUntil: null });
    this.byS256.set(s256, id);
    return { mission: m, prior_state: null, authority_changed: false };
  }

  /** The Mission after applying any deadline that has passed. */
  get(id: string): Mission | undefined {
    const r = this.byId.get(id);
    if (r === undefined) return undefined;
    this.settle(r);
    return r.m;
  }

  getByS256(s256: string): Mission | undefined {
    const id = this.byS256.get(s256);
    return id === undefined ? undefined : this.get(id);
  }

  list(): Mission[] {
    return [...this.byId.keys()].map((id) => this.get(id)).filter((m): m is Mission => m !== undefined);
  }

  apply(id: string, event: MissionEvent, opts: SuspendOptions = {}): Transition {
    const r = this.require(id);
    const prior = r.m.state;
    if (!FROM[event].includes(prior)) {
      throw new MissionError('conflict', `cannot ${event} a Mission that is ${prior}`);
    }
    const nowS = this.nowS();
    let extra: Partial<Mission> = {};
    r.suspendUntil = null;
    if (event === 'suspend') {
      if (opts.suspendUntil !== undefined) {
        if (opts.suspendUntil <= nowS) throw new MissionError('invalid_request', 'suspend_until must be in the future');
        r.suspendUntil = opts.suspendUntil;
        extra = { suspend_until: iso(opts.suspendUntil), on_expiry: opts.onExpiry ?? 'resume' };
      } else if (opts.onExpiry !== undefined) {
        throw new MissionError('invalid_request', 'on_expiry needs suspend_until');
      }
    }
    if (event === 'supersede' && opts.successor !== undefined) extra = { successor: opts.successor };
    if (event === 'expire') {
      r.expiresAt = Math.min(r.expiresAt, nowS);
      extra = { expires_at: iso(r.expiresAt) };
    }
    return this.commit(r, TO[event], extra, false);
  }

  /** Replaces the Authority Set (the caller checked that it narrows); state is unchanged. */
  changeAuthority(id: string, entries: readonly AuthorityEntry[]): Transition {
    const r = this.require(id);
    if (r.m.state !== 'active' && r.m.state !== 'suspended') {
      throw new MissionError('conflict', `cannot change the authority of a Mission that is ${r.m.state}`);
    }
    const keep: Partial<Mission> = r.m.suspend_until === undefined ? {} : { suspend_until: r.m.suspend_until, ...(r.m.on_expiry ? { on_expiry: r.m.on_expiry } : {}) };
    return this.commit(r, r.m.state, { ...keep, authorization_details: entries, authority_hash: authorityHash(this.issuer, entries) }, true);
  }

  /** Applies passed deadlines to every Mission (called by the sweep timer). */
  sweep(): void {
    for (const r of this.byId.values()) this.settle(r);
  }

  private settle(r: Record_): void {
    if (r.m.state !== 'active' && r.m.state !== 'suspended') return;
    const nowS = this.nowS();
    let t: Transition | undefined;
    if (nowS >= r.expiresAt) {
      r.suspendUntil = null;
      t = this.commit(r, 'expired', {}, false);
    } else if (r.m.state === 'suspended' && r.suspendUntil !== null && nowS >= r.suspendUntil) {
      const to = r.m.on_expiry === 'revoke' ? 'revoked' : 'active';
      r.suspendUntil = null;
      t = this.commit(r, to, {}, false);
    }
    if (t !== undefined) this.onDeadline(t);
  }

  private commit(r: Record_, to: MissionState, extra: Partial<Mission>, authorityChanged: boolean): Transition {
    const prior = r.m.state;
    // Conditional members (suspend_until, on_expiry, successor) never leak into the next state.
    const { suspend_until: _s, on_expiry: _o, successor: _x, ...base } = r.m;
    r.m = { ...base, ...extra, state: to, version: r.m.version + 1, committed_at: iso(this.nowS()) };
    return { mission: r.m, prior_state: prior, authority_changed: authorityChanged };
  }

  private require(id: string): Record_ {
    const r = this.byId.get(id);
    if (r === undefined) throw new MissionError('not_found', 'unknown Mission');
    this.settle(r);
    return r;
  }

  private nowS(): number {
    return Math.floor(this.now() / 1000);
  }
}
