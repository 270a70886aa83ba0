/**
 * Operational logs (pino). Secrets never reach a log line: credentials headers are redacted, and
 * denials log their code and cause, never the token or proof.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.dpop',
  'req.headers.cookie',
  'req.headers["proxy-authorization"]',
  'headers.authorization',
  'headers.dpop',
  'headers.cookie',
  'token',
  'proof',
  'assertion',
  'client_assertion',
  'private_key',
  '*.private_key',
  '*.d',
];

/**
 * Lines waiting for stderr, at most (bytes): past it new lines are dropped. A collector that stops
 * reading would otherwise keep every line in memory, one per failing request while the upstream or
 * the authority is down (r21j 3).
 */
export const MAX_PENDING_LOG_BYTES = 16 * 1024 * 1024;

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { service: 'mission-gateway' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  return destination ? pino(options, destination as never) : pino(options, pino.destination({ fd: 2, sync: false, maxLength: MAX_PENDING_LOG_BYTES }));
}
