/**
 * Server-Sent Events (WHATWG HTML "server-sent events": lines end in CRLF, LF or CR; a blank line
 * ends an event) for the MCP response streams the gateway must look into. Bytes are split into
 * whole events as they arrive, tolerating an event (or a CRLF) split across chunks; each complete
 * event is released at once, so progress notifications flow unbuffered. Events the gateway does not
 * change are passed on as their original bytes.
 */

const LF = 0x0a;
const CR = 0x0d;

/**
 * Largest unfinished event held while waiting for its blank line, the same bound as an upstream JSON
 * answer (MAX_RESPONSE_BYTES in relay.ts, not imported from there: relay.ts imports this module).
 */
export const MAX_EVENT_BYTES = 16 * 1024 * 1024;

/**
 * Splits a byte stream into complete events (each with its terminating blank line). Only each new
 * chunk is scanned and the unfinished event is kept as a list of chunks, joined once when it ends,
 * so a large event costs linear time whatever the chunk size.
 */
export class SseSplitter {
  /** The unfinished event, as pieces of the chunks it arrived in. */
  private parts: Buffer[] = [];
  private partsLength = 0;
  /** True when the scan position is at the start of a line (before `crPending`'s CR, if any). */
  private atLineStart = true;
  /** The last chunk ended in a CR that may be the first half of a CRLF split across chunks. */
  private crPending = false;

  /** `maxEventBytes`: past this many unfinished bytes `push` throws (the stream must be cut). */
  constructor(private readonly maxEventBytes: number = MAX_EVENT_BYTES) {}

  /** Feeds a chunk; returns the events it completed, in order. Throws when an event grows too large. */
  push(chunk: Buffer): Buffer[] {
    const events: Buffer[] = [];
    const n = chunk.length;
    if (n === 0) return events;
    let start = 0;
    let i = 0;
    let atLineStart = this.atLineStart;
    if (this.crPending) {
      // The CR ended its line; a LF right after it belongs to the same line end.
      this.crPending = false;
      i = chunk[0] === LF ? 1 : 0;
      if (atLineStart) {
        events.push(this.take(chunk, i));
        start = i;
      }
      atLineStart = true;
    }
    while (i < n) {
      const c = chunk[i]!;
      let end: number;
      if (c === LF) {
        end = i + 1;
      } else if (c === CR) {
        if (i + 1 === n) {
          this.crPending = true;
          break;
        }
        end = chunk[i + 1] === LF ? i + 2 : i + 1;
      } else {
        atLineStart = false;
        i++;
        continue;
      }
      if (atLineStart) {
        events.push(start === 0 ? this.take(chunk, end) : chunk.subarray(start, end));
        start = end;
      }
      atLineStart = true;
      i = end;
    }
    this.atLineStart = atLineStart;
    if (start < n) {
      this.parts.push(start === 0 ? chunk : chunk.subarray(start));
      this.partsLength += n - start;
      if (this.partsLength > this.maxEventBytes) {
        this.reset();
        throw new Error(`SSE event larger than ${this.maxEventBytes} bytes`);
      }
    }
    return events;
  }

  /** What is left at the end of the stream (an unterminated event), or null. */
  flush(): Buffer | null {
    const rest = this.partsLength === 0 ? null : this.join(null, 0);
    this.reset();
    return rest;
  }

  /** The event ending at `end` in `chunk`: the held parts plus the chunk's head, joined once. */
  private take(chunk: Buffer, end: number): Buffer {
    if (this.partsLength === 0) return chunk.subarray(0, end);
    const event = this.join(chunk, end);
    this.parts = [];
    this.partsLength = 0;
    return event;
  }

  private join(chunk: Buffer | null, end: number): Buffer {
    if (chunk !== null && end > 0) this.parts.push(chunk.subarray(0, end));
    const parts = this.parts;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.partsLength + end);
  }

  private reset(): void {
    this.parts = [];
    this.partsLength = 0;
    this.atLineStart = true;
    this.crPending = false;
  }
}

export interface SseEvent {
  /** `event` field, or "message" when absent. */
  readonly type: string;
  /** The `data` lines joined with LF, or null when the event has none. */
  readonly data: string | null;
  /** The event's lines (without terminators), for rewriting. */
  readonly lines: readonly string[];
}

const LINE = /\r\n|\r|\n/;

/** Parses one complete event (as released by SseSplitter). `type` is informational. */
export function parseEvent(raw: Buffer): SseEvent {
  const lines = raw.toString('utf8').split(LINE);
  // The split leaves two empty strings for the blank-line terminator.
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  // A client strips a byte order mark before the first field; so must we, or it would hide a data line.
  if (lines[0] !== undefined && lines[0].charCodeAt(0) === 0xfeff) lines[0] = lines[0].slice(1);
  let type = 'message';
  let data: string[] | null = null;
  for (const line of lines) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') (data ??= []).push(value);
    else if (field === 'event') type = value;
  }
  return { type, data: data === null ? null : data.join('\n'), lines };
}

/** The same event with its data replaced by `json` (one data line, other fields kept in place). */
export function rewriteEvent(event: SseEvent, json: string): Buffer {
  const out: string[] = [];
  let placed = false;
  for (const line of event.lines) {
    if (line === 'data' || line.startsWith('data:')) {
      if (!placed) out.push(`data: ${json}`);
      placed = true;
    } else {
      out.push(line);
    }
  }
  if (!placed) out.push(`data: ${json}`);
  return Buffer.from(out.join('\n') + '\n\n', 'utf8');
}

/** One JSON-RPC message as a `message` event. */
export function messageEvent(message: unknown): Buffer {
  return Buffer.from(`event: message\ndata: ${JSON.stringify(message)}\n\n`, 'utf8');
}

/**
 * A stream rewriter: `rewrite(message)` returns a replacement for a JSON-RPC message, or undefined
 * to keep the event's original bytes. Every event of the stream is looked at, to its end.
 */
export class SseRewriter {
  private readonly splitter = new SseSplitter();

  constructor(private readonly rewrite: (message: unknown) => unknown) {}

  /** Returns the bytes to send for this chunk (possibly empty while an event is incomplete). */
  push(chunk: Buffer): Buffer {
    const events = this.splitter.push(chunk);
    if (events.length === 0) return EMPTY;
    if (events.length === 1) return this.one(events[0]!);
    return Buffer.concat(events.map((e) => this.one(e)));
  }

  /**
   * The stream's tail, rewritten like any event: bytes held at its end may be an event a client
   * still dispatches (one ended by a lone CR, held as a possible CRLF), or one it discards.
   */
  flush(): Buffer | null {
    const rest = this.splitter.flush();
    return rest === null ? null : this.one(rest);
  }

  private one(raw: Buffer): Buffer {
    const event = parseEvent(raw);
    // Every event type is looked at: a client may act on more than `message` events.
    if (event.data === null) return raw;
    // JSON may start with whitespace (a second space after `data:`, a tab, an empty first data line).
    const data = event.data;
    let i = 0;
    let c = data.charCodeAt(0);
    while (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) c = data.charCodeAt(++i);
    if (c !== 0x7b && c !== 0x5b) return raw;
    let message: unknown;
    try {
      message = JSON.parse(event.data);
    } catch {
      return raw;
    }
    const replaced = this.rewrite(message);
    return replaced === undefined ? raw : rewriteEvent(event, JSON.stringify(replaced));
  }
}

const EMPTY = Buffer.alloc(0);
