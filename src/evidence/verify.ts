/**
 * `mission-gateway verify-evidence <file> [--key <public JWK, PEM or JWK Set>]...`: checks an
 * evidence file's chain (every line's `prev_hash` is the hash of the line before, `sequence` counts
 * up by one from 1) and, with keys, every record's signature by one of them (a file continued
 * across a signing-key rotation holds records of each key); reports the first break. Reads the file
 * as a stream, so its size does not matter.
 */
import { createReadStream } from 'node:fs';
import { createHash, verify as verifySignature, type KeyObject } from 'node:crypto';
import { jcs, JsonStrictError, JsonTooDeepError, scanJson } from '../authority/json.js';
import { ENVELOPE_FORMAT, FIXED_MEMBERS, JWS_TYP, lineHash } from './format.js';
import { loadVerificationKeys } from './keys.js';

export interface EvidenceBreak {
  /** 1-based line number. */
  readonly line: number;
  readonly reason: string;
}

export interface VerifyResult {
  /** True when every line is a record, the chain is unbroken and (with a key) every signature verifies. */
  readonly ok: boolean;
  /** Lines that parsed as records. */
  readonly records: number;
  /** Signatures that verified (0 without a key). */
  readonly signaturesVerified: number;
  /** Breaks found (checking continues after the first). */
  readonly breaks: number;
  readonly firstBreak?: EvidenceBreak;
}

export interface VerifyOptions {
  /**
   * KeyObjects, or paths to public (or private) JWK, PEM or JWK Set files. When given, every record
   * must be signed, and verify under one of them.
   */
  readonly publicKey?: KeyObject | string | readonly (KeyObject | string)[];
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A line longer than this is no record the gateway writes (those are a few KiB): it is a break,
 * hashed as it streams by (the next line's prev_hash is checked against it) and never held whole.
 */
export const MAX_LINE_BYTES = 1024 * 1024;

/** Null when `record` is signed by one of `keys`, which are tried in order; else why not. */
function checkSignature(record: Record<string, unknown>, keys: readonly KeyObject[]): string | null {
  const env = record['evidence_envelope'] as { format?: unknown; value?: unknown } | undefined;
  if (env === undefined || env === null) return 'record is not signed';
  if (env.format !== ENVELOPE_FORMAT || typeof env.value !== 'string') return 'evidence_envelope is not a compact JWS';
  const parts = env.value.split('.');
  if (parts.length !== 3) return 'evidence_envelope is not a compact JWS';
  const [h, p, s] = parts as [string, string, string];
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  } catch {
    return 'JWS header does not parse';
  }
  if (header === null || typeof header !== 'object') return 'JWS header is not a JSON object';
  const { alg, typ } = header as { alg?: unknown; typ?: unknown };
  if (alg !== 'ES256' || typ !== JWS_TYP) return 'JWS header is not ES256 / ' + JWS_TYP;
  const { evidence_envelope: _env, ...unsigned } = record;
  if (Buffer.from(p, 'base64url').toString('utf8') !== jcs(unsigned)) return 'signed payload differs from the record';
  const input = Buffer.from(`${h}.${p}`);
  const signature = Buffer.from(s, 'base64url');
  for (const key of keys) if (verifySignature('sha256', input, { key, dsaEncoding: 'ieee-p1363' }, signature)) return null;
  return keys.length === 1 ? 'signature does not verify' : 'signature does not verify under any of the keys';
}

async function keysOf(given: VerifyOptions['publicKey']): Promise<KeyObject[] | null> {
  if (given === undefined) return null;
  const out: KeyObject[] = [];
  for (const k of Array.isArray(given) ? given : [given]) out.push(...(typeof k === 'string' ? await loadVerificationKeys(k) : [k as KeyObject]));
  return out.length === 0 ? null : out;
}

export async function verifyEvidenceFile(path: string, options: VerifyOptions = {}): Promise<VerifyResult> {
  const keys = await keysOf(options.publicKey);
  let lineNo = 0;
  let records = 0;
  let signaturesVerified = 0;
  let breaks = 0;
  let firstBreak: EvidenceBreak | undefined;
  /** The hash of the line before (what this line's prev_hash must be), null before the first. */
  let prevHash: string | null = null;
  let prevSequence: number | null = null;

  const broken = (reason: string): void => {
    breaks++;
    if (firstBreak === undefined) firstBreak = { line: lineNo, reason };
  };

  /** One line: its bytes, or null for one over MAX_LINE_BYTES (only its hash was kept). */
  const check = (line: Buffer | null, hash: string): void => {
    lineNo++;
    const expectedPrev = prevHash;
    const first = prevHash === null;
    prevHash = hash;
    if (line === null) {
      broken(`a line longer than ${MAX_LINE_BYTES} bytes is not a record`);
      prevSequence = null;
      return;
    }
    let record: Record<string, unknown>;
    try {
      const text = UTF8.decode(line);
      const v: unknown = JSON.parse(text);
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      record = v as Record<string, unknown>;
      // JSON.parse keeps the last of two members of one name; another reader may keep the first.
      // The writer never repeats one, so a repeat is an edit (the signature covers the last only).
      scanJson(text, 'all');
    } catch (err) {
      broken(
        err instanceof JsonTooDeepError
          ? 'a member is nested too deeply for a record'
          : err instanceof JsonStrictError
            ? 'a member name appears twice (an edited line: readers disagree on which counts)'
            : line.length === 0
              ? 'empty line'
              : 'not a JSON record (torn write or edited line)',
      );
      prevSequence = null;
      return;
    }
    records++;
    for (const m of FIXED_MEMBERS) {
      if (!Object.hasOwn(record, m)) {
        broken(`member "${m}" is missing`);
        break;
      }
    }
    const seq = record['sequence'];
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) {
      broken('sequence is not a positive integer');
    } else if (first && seq !== 1) {
      broken(`the first record has sequence ${seq}, not 1 (file truncated at the front?)`);
    } else if (prevSequence !== null && seq !== prevSequence + 1) {
      broken(`sequence ${seq} follows ${prevSequence} (a record was removed, added or reordered)`);
    }
    prevSequence = typeof seq === 'number' ? seq : null;
    if (record['prev_hash'] !== expectedPrev) {
      broken(first ? 'the first record has a prev_hash (file truncated at the front?)' : 'prev_hash does not match the previous line');
    }
    if (keys !== null) {
      let problem: string | null;
      try {
        problem = checkSignature(record, keys);
      } catch (err) {
        problem = `the signature cannot be checked: ${(err as Error).message}`;
      }
      if (problem === null) signaturesVerified++;
      else broken(problem);
    }
  };

  // The start of the current line, in pieces (each chunk is searched for a newline once), or, once
  // it is over MAX_LINE_BYTES, only a running hash of it.
  let parts: Buffer[] = [];
  let partsBytes = 0;
  let overlong: ReturnType<typeof createHash> | null = null;
  const add = (piece: Buffer): void => {
    if (overlong !== null) {
      overlong.update(piece);
      return;
    }
    parts.push(Buffer.from(piece)); // a copy: the stream may reuse its chunk
    partsBytes += piece.length;
    if (partsBytes > MAX_LINE_BYTES) {
      overlong = createHash('sha256');
      for (const p of parts) overlong.update(p);
      parts = [];
      partsBytes = 0;
    }
  };
  const end = (): void => {
    if (overlong !== null) {
      check(null, 'sha-256:' + overlong.digest('base64url'));
      overlong = null;
    } else {
      const line = parts.length === 1 ? parts[0]! : Buffer.concat(parts, partsBytes);
      check(line, lineHash(line));
    }
    parts = [];
    partsBytes = 0;
  };
  for await (const chunk of createReadStream(path)) {
    const buf = chunk as Buffer;
    let from = 0;
    for (let nl = buf.indexOf(0x0a); nl !== -1; nl = buf.indexOf(0x0a, from)) {
      if (parts.length === 0 && overlong === null && nl - from <= MAX_LINE_BYTES) {
        // The usual case: the whole line is in this chunk.
        const line = buf.subarray(from, nl);
        check(line, lineHash(line));
      } else {
        add(buf.subarray(from, nl));
        end();
      }
      from = nl + 1;
    }
    if (from < buf.length) add(buf.subarray(from));
  }
  if (parts.length > 0 || overlong !== null) {
    end();
    // A record is only complete with its newline: the writer was cut off mid-line.
    broken('the last line has no newline (torn write)');
  }

  const result = { ok: breaks === 0, records, signaturesVerified, breaks };
  return firstBreak === undefined ? result : { ...result, firstBreak };
}

const USAGE = 'usage: mission-gateway verify-evidence <file> [--key <public key: JWK, PEM or JWK Set>]...\n  (--key again, or a JWK Set, for a file whose records were signed by several keys)\n';

/** The CLI verb: prints a summary; exit 0 intact, 1 broken, 2 usage or unreadable input. */
export async function verifyEvidenceCli(argv: string[]): Promise<number> {
  let file: string | undefined;
  const keyFiles: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--key') {
      const keyFile = argv[++i];
      if (keyFile === undefined) {
        process.stderr.write(USAGE);
        return 2;
      }
      keyFiles.push(keyFile);
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      return 0;
    } else if (a.startsWith('-') || file !== undefined) {
      process.stderr.write(`verify-evidence: ${a.startsWith('-') ? `unknown option ${JSON.stringify(a)}` : `one file only (got ${JSON.stringify(file)} and ${JSON.stringify(a)})`}\n${USAGE}`);
      return 2;
    } else {
      file = a;
    }
  }
  if (file === undefined) {
    process.stderr.write(USAGE);
    return 2;
  }
  let result: VerifyResult;
  try {
    result = await verifyEvidenceFile(file, keyFiles.length === 0 ? {} : { publicKey: keyFiles });
  } catch (err) {
    process.stderr.write(`verify-evidence: ${(err as Error).message}\n`);
    return 2;
  }
  const sigs = keyFiles.length === 0 ? 'signatures not checked (no --key)' : `${result.signaturesVerified} signatures verified`;
  if (result.ok) {
    process.stdout.write(`intact: ${result.records} records, chain unbroken, ${sigs}\n`);
    return 0;
  }
  const b = result.firstBreak!;
  process.stdout.write(`BROKEN at line ${b.line}: ${b.reason}\n${result.records} records read, ${result.breaks} break(s), ${sigs}\n`);
  return 1;
}
