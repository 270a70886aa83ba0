/**
 * Mission lifecycle events: SETs (RFC 8417) carrying
 * `https://schemas.karlmcguinness.com/mission/lifecycle-change` (draft-mcguinness-oauth-mission-signals),
 * delivered by RFC 8935 push or RFC 8936 poll. This module only verifies a SET and reads it into a
 * MissionChange; applying it is the state cache's job (state.ts).
 *
 * Checks: `typ` secevent+jwt, `iss` a trusted Mission issuer, signature from that issuer's keys,
 * `aud` exactly `mission.events.audience` (default `resource`), `iat`, `jti`, and the event's
 * Mission issued by the SET's own `iss` (an issuer never speaks for another issuer's Missions).
 */
import { decodeJwt, errors as joseErrors, jwtVerify, type JWSHeaderParameters, type JWTPayload } from 'jose';
import type { KeyObject } from 'node:crypto';
import { UnknownKey } from '../auth/keys.js';
import type { KeyResolver } from '../auth/types.js';
import { Denial } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { MissionChange } from './types.js';
import { MAX_ISSUER_LENGTH, validId } from './key.js';
import { timeOf } from './status.js';
import { isObject } from '../values.js';

export const LIFECYCLE_EVENT = 'https://schemas.karlmcguinness.com/mission/lifecycle-change';
/** SSF stream verification event: a heartbeat for liveness, nothing to apply. */
export const SSF_VERIFICATION_EVENT = 'https://schemas.openid.net/secevent/ssf/event-type/verification';
export const SET_JWT_TYPE = 'secevent+jwt';
/** SETs are small; anything bigger is refused before parsing. */
export const MAX_SET_BYTES = 64 * 1024;
const CLOCK_SKEW_S = 30;
/**
 * A SET signed with a key not in the issuer's key set refetches it once the last fetch is this old
 * (waiting for that if need be), instead of the token refetch cooldown: a revocation signed with a
 * key the authority just rotated to is applied, not refused and dropped. At most one fetch per
 * issuer per this interval, whatever is pushed.
 */
const SET_KEY_REFETCH_MS = 1_000;
/** SETs waiting for their issuer's keys to be fetched again, at once (see SetVerifier.resolveKey). */
export const MAX_KEY_WAITS = 64;
const MAX_JTI_LENGTH = 256;
const DEFAULT_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'];

/** `mission_gateway_events_total{result}` values for one SET or change. */
export type EventResult = 'accepted' | 'gap' | 'duplicate' | 'stale' | 'uncached' | 'heartbeat' | 'ignored' | 'rejected';

/** RFC 8935 section 2.3 error codes. */
export type SetErrorCode = 'invalid_request' | 'invalid_key' | 'invalid_issuer' | 'invalid_audience' | 'authentication_failed' | 'access_denied';

export class SetRejected extends Error {
  readonly err: SetErrorCode;
  /**
   * Not the SET's fault, and likely to pass later: the issuer's keys could not be read, or the SET
   * is signed with a key the gateway does not have and could not refetch just now. A
   * push is answered 503 so the transmitter retries, and a polled SET is neither acknowledged nor
   * reported, so it is delivered again: reporting it would make the transmitter drop it.
   */
  readonly transient: boolean;
  /**
   * The issuer, when the SET was refused after its signature verified: only that issuer could have
   * sent it, so the refusal may lose a real lifecycle change (logged at warn). Null when refused
   * before: it may be anyone's junk (logged at debug).
   */
  signedBy: string | null = null;
  constructor(err: SetErrorCode, description: string, cause?: unknown, transient = false) {
    super(description, cause === undefined ? undefined : { cause });
    this.name = 'SetRejected';
    this.err = err;
    this.transient = transient;
  }
}

export type VerifiedSet =
  | { readonly kind: 'lifecycle'; readonly issuer: string; readonly jti: string; readonly change: MissionChange }
  | { readonly kind: 'heartbeat'; readonly issuer: string; readonly jti: string }
  | { readonly kind: 'other'; readonly issuer: string; readonly jti: string };

export class SetVerifier {
  private readonly trusted: ReadonlySet<string>;
  private readonly algorithms: ReadonlyMap<string, string[]>;
  readonly audience: string;
  private keyWaits = 0;

  constructor(
    config: Config,
    trusted: ReadonlySet<string>,
    private readonly keys: KeyResolver,
    private readonly now: () => number,
  ) {
    this.trusted = trusted;
    this.algorithms = new Map(config.issuers.map((i) => [i.issuer, [...i.algorithms]]));
    this.audience = config.mission.events.audience ?? config.resource;
  }

  /**
   * The issuer's key for a SET's header. A `kid` the gateway does not have waits for a refetch (at
   * most one per SET_KEY_REFETCH_MS) before its signature can be checked, and anyone can send such
   * a SET: no more than MAX_KEY_WAITS wait at once, the rest are answered 503 at once. Waiting, they
   * would hold the receiver's slots (MAX_PENDING_PUSHES), and a genuine revocation, signed with a
   * key the gateway has and verified at once, would find none free (r14c 1).
   */
  private resolveKey(iss: string, header: JWSHeaderParameters): KeyObject | Promise<KeyObject> {
    const key = this.keys.resolve(iss, header, SET_KEY_REFETCH_MS);
    if (!(key instanceof Promise)) return key;
    if (this.keyWaits >= MAX_KEY_WAITS) {
      key.catch(() => undefined); // the refetch it asked for still happens; its outcome is not this SET's
      throw new SetRejected('invalid_key', "too many SETs are waiting for the issuer's keys", undefined, true);
    }
    this.keyWaits++;
    return key.finally(() => this.keyWaits--);
  }

  /** Verifies one compact SET. Rejects with SetRejected (its `err` is the RFC 8935 code). */
  async verify(jwt: string): Promise<VerifiedSet> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(jwt);
    } catch {
      throw new SetRejected('invalid_request', 'the SET does not parse');
    }
    const iss = unverified.iss;
    if (typeof iss !== 'string' || !this.trusted.has(iss)) throw new SetRejected('invalid_issuer', 'the SET issuer is not trusted');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(jwt, (header) => this.resolveKey(iss, header), {
        typ: SET_JWT_TYPE,
        algorithms: this.algorithms.get(iss) ?? DEFAULT_ALGORITHMS,
        issuer: iss,
        // The clock claims are checked below, once the event is read: they cannot refuse a
        // Mission's end (r17a 2).
        clockTolerance: Number.MAX_SAFE_INTEGER,
        requiredClaims: ['iat', 'jti'],
      }));
    } catch (err) {
      if (err instanceof SetRejected) throw err;
      if (err instanceof Denial && (err.code === 'keys_unavailable' || (err.cause instanceof UnknownKey && !err.cause.current))) {
        throw new SetRejected('invalid_key', "the SET issuer's signing key is not available yet", err, true);
      }
      if (err instanceof joseErrors.JWSSignatureVerificationFailed || err instanceof joseErrors.JOSEAlgNotAllowed || !(err instanceof joseErrors.JOSEError)) {
        throw new SetRejected('invalid_key', 'the SET signature cannot be verified', err);
      }
      throw new SetRejected('invalid_request', 'the SET is not valid', err);
    }
    try {
      return this.read(payload, iss, jwt);
    } catch (err) {
      if (err instanceof SetRejected) err.signedBy = iss;
      throw err;
    }
  }

  /** The events of a SET whose signature verified. */
  private read(payload: JWTPayload, iss: string, jwt: string): VerifiedSet {
    // `aud` exact: the string itself, or an array holding it (RFC 7519 section 4.1.3).
    const aud = payload.aud;
    if (!(aud === this.audience || (Array.isArray(aud) && aud.includes(this.audience)))) throw new SetRejected('invalid_audience', 'the SET is not addressed to this resource');
    const jti = payload.jti;
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) throw new SetRejected('invalid_request', 'the SET jti is invalid');
    const events = payload['events'];
    if (!isObject(events)) throw new SetRejected('invalid_request', 'the SET carries no events');

    const body = events[LIFECYCLE_EVENT];
    if (body !== undefined) {
      const change = readLifecycle(body, iss, jti, jwt);
      // An authentic SET that ends or suspends a Mission is applied whatever its clock claims say (a
      // transmitter's fast clock, a push retried past `exp`): applying it can only deny, and a 400
      // would lose it (transmitters do not resend after one, RFC 8935 section 2.4). Versions and jtis
      // still keep an old one from undoing anything newer.
      if (change.state === 'active') this.checkClock(payload);
      return { kind: 'lifecycle', issuer: iss, jti, change };
    }
    this.checkClock(payload);
    if (events[SSF_VERIFICATION_EVENT] !== undefined) return { kind: 'heartbeat', issuer: iss, jti };
    return { kind: 'other', issuer: iss, jti };
  }

  /** RFC 7519 sections 4.1.4-4.1.6 with CLOCK_SKEW_S: not expired, valid already, not issued in the future. */
  private checkClock(payload: JWTPayload): void {
    const now = this.now() / 1000;
    if (payload.iat! > now + CLOCK_SKEW_S) throw new SetRejected('invalid_request', 'the SET is issued in the future');
    if (typeof payload.exp === 'number' && payload.exp <= now - CLOCK_SKEW_S) throw new SetRejected('invalid_request', 'the SET has expired');
    if (typeof payload.nbf === 'number' && payload.nbf > now + CLOCK_SKEW_S) throw new SetRejected('invalid_request', 'the SET is not valid yet');
  }
}

/** The lifecycle-change body; unknown members are ignored (signals draft). */
function readLifecycle(body: unknown, iss: string, jti: string, set: string): MissionChange {
  if (!isObject(body) || !isObject(body['mission'])) throw new SetRejected('invalid_request', 'the lifecycle event carries no mission');
  const { id, issuer } = body['mission'];
  if (!validId(id)) throw new SetRejected('invalid_request', 'the lifecycle event mission id is invalid');
  if (typeof issuer !== 'string' || issuer.length > MAX_ISSUER_LENGTH) throw new SetRejected('invalid_request', 'the lifecycle event mission issuer is invalid');
  if (issuer !== iss) throw new SetRejected('invalid_issuer', "the SET issuer does not govern this Mission");
  const state = body['state'];
  if (typeof state !== 'string' || state === '') throw new SetRejected('invalid_request', 'the lifecycle event carries no state');
  const version = body['version'];
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) throw new SetRejected('invalid_request', 'the lifecycle event version is invalid');
  let suspendUntil = timeOf(body['suspend_until']);
  let expiresAt = timeOf(body['expires_at']);
  if (Number.isNaN(suspendUntil) || Number.isNaN(expiresAt)) {
    // A Mission that is no longer active stops here whatever its timestamps say: they only bound
    // how long the denial is remembered, and a 400 would lose the revocation (transmitters do not
    // resend after one, RFC 8935 section 2.4). Read as absent. An active event is refused.
    if (state === 'active') throw new SetRejected('invalid_request', 'the lifecycle event carries an invalid timestamp');
    if (Number.isNaN(suspendUntil)) suspendUntil = null;
    if (Number.isNaN(expiresAt)) expiresAt = null;
  }
  // We do not track containment versions: any containment_version rematerializes authority via Status.
  const refetch = body['authority_changed'] === true || body['containment_version'] !== undefined;
  return { issuer, id, state, version, suspendUntil, expiresAt, refetch, jti, set };
}
