/**
 * One place that opens Redis connections for the replay store and the replica bus, with the
 * settings that make a down Redis fail fast instead of queueing: no offline queue, no per-command
 * retries, a command timeout, and reconnection forever with capped exponential backoff.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { parseRedisUrl, type RedisTarget } from './redis-url.js';

export type RedisConnection = Redis | Cluster;

export interface RedisTuning {
  /** TCP connect (and handshake) timeout. Default 1000 ms (config `replay_store.connect_timeout_ms`). */
  readonly connectTimeoutMs?: number;
  /**
   * Upper bound on one command's round trip; past it the command rejects (the caller denies).
   * Default 500 ms. `null` for a connection that only runs blocking reads.
   */
  readonly commandTimeoutMs?: number | null;
  /** Cap of the reconnect backoff (100 ms doubling). Default 2000 ms. */
  readonly maxBackoffMs?: number;
}

export function backoff(maxMs: number): (times: number) => number {
  return (times) => Math.min(100 * 2 ** Math.min(times - 1, 10), maxMs);
}

const DEFAULT_CONNECT_TIMEOUT_MS = 1000;
const DEFAULT_COMMAND_TIMEOUT_MS = 500;

/** How long a first connection attempt may take: the connect timeout, then one command (the ready check). */
export function firstAttemptMs(tuning: RedisTuning): number {
  return (tuning.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS) + (tuning.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
}

function common(tuning: RedisTuning): RedisOptions {
  const options: RedisOptions = {
    connectTimeout: tuning.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    // Fail closed at once while disconnected: a queued claim would answer after the request ended.
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: backoff(tuning.maxBackoffMs ?? 2000),
    // Redis reachable but not accepting writes (a replica after failover): reconnect to the new master.
    reconnectOnError: (err) => err.message.startsWith('READONLY'),
  };
  const commandTimeout = tuning.commandTimeoutMs === undefined ? DEFAULT_COMMAND_TIMEOUT_MS : tuning.commandTimeoutMs;
  if (commandTimeout !== null) options.commandTimeout = commandTimeout;
  return options;
}

/** `extra` is merged into every connection's options (for example the blocking-command guard). */
export function openRedis(target: RedisTarget | string, tuning: RedisTuning = {}, extra: RedisOptions = {}): RedisConnection {
  const t = typeof target === 'string' ? parseRedisUrl(target) : target;
  const base = { ...common(tuning), ...extra };
  if (t.kind === 'cluster') {
    const { retryStrategy, enableOfflineQueue, ...perNode } = base;
    const options: ClusterOptions = {
      ...t.options,
      enableOfflineQueue: enableOfflineQueue ?? false,
      clusterRetryStrategy: retryStrategy ?? backoff(2000),
      redisOptions: { ...perNode, ...t.options.redisOptions },
    };
    return new Cluster(
      t.nodes.map((n) => ({ host: n.host, port: n.port })),
      options,
    );
  }
  return new Redis({ ...base, ...t.options });
}

export function isReady(connection: RedisConnection): boolean {
  return connection.status === 'ready';
}

/**
 * Resolves at the connection's first outcome: ready, an error (refused, a failed handshake), the
 * end, or `timeoutMs`, whichever comes first. Never rejects: a Redis down at start is the
 * fail-closed case (claims 503, `/readyz` 503), not a reason to refuse to start.
 */
export function firstOutcome(connection: RedisConnection, timeoutMs: number): Promise<void> {
  if (connection.status === 'ready' || connection.status === 'end') return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      connection.off('ready', done);
      connection.off('error', done);
      connection.off('end', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    timer.unref();
    connection.once('ready', done);
    connection.once('error', done);
    connection.once('end', done);
  });
}

/**
 * Logs one line when the connection is lost and one when it is back, never per reconnect attempt,
 * and never the URL (it may carry a password). While it is down, the first error says why at warn
 * (a Redis that refuses the credentials, or is unreachable from the start, r20e 2), the rest go to
 * debug. The `error` listener also keeps an unreachable Redis from crashing the process with an
 * unhandled 'error' event.
 */
export function watchConnection(connection: RedisConnection, role: string, logger: Logger | undefined, onChange?: (up: boolean) => void): void {
  let up = false;
  let everUp = false;
  let toldWhy = false;
  connection.on('ready', () => {
    if (!up) logger?.info({ role }, everUp ? 'redis connection restored' : 'redis connected');
    up = true;
    everUp = true;
    toldWhy = false;
    onChange?.(true);
  });
  connection.on('error', (err: Error) => {
    if (up) {
      logger?.warn({ role, err: { message: err.message, name: err.name } }, 'redis error');
    } else if (!toldWhy) {
      toldWhy = true;
      logger?.warn({ role, err: { message: err.message, name: err.name } }, 'redis unavailable; retrying');
    } else {
      logger?.debug({ role, err: { message: err.message } }, 'redis still unavailable');
    }
  });
  connection.on('close', () => {
    if (up) logger?.warn({ role }, 'redis connection lost; reconnecting');
    up = false;
    onChange?.(false);
  });
}

/** Closes politely when connected, and always stops reconnecting. */
export async function closeRedis(connection: RedisConnection): Promise<void> {
  if (connection.status === 'end') return;
  if (connection.status === 'ready') {
    try {
      await connection.quit();
    } catch {
      // the server went away while we were leaving; disconnect below is enough
    }
  }
  connection.disconnect();
}
