/**
 * The replica bus: a Mission lifecycle change verified by one replica reaches every replica.
 *
 * Backed by one Redis stream rather than plain pub/sub, because a missed revocation is a security
 * failure: pub/sub drops whatever is published while a subscriber is reconnecting, a stream lets the
 * reader continue from the last entry it saw. The stream is trimmed (`MAXLEN ~`), so it stays
 * bounded. A new replica first reads the entries of the last `catchUpMs` (default 60 s, meant to be
 * `mission.max_stale_s`), so it also knows the recent non-active states it never cached.
 *
 * Each entry carries the publishing replica's instance id; a replica ignores its own entries. A
 * malformed entry is dropped and counted, never delivered.
 *
 * A reader that fell further behind than the trimmed length (paused, partitioned, swamped) would
 * read on past the changes it lost, unaware. After each read it asks Redis (XINFO STREAM) whether
 * the stream was ever trimmed and where it now starts: trimmed, and starting after the position the
 * read was from, entries after that position may be gone. It counts that (`result="gap"`) and tells its
 * subscribers, whose cached states are then asked again. A reader that keeps up stays inside the
 * kept window (about `maxLength` entries), so only a reader that far behind is ever told.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import client from 'prom-client';
import type { Logger } from '../observability/logger.js';
import type { MissionBus, MissionChange } from '../mission/types.js';
import { closeRedis, firstAttemptMs, firstOutcome, isReady, openRedis, watchConnection, type RedisConnection, type RedisTuning } from './redis-client.js';
import { parseRedisUrl, type RedisTarget } from './redis-url.js';

/** One replica only: nothing to tell anyone. */
export class LocalMissionBus implements MissionBus {
  publish(_change: MissionChange): Promise<void> {
    return Promise.resolve();
  }
  subscribe(_handler: (change: MissionChange) => void): void {}
  ready(): boolean {
    return true;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

export interface RedisMissionBusOptions extends RedisTuning {
  readonly url: string | RedisTarget;
  /** Key prefix (config `replay_store.key_prefix`); the stream is `<prefix>mission-changes`. */
  readonly keyPrefix?: string;
  /** This replica's id; entries carrying it are ignored. Default: a random UUID. */
  readonly instanceId?: string;
  /** Approximate stream length kept in Redis. Default 10,000 entries. */
  readonly maxLength?: number;
  /** How far back a new subscriber reads. Default 60,000 ms. */
  readonly catchUpMs?: number;
  /** XREAD BLOCK time; bounds how long close() waits for the reader. Default 5,000 ms. */
  readonly blockMs?: number;
  readonly logger?: Logger;
  /** Registers `mission_gateway_bus_messages_total{result}` here when given. */
  readonly registry?: client.Registry;
}

export type BusResult = 'published' | 'publish_failed' | 'delivered' | 'own' | 'malformed' | 'handler_error' | 'gap';

const MAX_MESSAGE_BYTES = 16_384;
const READ_COUNT = 100;

function isNumberOrNull(v: unknown): v is number | null {
  return v === null || (typeof v === 'number' && Number.isFinite(v));
}

/** The MissionChange inside a bus message, or null when anything about it is off. */
export function parseBusMessage(raw: string): { from: string; change: MissionChange } | null {
  if (raw.length > MAX_MESSAGE_BYTES) return null;
  let msg: unknown;
  try {
    msg = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof msg !== 'object' || msg === null) return null;
  const { v, from, change } = msg as Record<string, unknown>;
  if (v !== 1 || typeof from !== 'string' || typeof change !== 'object' || change === null) return null;
  const c = change as Record<string, unknown>;
  if (
    typeof c.issuer !== 'string' ||
    typeof c.id !== 'string' ||
    typeof c.state !== 'string' ||
    typeof c.version !== 'number' ||
    !Number.isFinite(c.version) ||
    !isNumberOrNull(c.suspendUntil) ||
    !isNumberOrNull(c.expiresAt) ||
    typeof c.refetch !== 'boolean' ||
    typeof c.jti !== 'string' ||
    typeof c.set !== 'string'
  ) {
    return null;
  }
  // Rebuilt member by member so that nothing unexpected rides along into the state cache.
  return {
    from,
    change: Object.freeze({
      issuer: c.issuer,
      id: c.id,
      state: c.state,
      version: c.version,
      suspendUntil: c.suspendUntil,
      expiresAt: c.expiresAt,
      refetch: c.refetch,
      jti: c.jti,
      set: c.set,
    }),
  };
}

function counter(registry: client.Registry | undefined): client.Counter<'result'> | undefined {
  if (registry === undefined) return undefined;
  const name = 'mission_gateway_bus_messages_total';
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as client.Counter<'result'>;
  return new client.Counter({ name, help: 'Replica bus messages, by result', labelNames: ['result'], registers: [registry] });
}

export class RedisMissionBus implements MissionBus {
  readonly instanceId: string;
  readonly stream: string;
  /** Running totals by result (also in the metric when a registry was given). */
  readonly counts: Record<BusResult, number> = { published: 0, publish_failed: 0, delivered: 0, own: 0, malformed: 0, handler_error: 0, gap: 0 };

  private readonly writer: RedisConnection;
  private readonly reader: RedisConnection;
  private readonly handlers: Array<(change: MissionChange) => void> = [];
  private readonly gapHandlers: Array<() => void> = [];
  private readonly maxLength: number;
  private readonly catchUpMs: number;
  /** Bound on waiting for the first connection attempts (connect timeout plus one command). */
  private readonly openTimeoutMs: number;
  private readonly blockMs: number;
  private readonly logger: Logger | undefined;
  private readonly metric: client.Counter<'result'> | undefined;
  private readonly stop = new AbortController();
  private loop: Promise<void> | null = null;
  private lastId: string | null = null;
  /** The position a gap was last reported for (each gap is reported once). */
  private gapAt: string | null = null;
  /** The stream existed when last looked at (its deletion is a gap). */
  private streamSeen = false;
  /** `lastId` is an entry read from the stream (not the clock position a reader starts at). */
  private positionRead = false;
  /** The last XINFO was refused by Redis's ACL (NOPERM): gaps go unseen. */
  private gapCheckDenied = false;
  /**
   * A read and its gap check have succeeded since the reader (re)connected or a read last failed:
   * every later entry will be read. Until then the bus is not ready and its reads do not block.
   */
  private reading = false;
  /** Reads failed in a row since the last one that succeeded. */
  private failures = 0;

  constructor(options: RedisMissionBusOptions) {
    const target = typeof options.url === 'string' ? parseRedisUrl(options.url) : options.url;
    this.instanceId = options.instanceId ?? randomUUID();
    this.stream = `${options.keyPrefix ?? 'mgw:'}mission-changes`;
    this.maxLength = options.maxLength ?? 10_000;
    this.catchUpMs = options.catchUpMs ?? 60_000;
    this.blockMs = options.blockMs ?? 5_000;
    this.logger = options.logger;
    this.metric = counter(options.registry);
    this.openTimeoutMs = firstAttemptMs(options);
    this.writer = openRedis(target, options, { connectionName: 'mgw-bus-publish' });
    // The reader blocks in XREAD, so it gets no command timeout; a dead socket is caught by the
    // blocking-command guard (BLOCK time plus a grace) instead.
    this.reader = openRedis(target, { ...options, commandTimeoutMs: null }, {
      connectionName: 'mgw-bus-subscribe',
      blockingTimeout: this.blockMs,
      blockingTimeoutGrace: 1000,
    });
    watchConnection(this.writer, 'bus_publish', this.logger);
    watchConnection(this.reader, 'bus_subscribe', this.logger);
  }

  private count(result: BusResult): void {
    this.counts[result] += 1;
    this.metric?.labels(result).inc();
  }

  /** Resolves once Redis has stored the change; rejects (fail closed) when it cannot. */
  async publish(change: MissionChange): Promise<void> {
    const message = JSON.stringify({ v: 1, from: this.instanceId, change });
    try {
      await this.writer.xadd(this.stream, 'MAXLEN', '~', this.maxLength, '*', 'm', message);
      this.count('published');
    } catch (err) {
      this.count('publish_failed');
      throw new Error('replica bus unavailable', { cause: err });
    }
  }

  subscribe(handler: (change: MissionChange) => void, onGap?: () => void): void {
    this.handlers.push(handler);
    if (onGap !== undefined) this.gapHandlers.push(onGap);
    this.loop ??= this.run();
  }

  /** True when both connections are up and, once subscribed, the reader has its position in the stream. */
  ready(): boolean {
    return isReady(this.writer) && isReady(this.reader) && (this.loop === null || (this.reading && !this.gapCheckDenied));
  }

  /** Both connections' first connection attempts (see firstOutcome). */
  async opened(): Promise<void> {
    await Promise.all([firstOutcome(this.writer, this.openTimeoutMs), firstOutcome(this.reader, this.openTimeoutMs)]);
  }

  async close(): Promise<void> {
    this.stop.abort();
    // No QUIT on the reader: Redis would answer it only after the pending XREAD BLOCK returns.
    // Disconnecting ends that XREAD at once.
    this.reader.disconnect();
    await Promise.all([closeRedis(this.writer), this.loop]);
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.stop.signal }).catch(() => undefined);
  }

  private async run(): Promise<void> {
    const signal = this.stop.signal;
    while (!signal.aborted) {
      if (!isReady(this.reader)) {
        this.reading = false;
        await this.pause(50);
        continue;
      }
      try {
        if (this.lastId === null) {
          // Start from Redis's clock, not ours: replicas' clocks may disagree with the server's.
          const [sec, usec] = await this.reader.time();
          const nowMs = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
          this.lastId = `${Math.max(0, nowMs - this.catchUpMs)}-0`;
        }
        const from = this.lastId;
        const fromRead = this.positionRead;
        // Until a read and its gap check have succeeded (at start, after a reconnect or a failed
        // read) the read does not block and the bus does not say it is reading: a retry that fails
        // again (a Redis user without XREAD or XINFO) must never show ready, not even for one round trip.
        const reply = (await (this.reading
          ? this.reader.xread('COUNT', READ_COUNT, 'BLOCK', this.blockMs, 'STREAMS', this.stream, from)
          : this.reader.xread('COUNT', READ_COUNT, 'STREAMS', this.stream, from))) as
          | Array<[string, Array<[string, string[]]>]>
          | null;
        this.failures = 0;
        if (reply !== null) {
          for (const [, entries] of reply) {
            for (const [id, fields] of entries) {
              this.lastId = id;
              this.positionRead = true;
              this.deliver(fields);
            }
          }
        }
        // After the read, not before: a trim that came before the read (even one while it
        // blocked, by a transaction that added and trimmed at once) is seen, since the stream
        // then starts after `from`. One after it is reported too (harmless: Status is asked again).
        await this.checkGap(from, fromRead);
        this.reading = true;
      } catch (err) {
        if (signal.aborted) break;
        // A failure its retry repeats is a warning, once per run (an ACL without XREAD or TIME fails
        // every time); a single one (a connection dropped while starting) is not.
        this.failures++;
        if (this.failures === 2) this.logger?.warn({ err: { message: (err as Error).message } }, 'replica bus read failed; revocations from other replicas arrive only through Mission Status until it reads again; retrying');
        else this.logger?.debug({ err: { message: (err as Error).message } }, 'replica bus read failed; retrying');
        this.reading = false;
        await this.pause(100);
      }
    }
  }

  /**
   * Reports a gap when entries after `position` may have been trimmed before this reader read them.
   * `read`: `position` is an entry this reader read (not the clock it started from), so a stream that
   * now starts after it lost it: trimmed, or deleted and created again by a later XADD (r21a 2).
   */
  private async checkGap(position: string, read: boolean): Promise<void> {
    if (position === this.gapAt) return;
    let info: unknown[];
    try {
      info = (await this.reader.xinfo('STREAM', this.stream)) as unknown[];
    } catch (err) {
      const message = (err as Error).message;
      if (/^NOPERM/.test(message)) {
        // A Redis user without XINFO: gaps cannot be seen, so this replica is not ready (r21a 6).
        if (!this.gapCheckDenied) this.logger?.warn({ err: { message } }, 'replica bus cannot check for gaps (the Redis user needs XINFO); not ready until it can');
        this.gapCheckDenied = true;
        return;
      }
      // No stream: nothing was trimmed, unless there was one (FLUSHALL, DEL): what this replica had
      // not read of it is gone (r20e 1).
      if (!this.streamSeen || !/no such key/i.test(message)) return;
      this.streamSeen = false;
      this.reportGap(position, null);
      return;
    }
    this.gapCheckDenied = false;
    this.streamSeen = true;
    const field = (name: string): unknown => {
      for (let i = 0; i + 1 < info.length; i += 2) if (info[i] === name) return info[i + 1];
      return undefined;
    };
    const length = Number(field('length'));
    const added = field('entries-added'); // Redis 7; before it, a full stream may have been trimmed
    const trimmed = typeof added === 'number' ? added > length : length >= this.maxLength;
    const first = field('first-entry');
    const firstId = Array.isArray(first) && typeof first[0] === 'string' ? first[0] : null;
    if (firstId === null) {
      // Emptied (XTRIM MAXLEN 0): a gap if it had an entry this replica never read (r20e 1).
      const newest = field('last-generated-id');
      const last = this.lastId ?? position;
      if (trimmed && typeof newest === 'string' && compareIds(newest, last) > 0) this.reportGap(position, null);
      return;
    }
    if (!(trimmed || read) || compareIds(firstId, position) <= 0) return;
    this.reportGap(position, firstId);
  }

  private reportGap(position: string, firstId: string | null): void {
    this.gapAt = position;
    this.count('gap');
    this.logger?.warn({ position, first: firstId }, 'replica bus: changes may have been trimmed before this replica read them; cached Mission states will be asked again');
    for (const onGap of this.gapHandlers) {
      try {
        onGap();
      } catch (err) {
        this.count('handler_error');
        this.logger?.error({ err: { message: (err as Error).message } }, 'replica bus gap handler failed');
      }
    }
  }

  private deliver(fields: readonly string[]): void {
    let raw: string | undefined;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === 'm') raw = fields[i + 1];
    }
    const parsed = raw === undefined ? null : parseBusMessage(raw);
    if (parsed === null) {
      this.count('malformed');
      this.logger?.warn('replica bus: dropped a malformed message');
      return;
    }
    if (parsed.from === this.instanceId) {
      this.count('own');
      return;
    }
    this.count('delivered');
    for (const handler of this.handlers) {
      try {
        handler(parsed.change);
      } catch (err) {
        this.count('handler_error');
        this.logger?.error({ err: { message: (err as Error).message } }, 'replica bus handler failed');
      }
    }
  }
}

/** Orders two stream entry ids (`<ms>-<seq>`). */
export function compareIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(as) - BigInt(bs);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}
