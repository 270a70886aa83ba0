/**
 * The decision evidence sink (SPEC section 9): one JSON line per request on stdout, stderr or an
 * append-only file, chained by `sequence` and `prev_hash`, optionally signed (format.ts).
 *
 * - Ordered and off the response path: write() only queues; one flush per event-loop turn builds
 *   the lines (sequence, chain, signature) in queue order and writes them in one write. A regular
 *   file appends with a direct write(2) (page cache, a few microseconds, no thread-pool round trip); a
 *   disk that blocks therefore stalls the gateway rather than letting records queue unbounded, which
 *   fails closed too (requests wait, none is forwarded without its record).
 * - Restart: a file sink continues the existing file's chain and sequence (readChainTail). A torn
 *   last line (a crash mid-write) is kept, terminated with a newline, and chained over; the lost
 *   record shows as a break in `verify-evidence`, never silently.
 * - Fail closed: a write error, or more than `maxPendingBytes` waiting for the disk, makes
 *   healthy() false (the pipeline then denies `evidence_unavailable`, /readyz fails,
 *   `mission_gateway_evidence_sink_up` is 0). A file sink is reopened every `retryMs` and recovers
 *   once the file is writable again, continuing the chain from what actually reached the file.
 *   An open file is not proof of a writable one (/dev/full, a full disk that left no torn line):
 *   the records of failed writes (up to MAX_UNWRITTEN) are kept and written again on reopen, and
 *   only that write succeeding makes the sink healthy. Records already in the file (a write that
 *   failed part-way) are recognised by the tail's `evidence_id` and not written twice.
 *   stdout/stderr do not recover (a closed pipe stays closed).
 * - A file sink checks every `retryMs` that its path still names the open file: a deleted or
 *   rotated-away file fails the sink, which then reopens the path (a new file starts its own chain).
 * - One writer per file: two gateways appending to the same file would interleave two chains.
 */
import { once } from 'node:events';
import { isatty } from 'node:tty';
import { constants, createWriteStream, fstatSync, openSync, statSync, writeSync, type WriteStream } from 'node:fs';
import { Socket } from 'node:net';
import { appendFile, open, stat } from 'node:fs/promises';
import { sign } from 'node:crypto';
import type { Writable } from 'node:stream';
import { jcs } from '../authority/json.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { ENVELOPE_FORMAT, JWS_CTY, JWS_TYP, LineBuffer, lineHash, orderRecord, preorderedLine, type RecordLayout } from './format.js';
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
  /** `evidence_id` of the last readable record (the one `sequence` comes from), or null. */
  readonly evidenceId: string | null;
  /** That record's signing key: its JWS header's `kid` ("" without one), or null when it is not signed. */
  readonly signedBy: string | null;
}

interface Readable {
  readonly sequence: number;
  readonly evidenceId: string | null;
  readonly signedBy: string | null;
}

function readableOf(line: Buffer): Readable | null {
  try {
    const v = JSON.parse(line.toString('utf8')) as { sequence?: unknown; evidence_id?: unknown; evidence_envelope?: { value?: unknown } } | null;
    const s = v?.sequence;
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 1) return null;
    return { sequence: s, evidenceId: typeof v?.evidence_id === 'string' ? v.evidence_id : null, signedBy: signerOf(v?.evidence_envelope?.value) };
  } catch {
    return null;
  }
}

function signerOf(jws: unknown): string | null {
  if (typeof jws !== 'string') return null;
  try {
    const kid = (JSON.parse(Buffer.from(jws.slice(0, jws.indexOf('.')), 'base64url').toString('utf8')) as { kid?: unknown } | null)?.kid;
    return typeof kid === 'string' ? kid : '';
  } catch {
    return '';
  }
}

const EMPTY_TAIL: ChainTail = { sequence: 0, prevHash: null, torn: false, evidenceId: null, signedBy: null };

/** Reads the end of an evidence file to continue its chain: last line's hash, last readable sequence. */
export async function readChainTail(path: string): Promise<ChainTail> {
  // A FIFO or a device (a log shipper's pipe, /dev/stdout) has no chain to continue, and opening
  // one for reading would wait for a writer that never comes.
  try {
    if (!(await stat(path)).isFile()) return EMPTY_TAIL;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_TAIL;
    throw err;
  }
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_TAIL;
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size === 0) return EMPTY_TAIL;
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
        return { ...EMPTY_TAIL, torn };
      }
      let readable: Readable | null = null;
      for (let i = lines.length - 1; i >= 0 && readable === null; i--) readable = readableOf(lines[i]!);
      if (readable === null && start > 0) continue;
      return { sequence: readable?.sequence ?? 0, prevHash: lineHash(last), torn, evidenceId: readable?.evidenceId ?? null, signedBy: readable?.signedBy ?? null };
    }
  } finally {
    await fh.close();
  }
}

// Captured at load: a test that fakes timers later must not stall evidence (or its recovery).
const defer = globalThis.setImmediate;
const later = globalThis.setTimeout;
const cancel = globalThis.clearTimeout;

/** Mode of an evidence file the sink creates (before the process umask). */
export const EVIDENCE_FILE_MODE = 0o640;

/** Records of failed writes kept for the reopened file; beyond this they are lost (and counted). */
export const MAX_UNWRITTEN = 1000;

/**
 * A FIFO (a log shipper's named pipe), written through the event loop as stdout is when it is a
 * pipe: a WriteStream's write(2) to a full FIFO blocks a thread-pool thread until the reader reads,
 * which no timeout ends and which keeps the process from exiting at SIGTERM (r21j 5). Opened without
 * waiting: with no reader yet it throws (ENXIO) and the sink is down, retried every second, as for a
 * file that cannot be opened (opening it to wait for a reader would hang without a word).
 */
function openFifo(path: string): Socket {
  return new Socket({ fd: openSync(path, constants.O_WRONLY | constants.O_NONBLOCK), readable: false, writable: true });
}

function isFifo(path: string): boolean {
  try {
    return statSync(path).isFIFO();
  } catch {
    return false;
  }
}

/** How long close() waits for the sink to take what is queued (a reader that stopped reading). */
const CLOSE_TIMEOUT_MS = 5000;

/** `fd` when lines can be written to it directly (a regular file, or a device that is not a terminal), else null. */
function directFd(fd: number): number | null {
  try {
    const st = fstatSync(fd);
    return st.isFile() || (st.isCharacterDevice() && !isatty(fd)) ? fd : null;
  } catch {
    return null;
  }
}

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
  private file: WriteStream | Socket | null = null;
  /**
   * The descriptor lines are written to directly, bypassing the stream: an open regular file, or
   * stdout/stderr when it is a regular file or a device other than a terminal (/dev/null), which
   * Node's stream writes synchronously anyway. Null for a FIFO, a pipe or a terminal: the stream.
   */
  private appendFd: number | null = null;
  /** Where each turn's lines are encoded (reused: written, or copied for a stream, before the next turn). */
  private readonly out = new LineBuffer();
  private sequence = 0;
  private prevHash: string | null = null;
  private queue: EvidenceRecord[] = [];
  /** The queued records' layouts, index for index. */
  private layouts: (RecordLayout | undefined)[] = [];
  /** Records whose write failed, oldest first, to be written when the file is reopened. */
  private unwritten: EvidenceRecord[] = [];
  private scheduled = false;
  private failed = false;
  private congested = false;
  private closed = false;
  private retry: NodeJS.Timeout | null = null;
  /** Checks, for a file sink, that the path still names the open file (see watchPath). */
  private watch: NodeJS.Timeout | null = null;

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
      log.appendFd = directFd(opts.sink === 'stdout' ? 1 : 2);
      opts.metrics.evidenceHealthy.set(1);
    } else {
      await log.openFile();
      log.watch = setInterval(log.watchPath, log.retryMs);
      log.watch.unref();
    }
    return log;
  }

  /**
   * A file sink whose path no longer names the open file (deleted, or moved away by a rotation)
   * would go on writing records nobody can read: the sink fails, so requests are denied, and
   * reopens the path as after a write error (a new file starts its own chain).
   */
  private readonly watchPath = (): void => {
    const fd = this.appendFd;
    if (fd === null || this.failed || this.closed) return;
    let same: boolean;
    try {
      const open = fstatSync(fd);
      const now = statSync(this.opts.sink);
      same = open.ino === now.ino && open.dev === now.dev;
    } catch {
      same = false;
    }
    if (!same) this.fail(new Error('the evidence file was moved or deleted'));
  };

  /** The public key records are signed with, or null when unsigned (for publishing beside the file). */
  get publicKey(): SigningKey['publicKey'] | null {
    return this.signer?.key.publicKey ?? null;
  }

  healthy(): boolean {
    return !this.failed && !this.congested && !this.closed && this.stream !== null;
  }

  write(record: EvidenceRecord, layout?: RecordLayout): void {
    if (this.closed) {
      this.opts.metrics.evidenceFailures.inc();
      return;
    }
    if (this.failed) {
      // No request is admitted while the sink is failed: a permit now is one admitted before, whose
      // upstream answered since (its record carries `upstream_status`). It was forwarded, so its
      // record is kept for the reopened file (r19a 1). A denial now refused nothing that went
      // upstream: counted only, so a flood of them cannot crowd the permits out.
      if (record.decision === 'permit') this.keepUnwritten([record]);
      else this.opts.metrics.evidenceFailures.inc();
      return;
    }
    if (this.congested && record.decision !== 'permit') {
      // Behind a reader that does not read (a stuck pipe), the same: a denial is counted, not
      // queued behind the stream's 32 MiB, which would grow by one record per refused request
      // without bound (r21j 2). A permit was admitted before: it goes on, bounded by the requests
      // in flight.
      this.opts.metrics.evidenceFailures.inc();
      return;
    }
    this.queue.push(record);
    this.layouts.push(layout);
    if (!this.scheduled) {
      this.scheduled = true;
      defer(this.flush);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.retry !== null) cancel(this.retry);
    if (this.watch !== null) clearInterval(this.watch);
    this.flush();
    this.closed = true;
    const f = this.file;
    this.file = null;
    this.stream = null;
    if (f !== null && !f.destroyed) {
      // Bounded: a pipe whose reader stopped reading takes nothing more, and shutdown must end
      // (SPEC section 2); what it did not take is logged (r21j 5).
      let timer: NodeJS.Timeout | undefined;
      const ended = await Promise.race([
        new Promise<boolean>((resolve) => f.end(() => resolve(true))),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (!ended) {
        this.opts.metrics.evidenceFailures.inc();
        this.opts.logger.error({ pending_bytes: f.writableLength }, 'evidence sink took nothing for 5 s at shutdown; its last records are lost');
        f.destroy();
      }
    }
    this.unwritten = [];
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const batch = this.queue;
    if (batch.length === 0) return;
    const layouts = this.layouts;
    this.queue = [];
    this.layouts = [];
    const stream = this.stream;
    if (stream === null || this.failed) {
      // Queued while healthy: their requests were admitted, so they are kept like a failed write.
      this.keepUnwritten(batch);
      return;
    }
    const { chunk, written } = this.lines(batch, layouts);
    if (written.length === 0) return;
    if (this.appendFd !== null && this.writeDirect(stream, this.appendFd, chunk, written)) return;
    // The callback sees this chunk's fate: records of a failed write are counted here (they missed
    // their moment even if the reopened file gets them) and kept for the reopen. The stream gets
    // its own copy: `chunk` is a view of the buffer the next turn reuses.
    const ok = stream.write(Buffer.from(chunk), (err) => {
      if (err) this.keepUnwritten(written);
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

  /**
   * Appends one turn's lines to `fd` (appendFd) with a direct write(2), when the stream has nothing
   * of its own still pending (else the stream keeps the order). A page-cache append costs a few
   * microseconds; a file stream's thread-pool round trip costs more than that on the request path.
   * An error fails the sink exactly as a failed stream write does. Returns false when the stream
   * must carry this chunk.
   */
  private writeDirect(stream: Writable, fd: number, bytes: Buffer, written: readonly EvidenceRecord[]): boolean {
    if (stream.writableLength > 0) return false;
    try {
      // A file sink whose file was deleted would take these lines where nobody can read them (its
      // path is checked only every retryMs): they are kept for the file the path is reopened as.
      if (this.file !== null && fstatSync(fd).nlink === 0) throw new Error('the evidence file was deleted');
      for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
    } catch (err) {
      this.keepUnwritten(written);
      this.fail(err as Error);
    }
    return true;
  }

  /**
   * The lines of `records` in order, encoded into `this.out` from its start, and the records that
   * have one. The returned bytes are a view of that buffer: written or copied before the next call.
   */
  private lines(records: readonly EvidenceRecord[], layouts?: readonly (RecordLayout | undefined)[]): { chunk: Buffer; written: EvidenceRecord[] } {
    const out = this.out;
    out.reset();
    const written: EvidenceRecord[] = [];
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      if (this.append(r, layouts?.[i])) written.push(r);
    }
    return { chunk: out.since(0), written };
  }

  private keepUnwritten(records: readonly EvidenceRecord[]): void {
    this.opts.metrics.evidenceFailures.inc(records.length);
    if (this.opts.sink === 'stdout' || this.opts.sink === 'stderr') return; // never reopened
    const room = MAX_UNWRITTEN - this.unwritten.length;
    if (room <= 0) return;
    this.unwritten.push(...(records.length <= room ? records : records.slice(0, room)));
  }

  /**
   * Serializes, signs and chains one record: its line and newline appended to `this.out`, the chain
   * moved on to it. False (nothing appended, counted) when it has no JSON form.
   */
  private append(record: EvidenceRecord, layout: RecordLayout | undefined): boolean {
    const out = this.out;
    const start = out.length;
    try {
      if (this.signer === null && layout !== undefined) {
        out.text(preorderedLine(record, layout, this.sequence + 1, this.prevHash));
      } else {
        const ordered = orderRecord(record, this.sequence + 1, this.prevHash);
        if (this.signer !== null) {
          const signingInput = this.signer.header + '.' + Buffer.from(jcs(ordered), 'utf8').toString('base64url');
          const signature = sign('sha256', Buffer.from(signingInput), { key: this.signer.key.privateKey, dsaEncoding: 'ieee-p1363' });
          ordered['evidence_envelope'] = { format: ENVELOPE_FORMAT, value: signingInput + '.' + signature.toString('base64url') };
        }
        out.text(JSON.stringify(ordered));
      }
    } catch (err) {
      out.length = start;
      this.unserializable(record, err);
      return false;
    }
    this.sequence += 1;
    this.prevHash = lineHash(out.since(start));
    out.newline();
    return true;
  }

  private unserializable(record: EvidenceRecord, err: unknown): void {
    this.opts.metrics.evidenceFailures.inc();
    this.opts.logger.error({ err: (err as Error).message, evidence_id: String(record.evidence_id) }, 'evidence record has no JSON form; not written');
  }

  private async openFile(): Promise<void> {
    const path = this.opts.sink;
    try {
      const tail = await readChainTail(path);
      if (tail.torn) {
        await appendFile(path, '\n');
        this.opts.logger.warn({ sink: path }, 'evidence file ended in a torn line; kept it and continued the chain after it');
      }
      // An audit log names subjects and clients: a new file is not world-readable (0640 before the
      // umask: the owner writes, a log shipper in the group may read). An existing file keeps its mode.
      const file = isFifo(path) ? openFifo(path) : createWriteStream(path, { flags: 'a', mode: EVIDENCE_FILE_MODE });
      const fd = file instanceof Socket ? null : ((await once(file, 'open')) as [number])[0];
      this.appendFd = fd !== null && fstatSync(fd).isFile() ? fd : null;
      // A stream replaced by a later reopen must not fail its successor.
      file.on('error', (err: Error) => {
        if (this.file === file) this.fail(err);
      });
      if (this.closed) {
        file.destroy();
        return;
      }
      this.sequence = tail.sequence;
      this.prevHash = tail.prevHash;
      this.file = file;
      this.noteKeyChange(tail);
      if (this.unwritten.length > 0) {
        // Proves the file writable before any request is admitted again.
        await this.writeUnwritten(file, tail.evidenceId);
        if (this.closed || this.file !== file) return;
      }
      this.stream = file;
      if (this.failed) this.opts.logger.info({ sink: path }, 'evidence sink recovered');
      this.failed = false;
      this.opts.metrics.evidenceHealthy.set(this.congested ? 0 : 1);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /**
   * A chain continued under another signing key than its last record's (a key rotation, signing
   * switched on or off) is logged: a verifier then needs both keys (r19a 2).
   */
  private noteKeyChange(tail: ChainTail): void {
    const now = this.signer?.key.kid ?? null;
    if (tail.sequence === 0 || tail.signedBy === now) return;
    const sink = this.opts.sink;
    if (now === null) this.opts.logger.warn({ sink, previous_kid: tail.signedBy }, 'evidence file continues unsigned after signed records: verify-evidence with a key reports the unsigned ones');
    else if (tail.signedBy === null) this.opts.logger.warn({ sink, kid: now }, 'evidence file continues signed after unsigned records: verify-evidence with a key reports the unsigned ones');
    else this.opts.logger.info({ sink, kid: now, previous_kid: tail.signedBy }, 'evidence file continues under a new signing key: verify it with both keys (--key twice, or a JWK Set)');
  }

  /**
   * Writes the kept records after the tail, skipping those a part-failed write already put there,
   * then any kept while that write was in flight (permits of requests admitted before the failure,
   * answered since: bounded by the requests then in flight). A failed write keeps them all, in order.
   */
  private async writeUnwritten(file: Writable, tailEvidenceId: string | null): Promise<void> {
    let pending = this.unwritten;
    if (tailEvidenceId !== null) {
      const i = pending.findIndex((r) => r.evidence_id === tailEvidenceId);
      if (i !== -1) pending = pending.slice(i + 1);
    }
    while (pending.length > 0) {
      this.unwritten = [];
      const bytes = Buffer.from(this.lines(pending).chunk); // its own copy: the view is of the buffer the next turn reuses
      try {
        if (bytes.length > 0) await new Promise<void>((resolve, reject) => file.write(bytes, (err) => (err ? reject(err) : resolve())));
      } catch (err) {
        this.unwritten = pending.concat(this.unwritten).slice(0, MAX_UNWRITTEN);
        throw err;
      }
      if (this.closed || this.file !== file) return;
      pending = this.unwritten;
    }
    this.unwritten = [];
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
    this.appendFd = null; // closed with its stream
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
