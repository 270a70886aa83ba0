/**
 * Single-use records shared by every replica: `SET key 1 NX EX ttl` per claim, so a DPoP `jti`
 * or ID-JAG `jti` accepted by one replica is a replay on all of them.
 *
 * The claims of one event-loop turn go to Redis together: one `EVALSHA` of a small script that
 * runs those SETs in order and answers one flag per key (one command to build, send, parse and
 * time out instead of one per request; Redis runs a script atomically, so two claims of the same
 * key in one batch still give exactly one winner). A turn with a single claim sends the plain SET.
 * Against a server that refuses scripts every claim is its own SET; against Redis Cluster (keys of
 * one batch live in different slots) too, auto-pipelined there so that each node gets one write per
 * turn. A single server gets no auto-pipelining: ioredis runs one auto-pipeline at a time, so a
 * claim made while the previous one waited on a hung server started its own timeout only after it
 * (twice the bound); the batching above already makes one command per turn.
 *
 * Fails closed: while Redis is unreachable every claim rejects at once (no offline queue), a slow
 * Redis rejects after the command timeout, and the caller denies. A hung Redis (the connection
 * stays open, nothing answers) opens a circuit breaker at the first timeout (breaker.ts): from then
 * on claims fail at once without sending anything, `ready()` is false, and one probe at a time
 * decides when Redis is back. The connection keeps retrying in the background and claims succeed
 * again as soon as Redis is back, without a restart.
 */
import { createHash } from 'node:crypto';
import type { ReplayStore } from '../auth/types.js';
import type { Logger } from '../observability/logger.js';
import { Cluster } from 'ioredis';
import { RedisBreaker, type BreakerTuning } from './breaker.js';
import { closeRedis, firstAttemptMs, firstOutcome, openRedis, watchConnection, type RedisConnection, type RedisTuning } from './redis-client.js';
import { parseRedisUrl, type RedisTarget } from './redis-url.js';

export interface RedisReplayStoreOptions extends RedisTuning, BreakerTuning {
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

/** Claims per script call; a larger turn is split. */
const MAX_BATCH = 256;

/** KEYS: the claim keys; ARGV: their TTLs (seconds). Returns 1 (claimed) or 0 (replay) per key. */
const CLAIM_SCRIPT = `local r = {}
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, '1', 'EX', ARGV[i], 'NX') then r[i] = 1 else r[i] = 0 end
end
return r`;

interface Pending {
  readonly key: string;
  readonly ttl: number;
  readonly resolve: (claimed: boolean) => void;
  readonly reject: (err: unknown) => void;
}

type ClaimConnection = RedisConnection & { mgwClaim(numKeys: number, ...args: (string | number)[]): Promise<unknown> };

const defer = globalThis.setImmediate;

/** The cause of a claim refused while the breaker is open. */
const HUNG = new Error('redis is not answering (circuit open)');

export class RedisReplayStore implements ReplayStore {
  readonly connection: RedisConnection;
  private readonly rawPrefix: string;
  private readonly hashedPrefix: string;
  /** False for Redis Cluster, or once the server refused the script: one SET per claim. */
  private batching: boolean;
  private pending: Pending[] = [];
  private scheduled = false;
  private readonly logger: Logger | undefined;
  /** Open while Redis is presumed hung: claims fail at once. */
  readonly breaker: RedisBreaker;
  private readonly openTimeoutMs: number;

  constructor(options: RedisReplayStoreOptions) {
    this.openTimeoutMs = firstAttemptMs(options);
    const prefix = options.keyPrefix ?? 'mgw:';
    this.rawPrefix = `${prefix}r:`;
    this.hashedPrefix = `${prefix}h:`;
    this.logger = options.logger;
    const target = typeof options.url === 'string' ? parseRedisUrl(options.url) : options.url;
    this.connection = openRedis(target, options, { connectionName: 'mgw-replay', enableAutoPipelining: target.kind === 'cluster' });
    this.connection.defineCommand('mgwClaim', { lua: CLAIM_SCRIPT });
    this.batching = !(this.connection instanceof Cluster);
    watchConnection(this.connection, 'replay_store', options.logger);
    this.breaker = new RedisBreaker(this.connection, 'replay_store', options.logger, options);
  }

  /** The Redis key for a claim key (exposed for tests and operators). */
  redisKey(key: string): string {
    if (key.length <= MAX_RAW_KEY) return this.rawPrefix + key;
    return this.hashedPrefix + createHash('sha256').update(key).digest('base64url');
  }

  /** Throws at once (no promise) while the breaker is open; otherwise rejects when Redis cannot answer. */
  claim(key: string, ttlSeconds: number): Promise<boolean> {
    // EX takes whole seconds; rounding up keeps a record at least as long as asked.
    const ttl = Math.max(1, Math.ceil(ttlSeconds));
    // Fail closed at once while Redis hangs: no command, no timer, nothing queued.
    if (this.breaker.open) throw new ReplayStoreUnavailableError(HUNG);
    const redisKey = this.redisKey(key);
    if (!this.batching) return this.setOne(redisKey, ttl);
    return new Promise<boolean>((resolve, reject) => {
      this.pending.push({ key: redisKey, ttl, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        defer(this.flush);
      }
    });
  }

  private setOne(redisKey: string, ttl: number): Promise<boolean> {
    return this.connection.set(redisKey, '1', 'EX', ttl, 'NX').then(
      (reply) => {
        this.breaker.heard();
        return reply === 'OK';
      },
      (err: unknown) => {
        this.breaker.failed(err);
        throw new ReplayStoreUnavailableError(err);
      },
    );
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const all = this.pending;
    this.pending = [];
    if (this.breaker.open) {
      // Opened since these claims were made.
      const err = new ReplayStoreUnavailableError(HUNG);
      for (const p of all) p.reject(err);
      return;
    }
    for (let from = 0; from < all.length; from += MAX_BATCH) this.send(all.slice(from, from + MAX_BATCH));
  };

  private send(batch: readonly Pending[]): void {
    if (batch.length === 1 || !this.batching) {
      for (const p of batch) this.setOne(p.key, p.ttl).then(p.resolve, p.reject);
      return;
    }
    const args: (string | number)[] = batch.map((p) => p.key);
    for (const p of batch) args.push(p.ttl);
    (this.connection as ClaimConnection).mgwClaim(batch.length, ...args).then(
      (reply) => {
        this.breaker.heard();
        if (!Array.isArray(reply) || reply.length !== batch.length) {
          const err = new ReplayStoreUnavailableError(new Error('unexpected reply to the claim script'));
          for (const p of batch) p.reject(err);
          return;
        }
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(reply[i] === 1);
      },
      (err: unknown) => {
        if (scriptRefused(err)) {
          // Scripting disabled or not permitted for this user: claim key by key from now on.
          this.batching = false;
          this.logger?.warn({ err: { message: (err as Error).message } }, 'redis refused the claim script; claiming key by key');
          this.send(batch);
          return;
        }
        this.breaker.failed(err);
        const e = new ReplayStoreUnavailableError(err);
        for (const p of batch) p.reject(e);
      },
    );
  }

  async release(key: string): Promise<void> {
    if (this.breaker.open) {
      this.logger?.warn('could not release a replay-store key (redis not answering); it expires with its TTL');
      return;
    }
    try {
      await this.connection.del(this.redisKey(key));
    } catch (err) {
      this.breaker.failed(err);
      this.logger?.warn({ err: { message: (err as Error).message } }, 'could not release a replay-store key; it expires with its TTL');
    }
  }

  /** False while disconnected, or while the breaker is open (Redis hung). */
  ready(): boolean {
    return this.breaker.ready();
  }

  /** The first connection attempt's outcome, bounded by the connect timeout plus one command's. */
  opened(): Promise<void> {
    return firstOutcome(this.connection, this.openTimeoutMs);
  }

  close(): Promise<void> {
    this.breaker.stop();
    return closeRedis(this.connection);
  }
}

/** The server will not run scripts (unknown command, ACL, or a proxy without scripting). */
function scriptRefused(err: unknown): boolean {
  const m = err instanceof Error ? err.message : '';
  return /^(ERR unknown command|NOPERM|ERR .*script.*disabled|ERR .*not allowed)/i.test(m);
}
