/**
 * Interfaces shared across parts of the gateway (so stages never import each other's internals).
 */
import type { KeyObject } from 'node:crypto';

/** A JWS protected header as far as key resolution needs it. */
export interface JwsHeader {
  readonly alg?: unknown;
  readonly kid?: unknown;
  readonly typ?: unknown;
  readonly [member: string]: unknown;
}

/**
 * Resolves verification keys for trusted issuers (token issuers, Mission authorities, ID-JAG
 * projection issuers), from their JWKS (configured `jwks_uri`, else RFC 8414 / OIDC discovery).
 * One in-flight fetch per issuer, refetch on unknown `kid` after a cooldown, last good keys kept.
 */
export interface KeyResolver {
  /**
   * The key for `header` (by `kid`, else the only key of a matching type) from `issuer`'s key set.
   * Sync when the key is already known. Throws Denial('keys_unavailable') when the issuer is
   * unreachable and no last-good key matches; Denial('token_invalid') when the issuer is unknown or
   * no key matches after a refresh. `refetchAfterMs` replaces the refetch cooldown for this lookup:
   * an unknown `kid` refetches the key set once the last fetch is that old, waiting for it if need
   * be (lifecycle SETs: a key the issuer just rotated to is found, not refused).
   */
  resolve(issuer: string, header: JwsHeader, refetchAfterMs?: number): KeyObject | Promise<KeyObject>;
  /** RFC 8414 metadata (then OIDC discovery) of a trusted issuer, cached; rejects when unreachable. */
  metadata(issuer: string): Promise<Readonly<Record<string, unknown>>>;
  /** True once every configured token issuer's keys have loaded at least once. */
  ready(): boolean;
}

/**
 * Single-use records (DPoP `jti` per key thumbprint, ID-JAG `jti`, single-use decisions), shared
 * across replicas when backed by Redis. Fails closed: an error rejects and the caller denies.
 */
export interface ReplayStore {
  /**
   * Records `key` for `ttlSeconds` and returns true when it was not seen before (first use),
   * false when it is a replay. Rejects/throws when the store cannot answer.
   */
  claim(key: string, ttlSeconds: number): boolean | Promise<boolean>;
  /**
   * Forgets a claimed key whose use did not happen (the downstream AS asked for a DPoP nonce, or
   * Mission state could not be established), so the client's retry is not a replay. Best effort:
   * a store that cannot answer keeps the key, which only costs the client a fresh assertion.
   */
  release?(key: string): void | Promise<void>;
  /** False while the store is unreachable. */
  ready(): boolean;
  /**
   * Resolves once a store behind a connection has first tried to connect (ready, refused, or its
   * connect timeout): the gateway waits for it before listening, so requests that arrive the moment
   * it starts are not refused only because the connection was still being opened.
   */
  opened?(): Promise<void>;
  close(): Promise<void>;
}
