/**
 * The in-process Missions API: every change is committed in the store, then its lifecycle SETs are
 * delivered before the call resolves, so a caller (test, admin request) that awaits it knows every
 * push receiver has seen the change.
 */
import { AuthorityInputError, narrows, parseEntries, type AuthorityEntry } from './authority.js';
import { MissionError, type Mission, type MissionEvent, type MissionStore, type OnExpiry, type Transition } from './missions.js';
import type { Delivery, Transmitter } from './ssf.js';

export interface MissionCreate {
  readonly subject: string;
  readonly client_id: string;
  readonly purpose: string;
  readonly authorization_details: readonly unknown[];
  /** RFC 3339 timestamp or epoch seconds; default now + the authority's Mission lifetime. */
  readonly expires_at?: string | number | undefined;
}

export interface SuspendInput {
  /** RFC 3339 timestamp or epoch seconds. */
  readonly suspend_until?: string | number | undefined;
  readonly on_expiry?: OnExpiry | undefined;
}

/** A Mission as it stands after the change, with the push deliveries of that change. */
export type MissionResult = Mission & { readonly deliveries: readonly Delivery[] };

export interface MissionsApi {
  create(input: MissionCreate): Promise<MissionResult>;
  get(id: string): Mission | undefined;
  list(): Mission[];
  suspend(id: string, input?: SuspendInput): Promise<MissionResult>;
  resume(id: string): Promise<MissionResult>;
  revoke(id: string): Promise<MissionResult>;
  complete(id: string): Promise<MissionResult>;
  /** Forces the `expires_at` transition now (otherwise it happens when the time comes). */
  expire(id: string): Promise<MissionResult>;
  supersede(id: string, successor?: string): Promise<MissionResult>;
  cascade(id: string): Promise<MissionResult>;
  /** Narrows the Authority Set (409/400 when it would widen); emits `authority_changed`. */
  changeAuthority(id: string, entries: readonly unknown[]): Promise<MissionResult>;
}

/** Epoch seconds from an RFC 3339 string or a number of seconds. */
export function toEpochSeconds(value: string | number, name: string): number {
  const ms = typeof value === 'number' ? value * 1000 : Date.parse(value);
  if (!Number.isFinite(ms)) throw new MissionError('invalid_request', `${name} must be an RFC 3339 timestamp or epoch seconds`);
  return Math.floor(ms / 1000);
}

const nonEmpty = (v: unknown, name: string): string => {
  if (typeof v !== 'string' || v.length === 0) throw new MissionError('invalid_request', `${name} must be a non-empty string`);
  return v;
};

function entries(input: unknown): AuthorityEntry[] {
  try {
    return parseEntries(input);
  } catch (e) {
    if (e instanceof AuthorityInputError) throw new MissionError('invalid_request', e.message);
    throw e;
  }
}

export function missionsApi(store: MissionStore, ssf: Transmitter, now: () => number, missionTtlSeconds: number): MissionsApi {
  const deliver = async (t: Transition): Promise<MissionResult> => ({ ...t.mission, deliveries: await ssf.publish(t) });
  const event = async (id: string, e: MissionEvent, successor?: string): Promise<MissionResult> =>
    deliver(store.apply(id, e, successor === undefined ? {} : { successor }));

  return {
    create: async (input) => {
      const expiresAt = input.expires_at === undefined ? Math.floor(now() / 1000) + missionTtlSeconds : toEpochSeconds(input.expires_at, 'expires_at');
      return deliver(store.create({
        subject: nonEmpty(input.subject, 'subject'),
        client_id: nonEmpty(input.client_id, 'client_id'),
        purpose: nonEmpty(input.purpose, 'purpose'),
        authorization_details: entries(input.authorization_details),
        expiresAt,
      }));
    },
    get: (id) => store.get(id),
    list: () => store.list(),
    suspend: async (id, input = {}) => {
      if (input.on_expiry !== undefined && input.on_expiry !== 'resume' && input.on_expiry !== 'revoke') {
        throw new MissionError('invalid_request', 'on_expiry must be resume or revoke');
      }
      return deliver(store.apply(id, 'suspend', {
        suspendUntil: input.suspend_until === undefined ? undefined : toEpochSeconds(input.suspend_until, 'suspend_until'),
        onExpiry: input.on_expiry,
      }));
    },
    resume: (id) => event(id, 'resume'),
    revoke: (id) => event(id, 'revoke'),
    complete: (id) => event(id, 'complete'),
    expire: (id) => event(id, 'expire'),
    supersede: (id, successor) => event(id, 'supersede', successor),
    cascade: (id) => event(id, 'cascade'),
    changeAuthority: async (id, input) => {
      const current = store.get(id);
      if (current === undefined) throw new MissionError('not_found', 'unknown Mission');
      const next = entries(input);
      if (!narrows(current.authorization_details, next)) throw new MissionError('invalid_request', 'authority may only narrow');
      return deliver(store.changeAuthority(id, next));
    },
  };
}
