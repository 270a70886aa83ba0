/**
 * Connections the gateway cuts when the shutdown grace period is over (Gateway.close): a request
 * still in flight on one is aborted upstream, and logged, as cut at shutdown, not as a client that
 * went away.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** Why the upstream request of a response cut at shutdown is aborted (logged as its `err`). */
export const SHUTDOWN_MESSAGE = 'cut at shutdown: the grace period ended before the request did';

const cut = new WeakSet<Socket>();

/** Marks a connection the gateway is about to destroy at the end of the grace period. */
export function cutAtShutdown(socket: Socket): void {
  cut.add(socket);
}

/** Why the upstream request of a response whose connection closed first is aborted. */
export function closedReason(res: ServerResponse): Error {
  const socket = res.socket;
  if (socket !== null && cut.has(socket)) return Object.assign(new Error(SHUTDOWN_MESSAGE), { code: 'shutdown' });
  return new Error('client closed');
}
