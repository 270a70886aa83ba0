/**
 * Scale-out: which replay store and replica bus a gateway uses, from config `replay_store`.
 *
 *   replay_store: { type: memory }   one replica: in-process replay records, no bus
 *   replay_store: { type: redis, url, key_prefix, connect_timeout_ms }
 *                                    several replicas: DPoP and ID-JAG `jti`s single use across all
 *                                    of them, Mission changes shared through a Redis stream
 */
import { MemoryReplayStore } from '../auth/replay.js';
import type { ReplayStore } from '../auth/types.js';
import type { Config } from '../config/schema.js';
import type { MissionBus } from '../mission/types.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { LocalMissionBus, RedisMissionBus } from './mission-bus.js';
import { RedisReplayStore } from './replay-store.js';

export { LocalMissionBus, RedisMissionBus, parseBusMessage, type RedisMissionBusOptions, type BusResult } from './mission-bus.js';
export { RedisReplayStore, ReplayStoreUnavailableError, type RedisReplayStoreOptions } from './replay-store.js';
export { RedisBreaker, type BreakerTuning } from './breaker.js';
export { parseRedisUrl, RedisUrlError, type RedisTarget, type RedisNode } from './redis-url.js';
export type { RedisTuning } from './redis-client.js';

export type ReplayStoreConfig = Config['replay_store'];

export interface ReplayStoreDeps {
  /** Capacity of the in-process store for `type: memory` (config `dpop.replay_max_entries`). */
  readonly maxEntries?: number;
  readonly logger?: Logger;
  /** For the memory store's eviction counter. */
  readonly metrics?: Metrics;
  /** Redis command timeout; default 500 ms. */
  readonly commandTimeoutMs?: number;
}

export function createReplayStore(config: ReplayStoreConfig, deps: ReplayStoreDeps = {}): ReplayStore {
  if (config.type === 'memory') {
    return new MemoryReplayStore({
      ...(deps.maxEntries !== undefined && { maxEntries: deps.maxEntries }),
      ...(deps.metrics !== undefined && { metrics: deps.metrics }),
    });
  }
  return new RedisReplayStore({
    url: config.url,
    keyPrefix: config.key_prefix,
    connectTimeoutMs: config.connect_timeout_ms,
    ...(deps.commandTimeoutMs !== undefined && { commandTimeoutMs: deps.commandTimeoutMs }),
    ...(deps.logger !== undefined && { logger: deps.logger }),
  });
}

export interface MissionBusDeps {
  readonly logger?: Logger;
  readonly metrics?: Metrics;
  /** This replica's id (default: random). */
  readonly instanceId?: string;
  /** How far back a starting replica reads past changes; pass `mission.max_stale_s * 1000`. */
  readonly catchUpMs?: number;
}

export function createMissionBus(config: ReplayStoreConfig, deps: MissionBusDeps = {}): MissionBus {
  if (config.type === 'memory') return new LocalMissionBus();
  return new RedisMissionBus({
    url: config.url,
    keyPrefix: config.key_prefix,
    connectTimeoutMs: config.connect_timeout_ms,
    ...(deps.instanceId !== undefined && { instanceId: deps.instanceId }),
    ...(deps.catchUpMs !== undefined && { catchUpMs: deps.catchUpMs }),
    ...(deps.logger !== undefined && { logger: deps.logger }),
    ...(deps.metrics !== undefined && { registry: deps.metrics.registry }),
  });
}
