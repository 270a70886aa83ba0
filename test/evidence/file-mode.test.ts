/**
 * An evidence file names subjects and clients: the sink creates it readable by its owner (and a
 * log shipper in its group), never by everyone. An existing file keeps the mode its owner gave it.
 */
import { chmodSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { EVIDENCE_FILE_MODE, EvidenceLog } from '../../src/evidence/log.js';
import { Metrics } from '../../src/observability/metrics.js';

describe('evidence file mode', () => {
  it('a new file is created 0640 (before the umask): no access for others, no group write', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'mgw-mode-')), 'evidence.jsonl');
    const old = process.umask(0o022);
    try {
      const log = await EvidenceLog.open({ sink: file, metrics: new Metrics({ defaultMetrics: false }), logger: pino({ level: 'silent' }) });
      await log.close();
    } finally {
      process.umask(old);
    }
    expect(EVIDENCE_FILE_MODE).toBe(0o640);
    expect(statSync(file).mode & 0o777).toBe(0o640);
  });

  it('an existing file keeps its mode', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'mgw-mode-')), 'evidence.jsonl');
    writeFileSync(file, '');
    chmodSync(file, 0o600);
    const log = await EvidenceLog.open({ sink: file, metrics: new Metrics({ defaultMetrics: false }), logger: pino({ level: 'silent' }) });
    await log.close();
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });
});
