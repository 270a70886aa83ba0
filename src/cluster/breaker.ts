/**
 * A circuit breaker for a Redis connection that hangs instead of dropping: a stopped server
 * (`kill -STOP`, a long fork or swap stall) or a black-holed link keeps the TCP connection open, so
 * ioredis stays `ready` and every command waits out its timeout, then lingers in ioredis's queue
 * until an answer that may never come.
 *
 *   closed  commands are sent as usual. The hot path only reads `open` and notes that a reply came.
 *   open    entered when a command times out. Callers fail at once (fail closed) and send nothing;
 *           readiness is false. One probe, PING (bounded by the command timeout), goes out at most
 *           every `probeIntervalMs` while none is in flight; its answer, or a fresh connection that
 *           completed its handshake, closes the breaker. After `reconnectAfterMs` without any answer
 *           the connection is dropped and reopened: that frees whatever ioredis still holds for the
 *           dead socket and catches a connection that is gone without a FIN (a vanished host, a NAT
 *           that forgot the flow), which TCP alone would notice only after many minutes.
 *
 * Readiness also probes an idle connection: when no reply has arrived since the previous readiness
 * check, that check sends one PING, so a hang is noticed without traffic (and a replica taken out of
 * a load balancer learns that Redis is back).
 *
 * Redis Cluster connections are not guarded (a PING reaches one node, a reconnect all of them): there,
 * each command keeps its own timeout.
 */
import type { Logger } from '../observability/logger.js';
import { Cluster } from 'ioredis';
import { isReady, type RedisConnection } from './redis-client.js';

export interface BreakerTuning {
  /** Pause between probes while open (a probe waits out its command timeout first). Default 250 ms. */
  readonly probeIntervalMs?: number;
  /** Open this long without any answer: drop and reopen the connection. Default 5,000 ms. */
  readonly reconnectAfterMs?: number;
}

/** What ioredis rejects a command with when `commandTimeout` passes. */
export function isCommandTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === 'Command timed out';
}

export class RedisBreaker {
  /** True while Redis is presumed hung: callers fail closed without sending a command. */
  open = false;
  /** Opened this many times (logged). */
  trips = 0;
  private heardSinceCheck = true;
  private probing = false;
  private silentSince = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly guarded: boolean;
  private readonly probeIntervalMs: number;
  private readonly reconnectAfterMs: number;

  constructor(
    private readonly connection: RedisConnection,
    private readonly role: string,
    private readonly logger: Logger | undefined,
    tuning: BreakerTuning = {},
  ) {
    this.guarded = !(connection instanceof Cluster);
    this.probeIntervalMs = tuning.probeIntervalMs ?? 250;
    this.reconnectAfterMs = tuning.reconnectAfterMs ?? 5_000;
    // A connection that completed a fresh handshake has been answered.
    connection.on('ready', () => this.reset());
  }

  /** A reply arrived (hot path: one store). */
  heard(): void {
    this.heardSinceCheck = true;
  }

  /** A command failed; a timeout opens the breaker. */
  failed(err: unknown): void {
    if (!this.open && this.guarded && isCommandTimeout(err)) this.trip();
  }

  /** For readiness: connected and not open. Probes a connection that has been silent since the last check. */
  ready(): boolean {
    if (this.open || !isReady(this.connection)) return false;
    if (!this.heardSinceCheck && this.guarded) this.probe();
    this.heardSinceCheck = false;
    return true;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.open = false;
  }

  private trip(): void {
    this.open = true;
    this.trips += 1;
    this.silentSince = Date.now();
    this.logger?.warn({ role: this.role, trips: this.trips }, 'redis is not answering (command timed out); failing closed at once until it answers a probe');
    this.timer = setInterval(this.tick, this.probeIntervalMs);
    this.timer.unref();
  }

  private reset(): void {
    this.heardSinceCheck = true;
    if (!this.open) return;
    this.stop();
    this.logger?.info({ role: this.role }, 'redis is answering again');
  }

  private readonly tick = (): void => {
    if (!this.open) return;
    if (Date.now() - this.silentSince >= this.reconnectAfterMs) {
      this.silentSince = Date.now();
      this.logger?.warn({ role: this.role }, 'redis has not answered for a while; reconnecting');
      // Rejects what ioredis still holds for this socket; 'ready' on the new one closes the breaker.
      this.connection.disconnect(true);
      return;
    }
    if (isReady(this.connection)) this.probe();
  };

  private probe(): void {
    if (this.probing) return;
    this.probing = true;
    this.connection.ping().then(
      () => {
        this.probing = false;
        this.reset();
      },
      (err: unknown) => {
        this.probing = false;
        this.failed(err);
      },
    );
  }
}
