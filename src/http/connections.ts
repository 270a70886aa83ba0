/**
 * The cap on open client connections to the proxy listener (`limits.max_connections`), so that
 * connections any client can open (idle ones included) cannot take every file descriptor of the
 * process: with none left, the admin listener (`/healthz`, so the liveness probe restarts the pod),
 * Mission Status queries, JWKS fetches, upstream connections and evidence reopens all fail (r21j 7).
 *
 * Not set, the cap is derived from the process's open-file limit: what is left of it once the
 * dependencies are provided for (upstream pool, the upstream side of each WebSocket tunnel, and a
 * fixed reserve for the admin listener, Redis, Status, JWKS, evidence and logs), but never less
 * than half of it. Past the cap Node closes a new connection as soon as it is accepted.
 */
import { readFileSync } from 'node:fs';

/** Descriptors kept for everything but client connections and the upstream sockets counted apart. */
export const FIXED_RESERVE = 128;

/** The soft limit on open files of this process (Linux), or null when unknown or unlimited. */
export function openFileLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | null {
  let text: string;
  try {
    text = read();
  } catch {
    return null;
  }
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  if (soft === undefined || !/^\d+$/.test(soft)) return null;
  return Number(soft);
}

/** `limits.max_connections` when the config does not set it: 0 (no cap) when the limit is unknown. */
export function derivedMaxConnections(nofile: number | null, upstreamConnections: number, websocketTunnels: number): number {
  if (nofile === null) return 0;
  return Math.max(Math.floor(nofile / 2), nofile - FIXED_RESERVE - upstreamConnections - websocketTunnels);
}
