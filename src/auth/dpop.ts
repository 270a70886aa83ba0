/**
 * DPoP stage (RFC 9449): proof-of-possession of the key the access token is bound to.
 *
 * `verifyDpopProof` performs every step of RFC 9449 section 4.3 (the numbers below are its list),
 * plus `jti` single use (section 11.1). The cheap checks run before the signature so a junk proof
 * costs no signature verification; the `jti` is claimed last, so only a fully valid proof takes
 * a replay-store entry. A client's proof header (and so its key) is validated and imported once
 * (ProofKeyCache): `createPublicKey` from a JWK is much dearer than the verification itself.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import { Denial } from '../errors.js';
import { normalizePath, PathError } from '../http/path.js';
import type { Metrics } from '../observability/metrics.js';
import type { AccessToken, DpopProof, RequestContext, Stage } from '../pipeline/context.js';
import {
  ASYMMETRIC_ALGS,
  decodeHeader,
  decodePayload,
  decodeSignature,
  JwsError,
  keyFitsAlg,
  numericDate,
  nowSeconds,
  publicJwkCore,
  sha256b64u,
  splitCompact,
  systemClock,
  thumbprintOf,
  typIs,
  validityProblem,
  verifySignature,
  type Clock,
} from './jws.js';
import type { NonceIssuer } from './nonce.js';
import type { ReplayStore } from './types.js';

/** Proofs are small: a header with a public key (RSA 8192 at most) and a few claims. */
export const MAX_PROOF_BYTES = 8192;

const DEFAULT_PORTS: Readonly<Record<string, string>> = { http: '80', https: '443' };
const URI = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?$/;
const PRINTABLE = /^[\x21-\x7e]+$/;

/**
 * RFC 3986 sections 6.2.2-6.2.3 normalization of an http(s) URI without query and fragment: scheme
 * and host lowercased, default or empty port dropped, userinfo refused, path normalized exactly as
 * the gateway normalizes request paths (percent-encoding, dot segments), empty path = "/".
 * Returns null when it is not an absolute http(s) URI.
 */
export function normalizeHtu(value: string): string | null {
  if (value.length > 4096 || !PRINTABLE.test(value)) return null;
  const m = URI.exec(value);
  if (m === null) return null;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') return null;
  const authority = m[2]!;
  if (authority.length === 0 || authority.includes('@')) return null;
  let host = authority;
  let port = '';
  const colon = authority.lastIndexOf(':');
  if (colon !== -1 && !authority.slice(colon).includes(']')) {
    host = authority.slice(0, colon);
    port = authority.slice(colon + 1);
    if (!/^\d*$/.test(port)) return null;
    port = port.replace(/^0+(?=\d)/, '');
  }
  if (host.length === 0) return null;
  host = host.toLowerCase();
  if (port === DEFAULT_PORTS[scheme]) port = '';
  let path: string;
  try {
    path = m[3]! === '' ? '/' : normalizePath(m[3]!);
  } catch (err) {
    if (err instanceof PathError) return null;
    throw err;
  }
  return `${scheme}://${host}${port === '' ? '' : ':' + port}${path}`;
}

export interface VerifyDpopOptions {
  /** The request method (`htm`, compared exactly). */
  readonly method: string;
  /** The expected `htu`, already normalized (see `normalizeHtu`). */
  readonly htu: string;
  /** The access token presented with the proof: `ath` must be its hash. Absent at a token endpoint (no `ath`). */
  readonly accessToken?: string | null;
  /** base64url(SHA-256(accessToken)) when the caller has it already. */
  readonly accessTokenHash?: string;
  /** `cnf.jkt` the proof key must match; null/undefined: any key. */
  readonly expectedJkt?: string | null;
  /** Server nonces; when set, the proof must carry a current one (else dpop_nonce_required). */
  readonly nonces?: NonceIssuer | null;
  /** Single-use store; when set, `jti` is claimed under `${jkt}:${jti}`. */
  readonly replay?: ReplayStore | null;
  readonly algorithms: ReadonlySet<string> | readonly string[];
  readonly maxAgeS: number;
  readonly clockSkewS: number;
  readonly clock?: Clock;
  /** Cache of validated proof headers (and their imported keys); a module-level one when absent. */
  readonly keyCache?: ProofKeyCache;
}

/** What a proof's protected header establishes, once its segment has been validated. */
interface ProofHeader {
  readonly alg: string;
  readonly jkt: string;
  readonly key: KeyObject;
}

/**
 * Bounded cache of validated proof headers, keyed by the exact base64url header segment. A client
 * signs every proof with the same header (`typ`, `alg`, `jwk`), so after its first request the
 * header is neither decoded nor parsed, the thumbprint is not recomputed and the key is not
 * imported (`createPublicKey` from a JWK costs more than the verification itself). The segment is
 * the signed bytes themselves, so equal segments mean equal headers; only headers that passed every
 * check are cached, and each proof's signature is still verified.
 */
export class ProofKeyCache {
  private readonly lru: LRUCache<string, ProofHeader>;
  /**
   * At most `max` headers, and `maxBytes` counted as each segment's length plus a KiB for the
   * imported key: a client can make every header unique and up to MAX_PROOF_BYTES long, and
   * headers are cached before the proof's signature is checked (r19c 3: 10,000 of them held
   * ~110 MiB). Ordinary headers (~300 bytes) fit `max` first.
   */
  constructor(max = 10_000, onEvict?: () => void, maxBytes = 16 * 1024 * 1024) {
    this.lru = new LRUCache<string, ProofHeader>({
      max,
      maxSize: maxBytes,
      sizeCalculation: (_h, segment) => segment.length + 1024,
      ...(onEvict ? { dispose: (_v: ProofHeader, _k: string, reason: LRUCache.DisposeReason) => reason === 'evict' && onEvict() } : {}),
    });
  }
  get(segment: string): ProofHeader | undefined {
    return this.lru.get(segment);
  }
  set(segment: string, header: ProofHeader): void {
    this.lru.set(segment, header);
  }
}

const defaultKeyCache = new ProofKeyCache();

function invalid(why: string): never {
  // `why` is fixed text from this module; never a claim value or the proof.
  throw new Denial('dpop_invalid', { cause: new Error(why) });
}

/** RFC 9449 section 4.3 steps 3-5 and 7 on the header, plus key import. */
function validateHeader(segment: string, allowed: ReadonlySet<string>): ProofHeader {
  const header = decodeHeader(segment);
  // Steps 4-5: typ, an asymmetric allowed alg (never none, never HS*).
  if (!typIs(header.typ, 'dpop+jwt')) invalid('typ');
  const alg = header.alg;
  if (typeof alg !== 'string' || !ASYMMETRIC_ALGS.has(alg) || !allowed.has(alg)) invalid('alg');
  // Steps 3 and 7: a jwk, public (publicJwkCore refuses `d` and the other private members).
  const core = publicJwkCore(header.jwk);
  if (core === null) invalid('jwk');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: core.jwk as never, format: 'jwk' });
  } catch {
    invalid('jwk import');
  }
  if (!keyFitsAlg(alg, key)) invalid('alg does not fit jwk');
  return { alg, jkt: thumbprintOf(core), key };
}

/** The per-deployment part of the options, resolved once (the stage builds it at construction). */
interface ProofPolicy {
  readonly allowed: ReadonlySet<string>;
  readonly cache: ProofKeyCache;
  readonly maxAgeS: number;
  readonly clockSkewS: number;
  readonly clock: Clock;
  readonly nonces: NonceIssuer | null;
  readonly replay: ReplayStore | null;
  /** Normalizes a proof's `htu` (normalizeHtu, possibly memoized). */
  readonly htuOf: (htu: string) => string | null;
  /** When set, signatures are verified in batches (see VerifyBatch). */
  readonly batch: VerifyBatch | null;
}

/** Open client connections per verification that may wait for others (see VerifyBatch). */
const CONNECTIONS_PER_BATCHED = 6;
/** The most verifications one batch holds. */
const BATCH_MAX = 16;

/**
 * Under concurrency, signature verifications are queued while an event-loop turn reads requests
 * and run back to back once its I/O callbacks are done (setImmediate), or as soon as the batch is
 * full. Interleaved with request handling, every ES256 verification evicts the handling code and
 * data from the CPU caches (the curve arithmetic walks large precomputed tables) and the next
 * request runs cold; grouped, the tables stay warm through the batch and the handling code through
 * the requests (measured here: 15-20 % more throughput at 50 connections).
 *
 * The batch is bounded by load: with `c` open client connections it holds at most c / 6
 * verifications (16 at most), and below 12 connections there is no batching at all: every proof is
 * verified inline, as without this class. Waiting for a batch is the gateway's own time (it counts
 * in `mission_gateway_decision_seconds`); the requests it groups would otherwise have waited, unread,
 * in their sockets. Each proof is still verified before anything else about it (nonce, replay
 * record) is decided.
 */
export class VerifyBatch {
  private queue: { alg: string; key: KeyObject; input: string; sig: Buffer; resolve: (ok: boolean) => void }[] = [];
  private scheduled = false;

  constructor(private readonly openConnections: () => number) {}

  /** The verification's outcome: a boolean when done inline, a promise when batched. */
  verify(alg: string, key: KeyObject, input: string, sig: Buffer): boolean | Promise<boolean> {
    const max = Math.min(BATCH_MAX, Math.floor(this.openConnections() / CONNECTIONS_PER_BATCHED));
    if (max <= 1 && this.queue.length === 0) return verifySignature(alg, key, input, sig);
    return new Promise<boolean>((resolve) => {
      this.queue.push({ alg, key, input, sig, resolve });
      if (this.queue.length >= max) this.run();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.onImmediate);
      }
    });
  }

  private readonly onImmediate = (): void => {
    this.scheduled = false;
    this.run();
  };

  private run(): void {
    const q = this.queue;
    if (q.length === 0) return;
    this.queue = [];
    for (const j of q) j.resolve(verifySignature(j.alg, j.key, j.input, j.sig));
  }
}

/**
 * Verifies a DPoP proof (RFC 9449 section 4.3) and returns its thumbprint, `jti` and `iat`.
 * Throws Denial dpop_invalid, dpop_nonce_required, or replay_store_unavailable. Sync unless the
 * replay store answers asynchronously.
 */
export function verifyDpopProof(proof: string, o: VerifyDpopOptions): DpopProof | Promise<DpopProof> {
  const policy: ProofPolicy = {
    allowed: o.algorithms instanceof Set ? (o.algorithms as ReadonlySet<string>) : new Set(o.algorithms as readonly string[]),
    cache: o.keyCache ?? defaultKeyCache,
    maxAgeS: o.maxAgeS,
    clockSkewS: o.clockSkewS,
    clock: o.clock ?? systemClock,
    nonces: o.nonces ?? null,
    replay: o.replay ?? null,
    htuOf: normalizeHtu,
    batch: null,
  };
  const ath = o.accessToken != null ? (o.accessTokenHash ?? sha256b64u(o.accessToken)) : null;
  return verifyProof(proof, policy, o.method, o.htu, ath, o.expectedJkt ?? null);
}

/**
 * verifyDpopProof with the policy resolved. `ath`: the expected access token hash, or null when no
 * access token is presented (token endpoint). `expectedJkt`: null for any key.
 */
function verifyProof(proof: string, o: ProofPolicy, method: string, expectedHtu: string, ath: string | null, expectedJkt: string | null): DpopProof | Promise<DpopProof> {
  const allowed = o.allowed;
  const cache = o.cache;
  let h: ProofHeader;
  let payload: Record<string, unknown>;
  let signature: Buffer;
  let signingInput: string;
  try {
    // Step 2: a well-formed JWT.
    const seg = splitCompact(proof, MAX_PROOF_BYTES);
    signingInput = seg.signingInput;
    const cached = cache.get(seg.header);
    if (cached !== undefined && allowed.has(cached.alg)) {
      h = cached;
    } else {
      h = validateHeader(seg.header, allowed);
      cache.set(seg.header, h);
    }
    payload = decodePayload(seg.payload);
    signature = decodeSignature(seg.signature);
  } catch (err) {
    if (err instanceof JwsError) invalid(`malformed: ${err.message}`);
    throw err;
  }
  // Step 3: required claims.
  const { jti, htm, htu, iat } = payload;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) invalid('jti');
  const iatS = numericDate(iat);
  if (iatS === undefined) invalid('iat');
  // Step 8: htm.
  if (htm !== method) invalid('htm');
  // Step 9: htu, both sides normalized, no query or fragment.
  if (typeof htu !== 'string' || o.htuOf(htu) !== expectedHtu) invalid('htu');
  // Step 11: iat within max_age_s (and not in the future beyond the skew).
  const now = nowSeconds(o.clock);
  if (iatS > now + o.clockSkewS || iatS < now - o.maxAgeS - o.clockSkewS) invalid('iat window');
  // RFC 9449 does not ask for exp or nbf, but a proof that carries them is a JWT (RFC 7519 sections
  // 4.1.4-4.1.5): not accepted on or after its exp, nor before its nbf, as the access token's.
  const window = validityProblem(payload, now, o.clockSkewS);
  if (window !== null) invalid(window);
  // Step 12: ath binds the proof to the presented access token.
  if (ath !== null && payload.ath !== ath) invalid('ath');
  // Step 13: the proof key is the key the token is bound to.
  const jkt = h.jkt;
  if (expectedJkt !== null && jkt !== expectedJkt) invalid('jkt');
  // Step 6: the signature.
  const ok = o.batch === null ? verifySignature(h.alg, h.key, signingInput, signature) : o.batch.verify(h.alg, h.key, signingInput, signature);
  if (ok instanceof Promise) {
    return ok.then((good) => {
      if (!good) invalid('signature');
      return afterSignature(o, payload, jkt, jti, iatS, now);
    });
  }
  if (!ok) invalid('signature');
  return afterSignature(o, payload, jkt, jti, iatS, now);
}

/** Steps 10 and 11.1, once the signature is known good. */
function afterSignature(o: ProofPolicy, payload: Record<string, unknown>, jkt: string, jti: string, iatS: number, now: number): DpopProof | Promise<DpopProof> {
  // Step 10: server nonce.
  if (o.nonces !== null && !o.nonces.check(payload.nonce)) {
    throw new Denial('dpop_nonce_required', { cause: new Error('nonce missing or stale') });
  }
  const result: DpopProof = { jkt, jti, iat: iatS };
  // Section 11.1: single use per key. The entry lives as long as this proof would be accepted.
  if (o.replay !== null) {
    // Whole seconds, rounded up, and one more: the proof is remembered at least as long as it is accepted.
    const ttl = Math.max(1, Math.ceil(iatS + o.maxAgeS + o.clockSkewS - now) + 1);
    let claimed: boolean | Promise<boolean>;
    try {
      claimed = o.replay.claim(`${jkt}:${jti}`, ttl);
    } catch (err) {
      throw new Denial('replay_store_unavailable', { cause: err });
    }
    if (claimed instanceof Promise) {
      return claimed.then(
        (first) => (first ? result : invalid('replayed')),
        (err: unknown) => {
          throw new Denial('replay_store_unavailable', { cause: err });
        },
      );
    }
    if (!claimed) invalid('replayed');
  }
  return result;
}

/** Distinct `htu` values remembered per stage; the memo is emptied when full (bounded, attacker-fed). */
const HTU_MEMO_MAX = 1024;

/** normalizeHtu memoized: it is a pure function of the string, and a client repeats its URLs. */
function memoizedHtu(): (htu: string) => string | null {
  const memo = new Map<string, string | null>();
  return (htu) => {
    let n = memo.get(htu);
    if (n === undefined) {
      n = normalizeHtu(htu);
      if (memo.size >= HTU_MEMO_MAX) memo.clear();
      memo.set(htu, n);
    }
    return n;
  };
}

export interface DpopStageDeps {
  readonly config: Config;
  /** Open client connections: when given, verifications are batched under concurrency (VerifyBatch). */
  readonly openConnections?: () => number;
  readonly replay: ReplayStore;
  readonly nonces: NonceIssuer | null;
  readonly metrics: Metrics;
  readonly clock?: Clock;
}

/**
 * `public_base_url` as the start of every `htu` the gateway expects (RFC 9449 section 4.3 step 9):
 * normalized, without a trailing slash, so a request path (or the ID-JAG token path) follows it.
 */
export function htuBase(publicBaseUrl: string): string {
  const base = normalizeHtu(publicBaseUrl);
  if (base === null) throw new Error('public_base_url cannot be normalized');
  return base.replace(/\/$/, '');
}

/**
 * The DPoP stage. After the token stage: a cnf-bound token must come with the DPoP scheme and a
 * proof for its key; a Bearer token is accepted only when unbound and `dpop.required` is false;
 * an unbound token under the DPoP scheme is refused (RFC 9449 section 7.1: the proof would prove
 * nothing about the token). On success sets `ctx.proof` and, with nonces on, `ctx.dpopNonce`.
 * A nonce denial also sets `ctx.dpopNonce` so the response carries the fresh `DPoP-Nonce`.
 */
export function createDpopStage(deps: DpopStageDeps): Stage {
  const { config, replay, nonces } = deps;
  const origin = htuBase(config.public_base_url);
  const algorithms = new Set<string>(config.dpop.algorithms);
  const keyCache = new ProofKeyCache(10_000, () => deps.metrics.cacheEvictions.labels('dpop_keys').inc());
  const required = config.dpop.required;
  // The token stage hands out the same AccessToken object for every request with that token, so
  // its `ath` is hashed once.
  const athOf = new WeakMap<AccessToken, string>();
  const policy: ProofPolicy = {
    allowed: algorithms,
    cache: keyCache,
    maxAgeS: config.dpop.max_age_s,
    clockSkewS: config.dpop.clock_skew_s,
    clock: deps.clock ?? systemClock,
    nonces,
    replay,
    htuOf: memoizedHtu(),
    batch: deps.openConnections === undefined ? null : new VerifyBatch(deps.openConnections),
  };

  const onFailure = (ctx: RequestContext, err: unknown): never => {
    if (err instanceof Denial) {
      if (err.code === 'dpop_nonce_required' && nonces !== null) ctx.dpopNonce = nonces.issue();
      else if (err.code === 'replay_store_unavailable') deps.metrics.replayStoreErrors.inc();
    }
    throw err;
  };
  const done = (ctx: RequestContext, p: DpopProof): void => {
    ctx.proof = p;
    if (nonces !== null) ctx.dpopNonce = nonces.issue();
  };

  return function dpop(ctx: RequestContext): void | Promise<void> {
    const creds = ctx.credentials;
    const token = ctx.token;
    if (creds === null || token === null) throw new Denial('token_missing');
    if (creds.scheme === 'Bearer') {
      // RFC 9449 section 7.2: a DPoP-bound token is never a bearer token.
      if (token.jkt !== null) throw new Denial('token_invalid', { description: 'a DPoP-bound token must be presented with the DPoP scheme' });
      if (required) throw new Denial('token_invalid', { description: 'a DPoP-bound access token is required' });
      ctx.proof = null;
      return;
    }
    if (token.jkt === null) throw new Denial('token_invalid', { description: 'the access token is not DPoP-bound' });
    if (creds.proof === null) {
      if (nonces !== null) ctx.dpopNonce = nonces.issue();
      throw new Denial('dpop_invalid', { description: 'a DPoP proof is required' });
    }
    let result: DpopProof | Promise<DpopProof>;
    try {
      let ath = athOf.get(token);
      if (ath === undefined) {
        ath = sha256b64u(token.raw);
        athOf.set(token, ath);
      }
      result = verifyProof(creds.proof, policy, ctx.method, origin + ctx.path, ath, token.jkt);
    } catch (err) {
      return onFailure(ctx, err);
    }
    if (result instanceof Promise) return result.then((p) => done(ctx, p), (err: unknown) => onFailure(ctx, err));
    done(ctx, result);
  };
}
