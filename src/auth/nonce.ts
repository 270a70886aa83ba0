/**
 * Stateless DPoP server nonces (RFC 9449 section 8).
 *
 * A nonce is `<window>.<mac>` where `window` = floor(now / nonce_window_s) and `mac` is
 * HMAC-SHA-256 over the window number under a key derived per window from the secret (so the
 * effective key rotates every window). A nonce is accepted in its own window and the next one,
 * i.e. it lives between one and two windows. No state is kept: any replica with the same
 * `dpop.nonce_secret` accepts it. Without a configured secret, a random per-process secret is
 * used, which only works for a single replica: replicas behind one load balancer need a shared
 * `nonce_secret`, or clients will keep getting `use_dpop_nonce` from the replica that did not issue
 * theirs. The random secret is the process's, not the config's: a reload keeps the nonces issued
 * before it valid.
 *
 * Each window's nonce is computed once and cached, so issuing and checking are string operations.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { systemClock, type Clock } from './jws.js';

export interface NonceIssuerOptions {
  readonly windowSeconds: number;
  /** At least 32 characters; random per process (PROCESS_SECRET) when absent. */
  readonly secret?: string | undefined;
  readonly clock?: Clock;
}

/** The secret of every NonceIssuer without a configured one in this process (see above). */
const PROCESS_SECRET = randomBytes(32);

export class NonceIssuer {
  private readonly windowMs: number;
  private readonly secret: Buffer;
  private readonly clock: Clock;
  private cachedWindow = Number.NaN;
  private cachedCurrent = '';
  private cachedPrevious = '';

  constructor(opts: NonceIssuerOptions) {
    this.windowMs = opts.windowSeconds * 1000;
    this.secret = opts.secret !== undefined ? Buffer.from(opts.secret, 'utf8') : PROCESS_SECRET;
    this.clock = opts.clock ?? systemClock;
  }

  private nonceFor(window: number): string {
    const key = createHmac('sha256', this.secret).update(`dpop-nonce-key:${window}`).digest();
    const mac = createHmac('sha256', key).update(`dpop-nonce:${window}`).digest('base64url').slice(0, 32);
    return `${window.toString(36)}.${mac}`;
  }

  private refresh(): void {
    const window = Math.floor(this.clock() / this.windowMs);
    if (window === this.cachedWindow) return;
    this.cachedPrevious = window - 1 === this.cachedWindow ? this.cachedCurrent : this.nonceFor(window - 1);
    this.cachedCurrent = this.nonceFor(window);
    this.cachedWindow = window;
  }

  /** The nonce of the current window. */
  issue(): string {
    this.refresh();
    return this.cachedCurrent;
  }

  /** True for the current or the previous window's nonce. */
  check(nonce: unknown): boolean {
    if (typeof nonce !== 'string' || nonce.length > 64) return false;
    this.refresh();
    // Public values compared to a fixed string: the MAC is what an attacker cannot forge, timing
    // does not help to guess 192 bits.
    return nonce === this.cachedCurrent || nonce === this.cachedPrevious;
  }
}
