/**
 * Single-use records shared by every replica: one `SET key 1 NX EX ttl` per claim, so a DPoP `jti`
 * or ID-JAG `jti` accepted by one replica is a replay on all of them.
 *
 * Fails closed: while Redis is unreachable every claim rejects at once (no offline queue), a slow
 * Redis rejects after the command timeout, and the caller denies. The connection keeps retrying in
 * the background and claims succeed again as soon as Redis is back, without a restart.
 */
import { createHash } from 'node:crypto';
import type { ReplayStore } from '../auth/types.js';
import type { Logger } from '../observability/logger.js';
import { closeRedis, isReady, openRedis, watchConnection, type RedisConnection, type RedisTuning } from './redis-client.js';
import type { RedisTarget } from './redis-url.js';

export interface RedisReplayStoreOptions extends RedisTuning {
  /** `redis://`, `rediss://`, `redis+sentinel://…`, `redis+cluster://…` (see redis-url.ts), or a parsed target. */
  readonly url: string | RedisTarget;
  /** Prepended to every key (config `replay_store.key_prefix`). Default `mgw:`. */
  readonly keyPrefix?: string;
  readonly logger?: Logger;
}

/**
 * Thrown (as a rejection) when the store cannot answer; the caller denies (`replay_store_unavailable`)
 * and counts it in `mission_gateway_replay_store_errors_total` (the store does not, to count once).
 */
export class ReplayStoreUnavailableError extends Error {
  readonly code = 'replay_store_unavailable';
  constructor(cause: unknown) {
    super('replay store unavailable', { cause });
    this.name = 'ReplayStoreUnavailableError';
  }
}

/** Keys longer than this are hashed, so an oversized `jti` cannot make an oversized Redis key. */
const MAX_RAW_KEY = 200;

export class RedisReplayStore implements ReplayStore {
  readonly connection: RedisConnection;
  private readonly rawPrefix: string;
  private readonly hashedPrefix: string;

  constructor(options: RedisReplayStoreOptions) {
    const prefix = options.keyPrefix ?? 'mgw:';
    this.rawPrefix = `${prefix}r:`;
    this.hashedPrefix = `${prefix}h:`;
    // Auto-pipelining: the claims of one event-loop turn go to Redis in one write (one round trip
    // for many concurrent requests), each still its own SET NX with its own answer.
    this.connection = openRedis(options.url, options, { connectionName: 'mgw-replay', enableAutoPipelining: true });
    watchConnection(this.connection, 'replay_store', options.logger);
  }

  /** The Redis key for a claim key (exposed for tests and operators). */
  redisKey(key: string): string {
    if (key.length <= MAX_RAW_KEY) return this.rawPrefix + key;
    return this.hashedPrefix + createHash('sha256').update(key).digest('base64url');
  }

  claim(key: string, ttlSeconds: number): Promise<boolean> {
    // EX takes whole seconds; rounding up keeps a record at least as long as asked.
    const ttl = Math.max(1, Math.ceil(ttlSeconds));
    return this.connection.set(this.redisKey(key), '1', 'EX', ttl, 'NX').then(
      (reply) => reply === 'OK',
      (err: unknown) => {
        throw new ReplayStoreUnavailableError(err);
      },
    );
  }

  ready(): boolean {
    return isReady(this.connection);
  }

  close(): Promise<void> {
    return closeRedis(this.connection);
  }
}
