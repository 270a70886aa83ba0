/**
 * The decision evidence sink (SPEC section 9): one JSON line per request on stdout, stderr or an
 * append-only file, chained by `sequence` and `prev_hash`, optionally signed (format.ts).
 *
 * - Ordered and off the response path: write() only queues; one flush per event-loop turn builds
 *   the lines (sequence, chain, signature) in queue order and hands them to the stream in one write.
 * - Restart: a file sink continues the existing file's chain and sequence (readChainTail). A torn
 *   last line (a crash mid-write) is kept, terminated with a newline, and chained over; the lost
 *   record shows as a break in `verify-evidence`, never silently.
 * - Fail closed: a write error, or more than `maxPendingBytes` waiting for the disk, makes
 *   healthy() false (the pipeline then denies `evidence_unavailable`, /readyz fails,
 *   `mission_gateway_evidence_sink_up` is 0). A file sink is reopened every `retryMs` and recovers
 *   once the file is writable again, continuing the chain from what actually reached the file.
 *   stdout/stderr do not recover (a closed pipe stays closed).
 * - One writer per file: two gateways appending to the same file would interleave two chains.
 */
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { appendFile, open } from 'node:fs/promises';
import { sign } from 'node:crypto';
import type { Writable } from 'node:stream';
import { jcs } from '../authority/json.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { ENVELOPE_FORMAT, JWS_CTY, JWS_TYP, lineHash, orderRecord } from './format.js';
import { loadSigningKey, type SigningKey } from './keys.js';
import type { EvidenceRecord, EvidenceSink } from './record.js';

export interface EvidenceLogOptions {
  /** 'stdout', 'stderr' or an absolute file path. */
  readonly sink: string;
  readonly sign?: { readonly privateKeyFile: string; readonly kid?: string | undefined } | undefined;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Bytes allowed to wait for a slow disk before the sink reports unhealthy. Default 32 MiB. */
  readonly maxPendingBytes?: number;
  /** How often a failed file sink is reopened. Default 1000 ms. */
  readonly retryMs?: number;
}

export interface ChainTail {
  /** The last record's sequence (0 for a new or empty file). */
  readonly sequence: number;
  /** Hash of the last line's bytes, or null for a new or empty file. */
  readonly prevHash: string | null;
  /** True when the file does not end with a newline (a torn last write). */
  readonly torn: boolean;
}

function sequenceOf(line: Buffer): number | null {
  try {
    const v = JSON.parse(line.toString('utf8')) as { sequence?: unknown } | null;
    const s = v?.sequence;
    return typeof s === 'number' && Number.isSafeInteger(s) && s >= 1 ? s : null;
  } catch {
    return null;
  }
}

/** Reads the end of an evidence file to continue its chain: last line's hash, last readable sequence. */
export async function readChainTail(path: string): Promise<ChainTail> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { sequence: 0, prevHash: null, torn: false };
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size === 0) return { sequence: 0, prevHash: null, torn: false };
    for (let chunk = 64 * 1024; ; chunk *= 4) {
      const start = Math.max(0, size - chunk);
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      const torn = buf[buf.length - 1] !== 0x0a;
      let body = buf;
      if (start > 0) {
        const nl = buf.indexOf(0x0a);
        body = nl === -1 ? Buffer.alloc(0) : buf.subarray(nl + 1); // the first piece is a partial line
      }
      const lines: Buffer[] = [];
      let from = 0;
      for (let nl = body.indexOf(0x0a); nl !== -1; nl = body.indexOf(0x0a, from)) {
        lines.push(body.subarray(from, nl));
        from = nl + 1;
      }
      if (from < body.length) lines.push(body.subarray(from));
      const last = lines[lines.length - 1];
      if (last === undefined) {
        if (start > 0) continue;
        return { sequence: 0, prevHash: null, torn };
      }
      let sequence: number | null = null;
      for (let i = lines.length - 1; i >= 0 && sequence === null; i--) sequence = sequenceOf(lines[i]!);
      if (sequence === null && start > 0) continue;
      return { sequence: sequence ?? 0, prevHash: lineHash(last), torn };
    }
  } finally {
    await fh.close();
  }
}

// Captured at load: a test that fakes timers later must not stall evidence (or its recovery).
const defer = globalThis.setImmediate;
const later = globalThis.setTimeout;
const cancel = globalThis.clearTimeout;

interface Signer {
  readonly key: SigningKey;
  /** base64url of the protected header, computed once. */
  readonly header: string;
}

export class EvidenceLog implements EvidenceSink {
  private readonly opts: EvidenceLogOptions;
  private readonly signer: Signer | null;
  private readonly maxPending: number;
  private readonly retryMs: number;
  private stream: Writable | null = null;
  private file: WriteStream | null = null;
  private sequence = 0;
  private prevHash: string | null = null;
  private queue: EvidenceRecord[] = [];
  private scheduled = false;
  private failed = false;
  private congested = false;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;

  private constructor(opts: EvidenceLogOptions, signingKey: SigningKey | null) {
    this.opts = opts;
    this.maxPending = opts.maxPendingBytes ?? 32 * 1024 * 1024;
    this.retryMs = opts.retryMs ?? 1000;
    this.signer =
      signingKey === null
        ? null
        : {
            key: signingKey,
            header: Buffer.from(JSON.stringify({ alg: 'ES256', typ: JWS_TYP, cty: JWS_CTY, kid: signingKey.kid })).toString('base64url'),
          };
  }

  /**
   * Opens the sink. A bad signing key rejects (a configuration error). A file that cannot be opened
   * does not: the log starts unhealthy, so requests are denied, and keeps retrying.
   */
  static async open(opts: EvidenceLogOptions): Promise<EvidenceLog> {
    const key = opts.sign === undefined ? null : await loadSigningKey(opts.sign.privateKeyFile, opts.sign.kid);
    const log = new EvidenceLog(opts, key);
    if (opts.sink === 'stdout' || opts.sink === 'stderr') {
      const s = opts.sink === 'stdout' ? process.stdout : process.stderr;
      s.on('error', (err: Error) => log.fail(err));
      log.stream = s;
      opts.metrics.evidenceHealthy.set(1);
    } else {
      await log.openFile();
    }
    return log;
  }

  /** The public key records are signed with, or null when unsigned (for publishing beside the file). */
  get publicKey(): SigningKey['publicKey'] | null {
    return this.signer?.key.publicKey ?? null;
  }

  healthy(): boolean {
    return !this.failed && !this.congested && !this.closed && this.stream !== null;
  }

  write(record: EvidenceRecord): void {
    if (this.closed || this.failed) {
      this.opts.metrics.evidenceFailures.inc();
      return;
    }
    this.queue.push(record);
    if (!this.scheduled) {
      this.scheduled = true;
      defer(this.flush);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.retry !== null) cancel(this.retry);
    this.flush();
    this.closed = true;
    const f = this.file;
    this.file = null;
    this.stream = null;
    if (f !== null && !f.destroyed) {
      await new Promise<void>((resolve) => f.end(() => resolve()));
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    const stream = this.stream;
    if (stream === null || this.failed) {
      this.opts.metrics.evidenceFailures.inc(batch.length);
      return;
    }
    let chunk = '';
    let lines = 0;
    for (const r of batch) {
      const line = this.line(r);
      if (line === null) continue;
      chunk += line + '\n';
      lines++;
    }
    if (lines === 0) return;
    // The callback sees this chunk's fate: records lost to a failed write are counted here.
    const ok = stream.write(chunk, (err) => {
      if (err) this.opts.metrics.evidenceFailures.inc(lines);
    });
    if (!ok && stream.writableLength > this.maxPending && !this.congested) {
      this.congested = true;
      this.opts.metrics.evidenceHealthy.set(0);
      this.opts.logger.warn('evidence sink is behind; denying requests until it drains');
      stream.once('drain', () => {
        this.congested = false;
        if (this.healthy()) this.opts.metrics.evidenceHealthy.set(1);
      });
    }
  };

  /** Serializes, signs and chains one record; null (and counted) when it has no JSON form. */
  private line(record: EvidenceRecord): string | null {
    const ordered = orderRecord(record, this.sequence + 1, this.prevHash);
    let line: string;
    try {
      if (this.signer !== null) {
        const signingInput = this.signer.header + '.' + Buffer.from(jcs(ordered), 'utf8').toString('base64url');
        const signature = sign('sha256', Buffer.from(signingInput), { key: this.signer.key.privateKey, dsaEncoding: 'ieee-p1363' });
        ordered['evidence_envelope'] = { format: ENVELOPE_FORMAT, value: signingInput + '.' + signature.toString('base64url') };
      }
      line = JSON.stringify(ordered);
    } catch (err) {
      this.opts.metrics.evidenceFailures.inc();
      this.opts.logger.error({ err: (err as Error).message, evidence_id: String(record.evidence_id) }, 'evidence record has no JSON form; not written');
      return null;
    }
    this.sequence += 1;
    this.prevHash = lineHash(line);
    return line;
  }

  private async openFile(): Promise<void> {
    const path = this.opts.sink;
    try {
      const tail = await readChainTail(path);
      if (tail.torn) {
        await appendFile(path, '\n');
        this.opts.logger.warn({ sink: path }, 'evidence file ended in a torn line; kept it and continued the chain after it');
      }
      const file = createWriteStream(path, { flags: 'a' });
      await once(file, 'open');
      file.on('error', (err) => this.fail(err));
      if (this.closed) {
        file.destroy();
        return;
      }
      this.sequence = tail.sequence;
      this.prevHash = tail.prevHash;
      this.file = file;
      this.stream = file;
      if (this.failed) this.opts.logger.info({ sink: path }, 'evidence sink recovered');
      this.failed = false;
      this.opts.metrics.evidenceHealthy.set(this.congested ? 0 : 1);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /** The sink failed (a write error, or a failed (re)open). Lost records are counted where they are lost. */
  private fail(err: Error): void {
    const first = !this.failed;
    this.failed = true;
    this.opts.metrics.evidenceHealthy.set(0);
    if (first) this.opts.logger.error({ err: err.message, sink: this.opts.sink }, 'evidence sink cannot be written; denying requests until it recovers');
    if (this.file !== null) {
      this.file.destroy();
      this.file = null;
    }
    this.stream = null;
    if (this.opts.sink !== 'stdout' && this.opts.sink !== 'stderr' && !this.closed && this.retry === null) {
      this.retry = later(() => {
        this.retry = null;
        void this.openFile();
      }, this.retryMs);
      this.retry.unref();
    }
  }
}
