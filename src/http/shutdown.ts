/**
 * Why a connection closed under a request still in flight, when it was not the client going away:
 * the gateway cut it when the shutdown grace period was over (Gateway.close), logged as cut at
 * shutdown, or answered it itself at the protocol level (a request body with broken framing),
 * recorded with that status rather than as a client that went away (499).
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** Why the upstream request of a response cut at shutdown is aborted (logged as its `err`). */
export const SHUTDOWN_MESSAGE = 'cut at shutdown: the grace period ended before the request did';

const cut = new WeakSet<Socket>();
const answered = new WeakMap<Socket, number>();

/** Marks a connection the gateway is about to destroy at the end of the grace period. */
export function cutAtShutdown(socket: Socket): void {
  cut.add(socket);
}

/** Marks a connection the gateway answered with `status` (400, 408, 431) at the protocol level. */
export function answeredAtProtocolLevel(socket: Socket, status: number): void {
  answered.set(socket, status);
}

/**
 * Why the upstream request of a response whose connection closed first is aborted: its `code` is
 * `shutdown`, `protocol_error` (with the `status` the client got), or none for a client that went away.
 */
export function closedReason(res: ServerResponse): Error & { code?: string; status?: number } {
  const socket = res.socket;
  if (socket !== null && cut.has(socket)) return Object.assign(new Error(SHUTDOWN_MESSAGE), { code: 'shutdown' });
  const status = socket === null ? undefined : answered.get(socket);
  if (status !== undefined) return Object.assign(new Error(`answered ${status} by the gateway: the request's framing broke while it was forwarded`), { code: 'protocol_error', status });
  return new Error('client closed');
}
