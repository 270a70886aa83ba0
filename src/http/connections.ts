/**
 * The cap on open client connections to the proxy listener (`limits.max_connections`), so that
 * connections any client can open (idle ones included) cannot take every file descriptor of the
 * process: with none left, the admin listener (`/healthz`, so the liveness probe restarts the pod),
 * Mission Status queries, JWKS fetches, upstream connections and evidence reopens all fail (r21j 7).
 *
 * Not set, the cap is derived from the process's open-file limit N. A fixed reserve R (the admin
 * listener, Redis, Status, JWKS, evidence, logs) is kept; each client connection may hold one
 * upstream socket at most (a pool connection, of which there are `upstream.connections` U, or a
 * WebSocket tunnel's, at most `upstream.websocket_tunnels` T). So with C client connections the
 * process holds at most R + C + min(C, U + T) descriptors, and the largest C that keeps that within
 * N is max(N - R - U - T, floor((N - R) / 2)) (r22a 2: a floor of N / 2 did not keep R). Past the
 * cap Node closes a new connection as soon as it is accepted.
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
  const left = nofile - FIXED_RESERVE;
  return Math.max(MIN_CONNECTIONS, left - upstreamConnections - websocketTunnels, Math.floor(left / 2));
}

/** The derived cap is never below this (a limit too small for the reserve still serves a few). */
const MIN_CONNECTIONS = 16;
