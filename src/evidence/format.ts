/**
 * The evidence line format (SPEC section 9), shared by the writer and `verify-evidence`:
 *
 *   {<SPEC members in SPEC order>, <extra members>, "sequence": n, "prev_hash": "sha-256:…"|null
 *    [, "evidence_envelope": {"format": "jws-compact", "value": "<JWS>"}]}\n
 *
 * `prev_hash` = "sha-256:" + base64url(SHA-256(previous line's bytes without its newline)). The
 * optional envelope is the record (everything before it) as a compact JWS over its JCS form
 * (mission-contracts section 4, "Evidence envelope"); being inside the line, it is covered by the
 * next line's `prev_hash`, so one chain protects records and signatures alike.
 */
import { hash } from 'node:crypto';
import type { EvidenceRecord } from './record.js';

export const JWS_TYP = 'application/mission-runtime-evidence+jws';
export const JWS_CTY = 'application/mission-decision-evidence+json';
export const ENVELOPE_FORMAT = 'jws-compact';

/** SPEC section 9 order. */
export const FIXED_MEMBERS = [
  'evidence_id',
  'decision_id',
  'decision',
  'denial_reason',
  'evaluated_at',
  'audience',
  'method',
  'path',
  'action',
  'subject',
  'client_id',
  'actor',
  'token_jti',
  'jkt',
  'mission',
  'parameter_digest',
  'upstream_status',
  'duration_ms',
] as const;

const MISSION_MEMBERS = ['id', 'issuer', 'state', 'version', 'authority_hash', 'source'] as const;

/** Members the sink sets; a record's own copies are ignored. */
/** Names an extra member may not take: the fixed ones, and those the sink sets (plus `__proto__`). */
export const RESERVED_MEMBERS: ReadonlySet<string> = new Set([...FIXED_MEMBERS, 'sequence', 'prev_hash', 'evidence_envelope', '__proto__']);

/**
 * How the pipeline built a record, so the writer can serialize it as built (`preorderedLine`)
 * instead of copying it into orderRecord's order first:
 * - `fixed`: exactly the FIXED_MEMBERS in SPEC order, none undefined, `mission` null or with
 *   exactly MISSION_MEMBERS in order; the members the gateway makes itself are printable ASCII
 *   without `"` or `\` and are written as they are (checking them cost more than building the rest
 *   of the line): `evidence_id`, `decision_id` (its identifiers), `decision`, `denial_reason` (SPEC
 *   values), `evaluated_at` (an ISO time), `method` (as Node's HTTP parser gives it, from its fixed
 *   list of methods) and `path` (normalized: http/path.ts percent-encodes anything else);
 * - `extras`: the same, followed by extra members none of which is undefined or reserved (so
 *   orderRecord would keep them in place).
 * A record written without a layout goes through orderRecord.
 */
export type RecordLayout = 'fixed' | 'extras';

/**
 * A growable byte buffer the writer encodes a turn's lines into. Each line is encoded once: its
 * hash and the write read these bytes (the hash no longer encodes the string on its own, and the
 * lines are not joined into one string and encoded again for the write).
 */
export class LineBuffer {
  bytes: Buffer;
  length = 0;

  constructor(private readonly size = 64 * 1024) {
    this.bytes = Buffer.allocUnsafe(size);
  }

  /** Empties the buffer for reuse; one a burst grew past 1 MiB goes back to its first size. */
  reset(): void {
    this.length = 0;
    if (this.bytes.length > 1024 * 1024) this.bytes = Buffer.allocUnsafe(this.size);
  }

  /** Room for `n` more bytes. */
  private reserve(n: number): void {
    if (this.length + n > this.bytes.length) {
      const next = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, this.length + n));
      this.bytes.copy(next, 0, 0, this.length);
      this.bytes = next;
    }
  }

  /** Appends `s`, UTF-8 encoded. */
  text(s: string): void {
    this.reserve(s.length * 3);
    this.length += this.bytes.write(s, this.length);
  }

  /** Appends a newline. */
  newline(): void {
    this.reserve(1);
    this.bytes[this.length++] = 0x0a;
  }

  /** The bytes from `start` to the end (a view: valid until the buffer is reused). */
  since(start: number): Buffer {
    return this.bytes.subarray(start, this.length);
  }
}

/** Printable ASCII without `"` and `\`: JSON.stringify writes such a string as is, between quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A generated string member (see RecordLayout): quoted as it is. */
function own(v: unknown): string {
  return typeof v === 'string' ? '"' + v + '"' : json(v);
}

/** '.001' … '.999' as String() writes a number's fraction (no trailing zeros); '' for 0. */
const FRACTIONS: readonly string[] = Array.from({ length: 1000 }, (_, f) => (f === 0 ? '' : '.' + String(f).padStart(3, '0').replace(/0+$/, '')));

/**
 * `duration_ms` as String(v) writes it. The pipeline rounds it to the microsecond, so it is the
 * double nearest an integer number of microseconds: below 10^9 ms, that decimal (whole part and
 * at most three fraction digits) is the shortest text of the double, which is what String()
 * writes. Written from integers, it costs no double-to-text conversion; any other number is
 * converted as usual.
 */
function millis(v: unknown): string {
  if (typeof v !== 'number') return json(v);
  const us = v * 1000;
  if (us >= 0 && us < 1e12 && Number.isInteger(us) && us / 1000 === v) {
    const whole = Math.floor(us / 1000);
    return String(whole) + FRACTIONS[us - whole * 1000]!;
  }
  return json(v);
}

/**
 * A member value as JSON.stringify writes it inside an object (strings and nulls, the usual ones,
 * first). Most strings in a record are identifiers, URLs and timestamps: quoting them directly is
 * the same bytes at half the cost of JSON.stringify.
 */
function json(v: unknown): string {
  if (typeof v === 'string') return PLAIN.test(v) ? '"' + v + '"' : JSON.stringify(v);
  if (v === null || v === undefined) return 'null'; // absent = null, as orderRecord writes it
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null'; // JSON.stringify's number form
  const s = JSON.stringify(v) as string | undefined;
  if (s === undefined) throw new TypeError('evidence member has no JSON form');
  return s;
}

/**
 * The line of a record built in `layout`: its JSON with sequence and prev_hash appended, as
 * orderRecord would write it. The fixed members are written member by member (json(), own(),
 * millis(): no JSON.stringify over the whole object and no copy to cut its closing brace), the
 * all-null middle of an anonymous record as one constant; extra members go through JSON.stringify
 * of an object of just them.
 */
export function preorderedLine(record: EvidenceRecord, layout: RecordLayout, sequence: number, prevHash: string | null): string {
  const r = record as Record<string, unknown>;
  const m = record.mission as Record<string, unknown> | null;
  let line =
    '{"evidence_id":' + own(r['evidence_id']) +
    ',"decision_id":' + own(r['decision_id']) +
    ',"decision":' + own(r['decision']) +
    ',"denial_reason":' + own(r['denial_reason']) +
    ',"evaluated_at":' + own(r['evaluated_at']) +
    ',"audience":' + json(r['audience']) +
    ',"method":' + own(r['method']) +
    ',"path":' + own(r['path']) +
    ',"action":' + json(r['action']) +
    (m === null && r['subject'] === null && r['client_id'] === null && r['actor'] === null && r['token_jti'] === null && r['jkt'] === null && r['parameter_digest'] === null
      ? ANONYMOUS
      : ',"subject":' + json(r['subject']) +
        ',"client_id":' + json(r['client_id']) +
        ',"actor":' + json(r['actor']) +
        ',"token_jti":' + json(r['token_jti']) +
        ',"jkt":' + json(r['jkt']) +
        ',"mission":' +
        (m === null
          ? 'null'
          : '{"id":' + json(m['id']) + ',"issuer":' + json(m['issuer']) + ',"state":' + json(m['state']) + ',"version":' + json(m['version']) +
            ',"authority_hash":' + json(m['authority_hash']) + ',"source":' + json(m['source']) + '}') +
        ',"parameter_digest":' + json(r['parameter_digest'])) +
    ',"upstream_status":' + json(r['upstream_status']) +
    ',"duration_ms":' + millis(r['duration_ms']);
  if (layout === 'extras') {
    let extra: Record<string, unknown> | null = null;
    for (const k in r) {
      if (FIXED_SET.has(k)) continue;
      // An integer-like key is serialized before every other member: only the whole-object form places it.
      if (INDEX_KEY.test(k)) return JSON.stringify(record).slice(0, -1) + chainTail(sequence, prevHash);
      (extra ??= {})[k] = r[k];
    }
    if (extra !== null) {
      const e = JSON.stringify(extra);
      if (e.length > 2) line += ',' + e.slice(1, -1);
    }
  }
  return line + chainTail(sequence, prevHash);
}

/**
 * `subject` to `parameter_digest` of a record without token, proof, Mission or parameters (an
 * `auth: none` route, a denial before authentication): one constant instead of fourteen pieces,
 * each of which is a string allocation and a step in flattening the line for its hash.
 */
const ANONYMOUS = ',"subject":null,"client_id":null,"actor":null,"token_jti":null,"jkt":null,"mission":null,"parameter_digest":null';

/** The chain members and the closing brace that end every line. */
function chainTail(sequence: number, prevHash: string | null): string {
  return ',"sequence":' + String(sequence) + ',"prev_hash":' + json(prevHash) + '}';
}

const FIXED_SET: ReadonlySet<string> = new Set(FIXED_MEMBERS);
const INDEX_KEY = /^(?:0|[1-9][0-9]*)$/;

/** The record as written: fixed members in order (absent = null), extras, then sequence and prev_hash. */
export function orderRecord(record: EvidenceRecord, sequence: number, prevHash: string | null): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of FIXED_MEMBERS) {
    if (k === 'mission') {
      const m = record.mission;
      if (m === null || m === undefined) {
        out['mission'] = null;
      } else {
        const mo: Record<string, unknown> = {};
        for (const mk of MISSION_MEMBERS) mo[mk] = m[mk] ?? null;
        out['mission'] = mo;
      }
    } else {
      out[k] = record[k] ?? null;
    }
  }
  for (const k of Object.keys(record)) {
    if (RESERVED_MEMBERS.has(k)) continue;
    const v = record[k];
    if (v !== undefined) out[k] = v;
  }
  out['sequence'] = sequence;
  out['prev_hash'] = prevHash;
  return out;
}

/** "sha-256:" + base64url(SHA-256(bytes)) of one line without its newline. */
export function lineHash(line: string | Buffer): string {
  // One-shot crypto.hash: no Hash object per line (half the cost of createHash().update().digest()).
  return 'sha-256:' + hash('sha256', line, 'base64url');
}
