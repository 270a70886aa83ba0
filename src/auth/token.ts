/**
 * Token stage: RFC 9068 JWT access tokens, checked per RFC 8725. See jws.ts for the whole
 * procedure and why the synchronous path is safe.
 *
 * `verifyJwt` is the reusable verifier (Mission Status responses, SETs, ID-JAG assertions); the
 * stage adds the RFC 9068 claim profile and a bounded cache of verified tokens, so the token's
 * signature is verified once per token, not once per request. A hit needs the exact compact string;
 * the map is keyed by its signature segment (unique per token, and a tenth of its length to hash on
 * every request), the entry holding the whole string to compare.
 */
import type { KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import { Denial, type DenialCode } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { AccessToken, RequestContext, Stage } from '../pipeline/context.js';
import { ASYMMETRIC_ALGS, JwsError, numericDate, nowSeconds, parseCompact, systemClock, typIs, validityProblem, verifySignature, type Clock } from './jws.js';
import type { IssuerKeys } from './keys.js';
import type { KeyResolver } from './types.js';
import { deepFreeze } from '../values.js';

export interface VerifyJwtOptions {
  /** Trusted issuers; the unverified `iss` must be one of them before any key is looked up. */
  readonly issuer?: string | readonly string[];
  /** Expected `typ` without `application/` (compared case-insensitively), or several. */
  readonly typ: string | readonly string[];
  /** Allowed `alg`s (asymmetric only; anything else is ignored). */
  readonly algorithms: readonly string[];
  /** Narrower per-issuer lists (each issuer's configured `algorithms`); checked before key lookup. */
  readonly issuerAlgorithms?: ReadonlyMap<string, readonly string[]>;
  readonly keys: KeyResolver;
  /** `aud` must equal or contain this. */
  readonly audience?: string;
  /** `aud` must be exactly this string or a one-element array holding it (ID-JAG). */
  readonly exactAudience?: boolean;
  /** Claims that must be present (non-empty strings for iss/sub/jti/client_id, numbers for iat/exp). */
  readonly requiredClaims?: readonly string[];
  readonly clockSkewS?: number;
  /** Reject when `iat` is older than this. */
  readonly maxAgeS?: number;
  readonly clock?: Clock;
  /** Denial code for every failure except unreachable keys (default token_invalid). */
  readonly failWith?: DenialCode;
}

export interface VerifiedJwt {
  readonly header: Readonly<Record<string, unknown>>;
  readonly payload: Readonly<Record<string, unknown>>;
  readonly issuer: string;
  /** The key that verified the signature (for caches that must forget it when it rotates out). */
  readonly key: KeyObject;
}

const STRING_CLAIMS = new Set(['iss', 'sub', 'jti', 'client_id', 'aud']);
/** A UTF-16 surrogate not part of a pair (with the u flag, a pair reads as one code point). */
const LONE_SURROGATE = /\p{Cs}/u;

interface CompiledVerify {
  readonly issuers: ReadonlySet<string> | null;
  readonly typs: readonly string[];
  readonly algs: ReadonlySet<string>;
  readonly issuerAlgs: ReadonlyMap<string, ReadonlySet<string>> | null;
  readonly keys: KeyResolver;
  readonly audience: string | undefined;
  readonly exactAudience: boolean;
  readonly required: readonly string[];
  readonly skew: number;
  readonly maxAge: number | undefined;
  readonly clock: Clock;
  readonly failWith: DenialCode;
}

function compile(o: VerifyJwtOptions): CompiledVerify {
  return {
    issuers: o.issuer === undefined ? null : new Set(typeof o.issuer === 'string' ? [o.issuer] : o.issuer),
    typs: (typeof o.typ === 'string' ? [o.typ] : o.typ).map((t) => t.toLowerCase()),
    algs: new Set(o.algorithms.filter((a) => ASYMMETRIC_ALGS.has(a))),
    issuerAlgs: o.issuerAlgorithms === undefined ? null : new Map([...o.issuerAlgorithms].map(([iss, list]) => [iss, new Set(list)])),
    keys: o.keys,
    audience: o.audience,
    exactAudience: o.exactAudience ?? false,
    required: o.requiredClaims ?? [],
    skew: o.clockSkewS ?? 30,
    maxAge: o.maxAgeS,
    clock: o.clock ?? systemClock,
    failWith: o.failWith ?? 'token_invalid',
  };
}

function fail(c: CompiledVerify, why: string): never {
  // `why` is a fixed string from this module: never a claim value, token or key.
  throw new Denial(c.failWith, { cause: new Error(why) });
}

/** The resolver's "no such key" becomes the caller's failure code; keys_unavailable stays. */
function asFailure(c: CompiledVerify, err: unknown): unknown {
  if (err instanceof Denial && err.code === 'token_invalid' && c.failWith !== 'token_invalid') return new Denial(c.failWith, { cause: err });
  return err;
}

export function audienceMatches(aud: unknown, audience: string, exact: boolean): boolean {
  if (typeof aud === 'string') return aud === audience;
  if (!Array.isArray(aud)) return false;
  if (exact) return aud.length === 1 && aud[0] === audience;
  return aud.includes(audience);
}

/** Time and presence checks on a verified payload (RFC 7519 section 4.1, RFC 9068 section 4). */
function checkClaims(c: CompiledVerify, p: Readonly<Record<string, unknown>>): void {
  const now = nowSeconds(c.clock);
  for (const name of c.required) {
    const v = p[name];
    if (name === 'aud') {
      if (typeof v !== 'string' && !Array.isArray(v)) fail(c, `missing ${name}`);
    } else if (STRING_CLAIMS.has(name)) {
      if (typeof v !== 'string' || v.length === 0) fail(c, `missing ${name}`);
      // A lone surrogate (a JSON \ud800 escape) names no one: it has no UTF-8 form for a header,
      // a log or a comparison with what the authority wrote.
      if (LONE_SURROGATE.test(v)) fail(c, `malformed ${name}`);
    } else if (name === 'iat' || name === 'exp' || name === 'nbf') {
      if (numericDate(v) === undefined) fail(c, `missing ${name}`);
    } else if (v === undefined) fail(c, `missing ${name}`);
  }
  const window = validityProblem(p, now, c.skew);
  if (window !== null) fail(c, window);
  const iat = p.iat;
  if (iat !== undefined) {
    const i = numericDate(iat);
    if (i === undefined || i > now + c.skew) fail(c, 'issued in the future');
    if (c.maxAge !== undefined && i < now - c.maxAge - c.skew) fail(c, 'too old');
  }
  if (c.audience !== undefined && !audienceMatches(p.aud, c.audience, c.exactAudience)) fail(c, 'audience');
}

function verifyCompiled(c: CompiledVerify, compact: string): VerifiedJwt | Promise<VerifiedJwt> {
  let parsed;
  try {
    parsed = parseCompact(compact);
  } catch (err) {
    if (err instanceof JwsError) fail(c, err.message);
    throw err;
  }
  const { header, payload } = parsed;
  if (!c.typs.some((t) => typIs(header.typ, t))) fail(c, 'typ');
  const alg = header.alg;
  if (typeof alg !== 'string' || !c.algs.has(alg)) fail(c, 'alg not allowed');
  const iss = payload.iss;
  if (typeof iss !== 'string' || (c.issuers !== null && !c.issuers.has(iss))) fail(c, 'untrusted issuer');
  if (c.issuerAlgs !== null && c.issuerAlgs.get(iss)?.has(alg) !== true) fail(c, 'alg not allowed for issuer');
  // Only `alg` and `kid` select the key: `jku`, `x5u`, `jwk`, `x5c` are never read (RFC 8725 section 3.10).
  let resolved: KeyObject | Promise<KeyObject>;
  try {
    resolved = c.keys.resolve(iss, { alg, kid: header.kid });
  } catch (err) {
    throw asFailure(c, err);
  }
  if (resolved instanceof Promise && c.failWith !== 'token_invalid') {
    resolved = resolved.catch((err: unknown) => {
      throw asFailure(c, err);
    });
  }
  const finish = (key: KeyObject): VerifiedJwt => {
    if (!verifySignature(alg, key, parsed.signingInput, parsed.signature)) fail(c, 'signature');
    checkClaims(c, payload);
    return { header, payload, issuer: iss, key };
  };
  return resolved instanceof Promise ? resolved.then(finish) : finish(resolved);
}

/**
 * Verifies a compact JWS/JWT: structure, `typ`, `alg` allowlist, trusted `iss`, signature with
 * the issuer's key (by `kid`), then time claims, `aud` and required claims. Throws Denial
 * (`failWith`, default token_invalid; keys_unavailable when the issuer's keys cannot be loaded).
 */
export async function verifyJwt(compact: string, options: VerifyJwtOptions): Promise<VerifiedJwt> {
  return verifyCompiled(compile(options), compact);
}

/** As verifyJwt, with options compiled once; returns synchronously when the key is cached. */
export function createJwtVerifier(options: VerifyJwtOptions): (compact: string) => VerifiedJwt | Promise<VerifiedJwt> {
  const c = compile(options);
  return (compact) => verifyCompiled(c, compact);
}

export interface TokenStageDeps {
  readonly config: Config;
  readonly keys: IssuerKeys;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly clock?: Clock;
}

interface CachedToken {
  /** The exact compact token this entry verified; a hit must equal it. */
  readonly raw: string;
  readonly token: AccessToken;
  readonly key: KeyObject;
  readonly aud: unknown;
  readonly nbf: number | undefined;
}

/** The token cache's key: the compact JWS's signature segment. */
function signatureOf(raw: string): string {
  return raw.slice(raw.lastIndexOf('.') + 1);
}

const TOKEN_REQUIRED = ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'];

function toAccessToken(raw: string, v: VerifiedJwt): AccessToken {
  const p = v.payload;
  const cnf = p.cnf;
  let jkt: string | null = null;
  if (cnf !== undefined) {
    // A cnf we cannot check (mTLS `x5t#S256`, a malformed jkt) must not be treated as unbound.
    if (cnf === null || typeof cnf !== 'object' || Array.isArray(cnf)) throw new Denial('token_invalid', { cause: new Error('malformed cnf') });
    const j = (cnf as Record<string, unknown>).jkt;
    if (typeof j !== 'string' || j.length === 0) throw new Denial('token_invalid', { cause: new Error('unsupported cnf') });
    jkt = j;
  }
  // The same object serves every request with this token: nothing downstream may change it.
  deepFreeze(p);
  return Object.freeze({
    raw,
    issuer: v.issuer,
    subject: p.sub as string,
    clientId: p.client_id as string,
    jti: p.jti as string,
    exp: p.exp as number,
    jkt,
    claims: p,
  });
}

/**
 * The token stage: verifies `ctx.credentials.token` for `ctx.audience` and sets `ctx.token`.
 * Cache hits (same compact token) skip the signature but still check `exp`, `nbf`, `aud` and that
 * the signing key is still published by the issuer; they never await.
 */
export function createTokenStage(deps: TokenStageDeps): Stage {
  const { config, keys } = deps;
  const clock = deps.clock ?? systemClock;
  const skew = config.token.clock_skew_s;
  const verifiers = new Map<string, (compact: string) => VerifiedJwt | Promise<VerifiedJwt>>();
  const audiences = new Set([config.resource, config.mcp?.resource ?? config.resource]);
  const issuers = config.issuers.map((i) => i.issuer);
  const algs = [...new Set(config.issuers.flatMap((i) => i.algorithms))];
  const issuerAlgorithms = new Map(config.issuers.map((i) => [i.issuer, i.algorithms]));
  const verifierFor = (audience: string): ((compact: string) => VerifiedJwt | Promise<VerifiedJwt>) =>
    createJwtVerifier({ issuer: issuers, typ: 'at+jwt', algorithms: algs, issuerAlgorithms, keys, audience, requiredClaims: TOKEN_REQUIRED, clockSkewS: skew, clock });
  for (const audience of audiences) verifiers.set(audience, verifierFor(audience));
  const evictions = deps.metrics.cacheEvictions.labels('token');
  const cache =
    config.token.cache_max_entries > 0
      ? new LRUCache<string, CachedToken>({
          max: config.token.cache_max_entries,
          dispose: (_v, _k, reason) => {
            if (reason === 'evict') evictions.inc();
          },
        })
      : null;
  // A rotated-out key takes its verified tokens with it, so a removed key stops working at once.
  keys.onKeysChanged((issuer, removed) => {
    if (cache === null || removed.length === 0) return;
    const gone = new Set(removed);
    for (const [k, v] of cache.entries()) if (v.token.issuer === issuer && gone.has(v.key)) cache.delete(k);
  });

  const accept = (ctx: RequestContext, raw: string, v: VerifiedJwt): void => {
    const token = toAccessToken(raw, v);
    cache?.set(signatureOf(raw), { raw, token, key: v.key, aud: v.payload.aud, nbf: numericDate(v.payload.nbf) });
    ctx.token = token;
  };

  return function token(ctx: RequestContext): void | Promise<void> {
    const creds = ctx.credentials;
    if (creds === null) throw new Denial('token_missing');
    const raw = creds.token;
    const sig = signatureOf(raw);
    const hit = cache?.get(sig);
    // Another token with this signature segment (a forgery reusing it) is not this entry's token.
    if (hit !== undefined && hit.raw === raw) {
      const now = nowSeconds(clock);
      if (now - skew < hit.token.exp && (hit.nbf === undefined || hit.nbf <= now + skew) && audienceMatches(hit.aud, ctx.audience, false) && keys.isCurrent(hit.token.issuer, hit.key)) {
        ctx.token = hit.token;
        return;
      }
      cache!.delete(sig);
      // Fall through: a full verification gives the precise outcome.
    }
    let verify = verifiers.get(ctx.audience);
    if (verify === undefined) {
      // Only `resource` and `mcp.resource` are expected here; anything else is compiled once.
      verify = verifierFor(ctx.audience);
      if (verifiers.size < 16) verifiers.set(ctx.audience, verify);
    }
    const v = verify(raw);
    if (v instanceof Promise) return v.then((r) => accept(ctx, raw, r));
    accept(ctx, raw, v);
  };
}
