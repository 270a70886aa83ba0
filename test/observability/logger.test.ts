/**
 * The operational log's own bound (r21j 3): lines waiting for a stderr nobody reads are capped, and
 * past the cap dropped (SonicBoom's `maxLength`, pino's destination), not kept in memory one per
 * failing request.
 */
import { pino } from 'pino';
import { expect, it } from 'vitest';
import { createLogger, MAX_PENDING_LOG_BYTES } from '../../src/observability/logger.js';

it('the stderr destination drops lines past MAX_PENDING_LOG_BYTES waiting for a reader (r21j 3)', () => {
  const stream = (createLogger('info') as unknown as Record<symbol, { maxLength?: number }>)[pino.symbols.streamSym];
  expect(stream?.maxLength).toBe(MAX_PENDING_LOG_BYTES);
  expect(MAX_PENDING_LOG_BYTES).toBe(16 * 1024 * 1024);
});
