/**
 * Small helpers several readers share: over parsed JSON (claims, Status answers, SETs, JSON-RPC
 * messages, the config), and the config's seconds as milliseconds. A leaf module, importing nothing.
 */

/** A JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Freezes a parsed value and everything in it; returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Seconds from the config as the whole milliseconds Node's server and undici require (it refuses to start on
 * 2009.9999999999998, which is 2.01 * 1000 as a double). Rounding keeps the order of two values,
 * so the config's headers/request timeout check still holds; a positive value stays at least 1 ms
 * (0 disables a timeout).
 */
export function wholeMs(seconds: number): number {
  return seconds === 0 ? 0 : Math.max(1, Math.round(seconds * 1000));
}
