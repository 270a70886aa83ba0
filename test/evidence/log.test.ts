import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { appendFileSync, createReadStream, WriteStream, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compactVerify } from 'jose';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { jcs } from '../../src/authority/json.js';
import { FIXED_MEMBERS } from '../../src/evidence/format.js';
import { EvidenceLog, readChainTail } from '../../src/evidence/log.js';
import type { EvidenceRecord } from '../../src/evidence/record.js';
import { verifyEvidenceCli, verifyEvidenceFile } from '../../src/evidence/verify.js';
import { Metrics } from '../../src/observability/metrics.js';

const logger = pino({ level: 'silent' });
let dir: string;
let metrics: Metrics;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mgw-evidence-'));
  metrics = new Metrics({ defaultMetrics: false });
});

function record(n: number, over: Partial<EvidenceRecord> = {}): EvidenceRecord {
  return {
    evidence_id: `evd_${n}`,
    decision_id: `dec_${n}`,
    decision: n % 2 === 0 ? 'deny' : 'permit',
    denial_reason: n % 2 === 0 ? 'out_of_authority' : null,
    evaluated_at: '2026-11-02T08:14:03.000Z',
    audience: 'https://api.example.com',
    method: 'POST',
    path: '/payments',
    action: 'payments.create',
    subject: 'user_1',
    client_id: 'agent',
    actor: { sub: 'agent' },
    token_jti: 'at_1',
    jkt: 'jkt',
    mission: { id: 'msn_1', issuer: 'https://as.example.com', state: 'active', version: 4, authority_hash: 'sha-256:x', source: 'cached' },
    parameter_digest: 'sha-256:WPVi6EnQ7H9Fh-qk9ADxmTg8zruOdVUX1esl-v3TfCI',
    upstream_status: n % 2 === 0 ? null : 201,
    duration_ms: 0.412,
    ...over,
  };
}

async function writeAll(file: string, records: EvidenceRecord[], sign?: { privateKeyFile: string; kid?: string }): Promise<EvidenceLog> {
  const log = await EvidenceLog.open({ sink: file, metrics, logger, ...(sign === undefined ? {} : { sign }) });
  expect(log.healthy()).toBe(true);
  for (const r of records) log.write(r);
  await log.close();
  return log;
}

const lines = (file: string): string[] => readFileSync(file, 'utf8').split('\n').slice(0, -1);
const hash = (s: string): string => 'sha-256:' + createHash('sha256').update(s).digest('base64url');
const gauge = async (): Promise<number> => (await metrics.evidenceHealthy.get()).values[0]!.value;
const failures = async (): Promise<number> => (await metrics.evidenceFailures.get()).values[0]?.value ?? 0;

describe('SPEC §9 evidence records and chain', () => {
  it('one JSON line per record, SPEC members in order, sequence from 1, prev_hash over the previous line', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2), record(3)]);
    const ls = lines(file);
    expect(ls).toHaveLength(3);
    const parsed = ls.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(Object.keys(parsed[0]!)).toEqual([...FIXED_MEMBERS, 'sequence', 'prev_hash']);
    expect(Object.keys(parsed[0]!['mission'] as object)).toEqual(['id', 'issuer', 'state', 'version', 'authority_hash', 'source']);
    expect(parsed.map((p) => p['sequence'])).toEqual([1, 2, 3]);
    expect(parsed[0]!['prev_hash']).toBeNull();
    expect(parsed[1]!['prev_hash']).toBe(hash(ls[0]!));
    expect(parsed[2]!['prev_hash']).toBe(hash(ls[1]!));
    expect(await verifyEvidenceFile(file)).toEqual({ ok: true, records: 3, signaturesVerified: 0, breaks: 0 });
  });

  it('absent members are null, extra members follow the fixed ones, sink members cannot be forged', async () => {
    const file = join(dir, 'e.log');
    const r = { ...record(1), mission: null, actor: undefined, tool: 'send_message', sequence: 99, prev_hash: 'sha-256:forged', evidence_envelope: 'x' } as unknown as EvidenceRecord;
    await writeAll(file, [r]);
    const p = JSON.parse(lines(file)[0]!) as Record<string, unknown>;
    expect(p['mission']).toBeNull();
    expect(p['actor']).toBeNull();
    expect(Object.keys(p).slice(-3)).toEqual(['tool', 'sequence', 'prev_hash']);
    expect(p['sequence']).toBe(1);
    expect(p['prev_hash']).toBeNull();
  });

  it('a restarted gateway continues the chain and sequence of an existing file', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2)]);
    await writeAll(file, [record(3), record(4), record(5)]);
    const parsed = lines(file).map((l) => JSON.parse(l) as { sequence: number });
    expect(parsed.map((p) => p.sequence)).toEqual([1, 2, 3, 4, 5]);
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });

  it('continues the chain past a tail longer than one read chunk', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1, { big: 'x'.repeat(200_000) } as Partial<EvidenceRecord>)]);
    await writeAll(file, [record(2)]);
    expect(await verifyEvidenceFile(file)).toMatchObject({ ok: true, records: 2 });
  });

  it('a torn last line is kept, terminated and chained over; verify-evidence reports it', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2)]);
    appendFileSync(file, '{"evidence_id":"evd_3","decis');
    expect(await readChainTail(file)).toEqual({ sequence: 2, prevHash: hash('{"evidence_id":"evd_3","decis'), torn: true, evidenceId: 'evd_2', signedBy: null });
    await writeAll(file, [record(4)]);
    const ls = lines(file);
    expect(ls).toHaveLength(4);
    expect(ls[2]).toBe('{"evidence_id":"evd_3","decis');
    const last = JSON.parse(ls[3]!) as { sequence: number; prev_hash: string };
    expect(last.sequence).toBe(3);
    expect(last.prev_hash).toBe(hash(ls[2]!));
    const v = await verifyEvidenceFile(file);
    expect(v.ok).toBe(false);
    expect(v.firstBreak).toEqual({ line: 3, reason: 'not a JSON record (torn write or edited line)' });
    expect(v.breaks).toBe(1);
  });

  it('writes in call order across many flushes', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger });
    for (let i = 1; i <= 50; i++) {
      log.write(record(i));
      if (i % 7 === 0) await new Promise((r) => setImmediate(r));
    }
    await log.close();
    expect(lines(file).map((l) => (JSON.parse(l) as { evidence_id: string }).evidence_id)).toEqual(Array.from({ length: 50 }, (_, i) => `evd_${i + 1}`));
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });
});

describe('one turn\'s lines are encoded once into a reused buffer', () => {
  it('turn after turn, non-ASCII members and a turn past the buffer\'s first size keep exact lines and an unbroken chain', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger });
    const turn = (from: number, n: number, over: (i: number) => Partial<EvidenceRecord>) =>
      new Promise<void>((resolve) => {
        for (let i = from; i < from + n; i++) log.write(record(i, over(i)), i % 3 === 0 ? undefined : 'fixed');
        setImmediate(resolve);
      });
    await turn(1, 5, (i) => ({ subject: `usér ${i} \u2028 "q"`, path: `/p/${i}` }));
    await turn(6, 400, (i) => ({ path: `/long/${'ü'.repeat(200)}/${i}` })); // ~400 x 1 KB: past 64 KiB in one turn
    await turn(406, 3, () => ({}));
    await log.close();
    const ls = lines(file);
    expect(ls).toHaveLength(408);
    for (let i = 0; i < ls.length; i++) {
      const p = JSON.parse(ls[i]!) as Record<string, unknown>;
      expect(p['sequence']).toBe(i + 1);
      expect(p['prev_hash']).toBe(i === 0 ? null : hash(ls[i - 1]!));
    }
    expect((JSON.parse(ls[0]!) as { subject: string }).subject).toBe('usér 1 \u2028 "q"');
    expect(await verifyEvidenceFile(file)).toEqual({ ok: true, records: 408, signaturesVerified: 0, breaks: 0 });
  });

  it('stdout that is a regular file is written directly, in order, with the chain intact', async () => {
    const file = join(dir, 'stdout.log');
    const dist = join(__dirname, '../../dist/evidence/log.js');
    const script = `
      const { EvidenceLog } = await import(${JSON.stringify(dist)});
      const { Metrics } = await import(${JSON.stringify(join(__dirname, '../../dist/observability/metrics.js'))});
      const { pino } = await import('pino');
      const log = await EvidenceLog.open({ sink: 'stdout', metrics: new Metrics({ defaultMetrics: false }), logger: pino({ level: 'silent' }) });
      const rec = (n) => ({ evidence_id: 'evd_' + n, decision_id: 'dec_' + n, decision: 'permit', denial_reason: null, evaluated_at: '2026-11-02T08:14:03.000Z', audience: 'https://a', method: 'GET', path: '/x/' + n, action: null, subject: null, client_id: null, actor: null, token_jti: null, jkt: null, mission: null, parameter_digest: null, upstream_status: 200, duration_ms: 1 });
      for (let t = 0; t < 3; t++) { for (let i = 1; i <= 50; i++) log.write(rec(t * 50 + i), 'fixed'); await new Promise((r) => setImmediate(r)); }
      await log.close();
    `;
    const { openSync, closeSync } = await import('node:fs');
    const fd = openSync(file, 'w');
    try {
      execFileSync(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', fd, 'inherit'], cwd: join(__dirname, '../..') });
    } finally {
      closeSync(fd);
    }
    const ls = lines(file);
    expect(ls.map((l) => (JSON.parse(l) as { path: string }).path)).toEqual(Array.from({ length: 150 }, (_, i) => `/x/${i + 1}`));
    expect(await verifyEvidenceFile(file)).toEqual({ ok: true, records: 150, signaturesVerified: 0, breaks: 0 });
  });
});

describe('verify-evidence detects tampering (SPEC §9 chain)', () => {
  let file: string;
  beforeEach(async () => {
    file = join(dir, 'e.log');
    await writeAll(file, [1, 2, 3, 4, 5].map((n) => record(n)));
  });
  const rewrite = (f: (ls: string[]) => string[]): void => writeFileSync(file, f(lines(file)).join('\n') + '\n');

  it('an edited line breaks at the next line', async () => {
    rewrite((ls) => ls.map((l, i) => (i === 1 ? l.replace('"deny"', '"permit"') : l)));
    expect((await verifyEvidenceFile(file)).firstBreak).toEqual({ line: 3, reason: 'prev_hash does not match the previous line' });
  });

  it('a deleted line breaks where it was', async () => {
    rewrite((ls) => ls.filter((_, i) => i !== 2));
    const v = await verifyEvidenceFile(file);
    expect(v.ok).toBe(false);
    expect(v.firstBreak?.line).toBe(3);
    expect(v.firstBreak?.reason).toMatch(/sequence 4 follows 2/);
  });

  it('reordered lines break', async () => {
    rewrite((ls) => [ls[0]!, ls[2]!, ls[1]!, ls[3]!, ls[4]!]);
    expect((await verifyEvidenceFile(file)).firstBreak?.line).toBe(2);
  });

  it('a removed first line is seen (truncated at the front)', async () => {
    rewrite((ls) => ls.slice(1));
    expect((await verifyEvidenceFile(file)).firstBreak?.line).toBe(1);
  });

  it('an inserted line breaks', async () => {
    rewrite((ls) => [...ls.slice(0, 2), ls[1]!, ...ls.slice(2)]);
    expect((await verifyEvidenceFile(file)).firstBreak?.line).toBe(3);
  });

  it('a line over 1 MiB is one break, hashed as it streams by (the next line chains over it), and costs time in proportion', async () => {
    const ls = lines(file);
    const huge = `{"a":"${'a'.repeat(16 * 1024 * 1024)}"}`;
    // Line 3 replaced by the huge one; line 4 re-chained to it, so only line 3 is a break.
    const line4 = ls[3]!.replace(/"prev_hash":"[^"]*"/, `"prev_hash":"sha-256:${createHash('sha256').update(huge).digest('base64url')}"`);
    writeFileSync(file, [ls[0], ls[1], huge, line4, ls[4]].join('\n') + '\n');
    const started = performance.now();
    const v = await verifyEvidenceFile(file);
    expect(performance.now() - started).toBeLessThan(5000); // one 16 MiB line took 21 s (r13a)
    expect(v).toMatchObject({ ok: false, breaks: 2, firstBreak: { line: 3, reason: 'a line longer than 1048576 bytes is not a record' } });
    // The second break is line 4's sequence (3 is gone), not its prev_hash.
    expect(v.records).toBe(4);
  });

  it('a repeated member name is a break (JSON.parse keeps the last, another reader the first); so is deep nesting, not a crash', async () => {
    rewrite((ls) => ls.map((l, i) => (i === 4 ? l.replace('{', '{"decision":"deny",') : l)));
    expect((await verifyEvidenceFile(file)).firstBreak).toEqual({ line: 5, reason: 'a member name appears twice (an edited line: readers disagree on which counts)' });
    rewrite((ls) => ls.map((l, i) => (i === 4 ? l.replace('"decision":"deny",', `"x":${'['.repeat(20_000)}${']'.repeat(20_000)},`) : l)));
    expect((await verifyEvidenceFile(file)).firstBreak).toEqual({ line: 5, reason: 'a member is nested too deeply for a record' });
  });

  it('a blank line breaks', async () => {
    rewrite((ls) => [...ls.slice(0, 2), '', ...ls.slice(2)]);
    expect((await verifyEvidenceFile(file)).firstBreak).toEqual({ line: 3, reason: 'empty line' });
  });
});

describe('SPEC §9 signed records: compact JWS, ES256, typ application/mission-runtime-evidence+jws', () => {
  let keyFile: string;
  let pemFile: string;
  let pubFile: string;
  let publicKey: KeyObject;
  beforeEach(() => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    publicKey = pair.publicKey;
    keyFile = join(dir, 'ev.jwk');
    writeFileSync(keyFile, JSON.stringify({ ...pair.privateKey.export({ format: 'jwk' }), kid: 'ev-2026' }));
    pemFile = join(dir, 'ev.pem');
    writeFileSync(pemFile, pair.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    pubFile = join(dir, 'ev.pub.jwk');
    writeFileSync(pubFile, JSON.stringify(pair.publicKey.export({ format: 'jwk' })));
  });

  it('each record carries evidence_envelope; an independent verifier (jose) accepts it and its payload is JCS of the record', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2)], { privateKeyFile: keyFile });
    for (const l of lines(file)) {
      const rec = JSON.parse(l) as Record<string, unknown> & { evidence_envelope: { format: string; value: string } };
      expect(Object.keys(rec).at(-1)).toBe('evidence_envelope');
      expect(rec.evidence_envelope.format).toBe('jws-compact');
      const { payload, protectedHeader } = await compactVerify(rec.evidence_envelope.value, publicKey);
      expect(protectedHeader).toEqual({ alg: 'ES256', typ: 'application/mission-runtime-evidence+jws', cty: 'application/mission-decision-evidence+json', kid: 'ev-2026' });
      const { evidence_envelope: _e, ...unsigned } = rec;
      expect(new TextDecoder().decode(payload)).toBe(jcs(unsigned));
    }
    expect(await verifyEvidenceFile(file, { publicKey: pubFile })).toEqual({ ok: true, records: 2, signaturesVerified: 2, breaks: 0 });
  });

  it('accepts a PKCS#8 PEM key; kid defaults to the RFC 7638 thumbprint', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1)], { privateKeyFile: pemFile });
    const rec = JSON.parse(lines(file)[0]!) as { evidence_envelope: { value: string } };
    const { protectedHeader } = await compactVerify(rec.evidence_envelope.value, publicKey);
    const jwk = publicKey.export({ format: 'jwk' });
    const tp = createHash('sha256').update(`{"crv":"P-256","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`).digest('base64url');
    expect(protectedHeader.kid).toBe(tp);
    expect((await verifyEvidenceFile(file, { publicKey: pemFile })).ok).toBe(true);
  });

  it('an edited last line (which the chain cannot protect) fails its signature', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2)], { privateKeyFile: keyFile });
    writeFileSync(file, readFileSync(file, 'utf8').replace('"dec_2"', '"dec_9"'));
    expect((await verifyEvidenceFile(file)).ok).toBe(true); // the chain alone cannot see it
    expect((await verifyEvidenceFile(file, { publicKey })).firstBreak).toEqual({ line: 2, reason: 'signed payload differs from the record' });
  });

  it('an envelope whose JWS header is JSON null is a break with its line, not an unreadable file (exit 1, not 2)', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2)], { privateKeyFile: keyFile });
    const ls = lines(file);
    const rec = JSON.parse(ls[1]!) as { evidence_envelope: { value: string } };
    const [, p, sig] = rec.evidence_envelope.value.split('.');
    writeFileSync(file, `${ls[0]}\n${ls[1]!.replace(rec.evidence_envelope.value, `${Buffer.from('null').toString('base64url')}.${p}.${sig}`)}\n`);
    expect((await verifyEvidenceFile(file, { publicKey })).firstBreak).toEqual({ line: 2, reason: 'JWS header is not a JSON object' });
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await verifyEvidenceCli([file, '--key', pubFile])).toBe(1);
    } finally {
      out.mockRestore();
    }
  });

  it('another key does not verify; an unsigned record is a break when a key is given', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1)], { privateKeyFile: keyFile });
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    expect((await verifyEvidenceFile(file, { publicKey: other })).firstBreak?.reason).toBe('signature does not verify');
    const plain = join(dir, 'plain.log');
    await writeAll(plain, [record(1)]);
    expect((await verifyEvidenceFile(plain, { publicKey })).firstBreak?.reason).toBe('record is not signed');
  });

  it('a file continued across a signing-key rotation verifies under both keys: --key twice, or a JWK Set (r19a 2)', async () => {
    const file = join(dir, 'e.log');
    await writeAll(file, [record(1), record(2)], { privateKeyFile: keyFile });
    const next = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const nextKey = join(dir, 'next.jwk');
    writeFileSync(nextKey, JSON.stringify({ ...next.privateKey.export({ format: 'jwk' }), kid: 'ev-2027' }));
    await writeAll(file, [record(3), record(4)], { privateKeyFile: nextKey });
    const nextPub = join(dir, 'next.pub.jwk');
    writeFileSync(nextPub, JSON.stringify(next.publicKey.export({ format: 'jwk' })));
    // Either key alone: the other's records are breaks.
    expect(await verifyEvidenceFile(file, { publicKey: pubFile })).toMatchObject({ ok: false, breaks: 2, firstBreak: { line: 3, reason: 'signature does not verify' } });
    expect(await verifyEvidenceFile(file, { publicKey: nextPub })).toMatchObject({ ok: false, breaks: 2, firstBreak: { line: 1 } });
    expect(await verifyEvidenceFile(file, { publicKey: [pubFile, nextPub] })).toEqual({ ok: true, records: 4, signaturesVerified: 4, breaks: 0 });
    const jwks = join(dir, 'keys.json');
    writeFileSync(jwks, JSON.stringify({ keys: [publicKey.export({ format: 'jwk' }), next.publicKey.export({ format: 'jwk' })] }));
    expect(await verifyEvidenceFile(file, { publicKey: jwks })).toMatchObject({ ok: true, signaturesVerified: 4 });
    // A third, unrelated key verifies nothing, and says so.
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    expect((await verifyEvidenceFile(file, { publicKey: [stranger, publicKey] })).firstBreak).toEqual({ line: 3, reason: 'signature does not verify under any of the keys' });
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await verifyEvidenceCli([file, '--key', pubFile, '--key', nextPub])).toBe(0);
      expect(await verifyEvidenceCli([file, '--key', nextPub])).toBe(1);
      expect(await verifyEvidenceCli([file, '--key', jwks])).toBe(0);
    } finally {
      out.mockRestore();
    }
    writeFileSync(jwks, '{"keys": []}');
    await expect(verifyEvidenceFile(file, { publicKey: jwks })).rejects.toThrow(/without keys/);
    // Every key of a set is an evidence key: one of another type is refused, not tried (r21b 18).
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    writeFileSync(jwks, JSON.stringify({ keys: [publicKey.export({ format: 'jwk' }), rsa.export({ format: 'jwk' })] }));
    await expect(verifyEvidenceFile(file, { publicKey: jwks })).rejects.toThrow(/must be an EC P-256 key/);
  });

  it('the gateway says so when it continues a file under another signing key, or unsigned', async () => {
    const file = join(dir, 'e.log');
    const said: Record<string, unknown>[] = [];
    const capture = pino({ level: 'info' }, { write: (line: string) => void said.push(JSON.parse(line) as Record<string, unknown>) });
    const reopen = async (sign?: { privateKeyFile: string }): Promise<void> => {
      const log = await EvidenceLog.open({ sink: file, metrics, logger: capture, ...(sign === undefined ? {} : { sign }) });
      log.write(record(1));
      await log.close();
    };
    await reopen({ privateKeyFile: keyFile });
    await reopen({ privateKeyFile: keyFile });
    expect(said).toEqual([]);
    const next = join(dir, 'next.jwk');
    writeFileSync(next, JSON.stringify({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }), kid: 'ev-2027' }));
    await reopen({ privateKeyFile: next });
    expect(said.at(-1)).toMatchObject({ kid: 'ev-2027', previous_kid: 'ev-2026', msg: expect.stringMatching(/new signing key/) });
    await reopen();
    expect(said.at(-1)).toMatchObject({ previous_kid: 'ev-2027', msg: expect.stringMatching(/continues unsigned/) });
    await reopen({ privateKeyFile: keyFile });
    expect(said.at(-1)).toMatchObject({ kid: 'ev-2026', msg: expect.stringMatching(/continues signed after unsigned/) });
    expect(said).toHaveLength(3);
  });

  it('refuses a key that is not P-256', async () => {
    const rsa = join(dir, 'rsa.pem');
    writeFileSync(rsa, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }));
    await expect(EvidenceLog.open({ sink: join(dir, 'e.log'), metrics, logger, sign: { privateKeyFile: rsa } })).rejects.toThrow(/P-256/);
    const garbage = join(dir, 'garbage.jwk');
    writeFileSync(garbage, '{"kty":"EC","d":"c2VjcmV0"}');
    await expect(EvidenceLog.open({ sink: join(dir, 'e.log'), metrics, logger, sign: { privateKeyFile: garbage } })).rejects.toThrow(/not a private JWK or PEM/);
  });
});

describe('fail closed when evidence cannot be written (SPEC §2 /readyz, §9)', () => {
  afterEach(() => vi.useRealTimers());

  it('an unopenable sink starts unhealthy (metric 0) and recovers when it becomes writable', async () => {
    const sub = join(dir, 'later');
    const file = join(sub, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger, retryMs: 20 });
    expect(log.healthy()).toBe(false);
    expect(await gauge()).toBe(0);
    log.write(record(2, { denial_reason: 'evidence_unavailable' })); // what a request gets meanwhile
    expect(await failures()).toBe(1);
    mkdirSync(sub);
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 10 });
    expect(await gauge()).toBe(1);
    log.write(record(3));
    await log.close();
    expect(lines(file).map((l) => (JSON.parse(l) as { evidence_id: string }).evidence_id)).toEqual(['evd_3']);
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });

  it('a permit recorded while the sink is failed (a request admitted before, answered since) goes to the reopened file; denials are counted only (r19a 1)', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger, retryMs: 200 });
    log.write(record(1));
    await new Promise((r) => setImmediate(r));
    renameSync(file, join(dir, 'e.log.1'));
    await vi.waitFor(() => expect(log.healthy()).toBe(false), { timeout: 3000, interval: 5 });
    // The sink is failed: a forwarded request's upstream answers now, others are being refused.
    log.write(record(3, { upstream_status: 200 }));
    for (let i = 0; i < 5; i++) log.write(record(10 + 2 * i, { denial_reason: 'evidence_unavailable' }));
    log.write(record(5, { upstream_status: 201 }));
    expect(await failures()).toBe(7);
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 3000, interval: 5 });
    await log.close();
    expect(lines(join(dir, 'e.log.1'))).toHaveLength(1);
    expect(lines(file).map((l) => (JSON.parse(l) as { evidence_id: string }).evidence_id)).toEqual(['evd_3', 'evd_5']);
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });

  it('a deleted or rotated-away file fails the sink (requests denied), which reopens the path with a new chain', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger, retryMs: 20 });
    log.write(record(1));
    await new Promise((r) => setImmediate(r));
    rmSync(file);
    await vi.waitFor(() => expect(log.healthy()).toBe(false), { timeout: 2000, interval: 5 });
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 5 });
    log.write(record(2));
    await new Promise((r) => setImmediate(r));
    renameSync(file, join(dir, 'e.log.1'));
    await vi.waitFor(() => expect(log.healthy()).toBe(false), { timeout: 2000, interval: 5 });
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 5 });
    log.write(record(3));
    await log.close();
    expect(lines(join(dir, 'e.log.1'))).toHaveLength(1);
    expect(lines(file)).toHaveLength(1);
    expect(JSON.parse(lines(file)[0]!)).toMatchObject({ sequence: 1, prev_hash: null });
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });

  it('records written just after the file was deleted (before the path check notices) go to the reopened file, not the deleted one (r13a 11)', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger, retryMs: 50 });
    log.write(record(1));
    await new Promise((r) => setImmediate(r));
    rmSync(file);
    // Admitted before the sink knew: nothing fails them now, so they must reach the next file.
    for (const n of [2, 3, 4]) log.write(record(n));
    await new Promise((r) => setImmediate(r));
    expect(log.healthy()).toBe(false);
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 5 });
    await log.close();
    expect(lines(file).map((l) => (JSON.parse(l) as { evidence_id: string }).evidence_id)).toEqual(['evd_2', 'evd_3', 'evd_4']);
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });

  /** A FIFO sink (1 KiB allowed to wait) whose reader has stopped: one 256 KiB record puts it behind. */
  async function behindStalledReader(): Promise<{ log: EvidenceLog; reader: ReturnType<typeof createReadStream> }> {
    const fifo = join(dir, 'e.fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = createReadStream(fifo);
    reader.pause();
    const log = await EvidenceLog.open({ sink: fifo, metrics, logger, maxPendingBytes: 1024 });
    log.write(record(1, { blob: 'x'.repeat(256 * 1024) } as Partial<EvidenceRecord>));
    await new Promise((r) => setImmediate(r));
    expect(log.healthy()).toBe(false);
    return { log, reader };
  }

  it('a sink that falls behind (a FIFO whose reader stalls) reports unhealthy until it drains', async () => {
    const { log, reader } = await behindStalledReader();
    expect(await gauge()).toBe(0);
    let received = '';
    reader.on('data', (d) => (received += d));
    reader.resume();
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 5000, interval: 5 });
    expect(await gauge()).toBe(1);
    await log.close();
    await vi.waitFor(() => expect(received.endsWith('\n')).toBe(true), { timeout: 5000, interval: 5 });
    expect(JSON.parse(received)).toMatchObject({ sequence: 1, prev_hash: null, blob: 'x'.repeat(256 * 1024) });
    reader.destroy();
  });

  it('behind a reader that does not read, denials are counted, not queued; permits admitted before still go out (r21j 2)', async () => {
    const { log, reader } = await behindStalledReader();
    const failures = async (): Promise<number> => (await metrics.evidenceFailures.get()).values[0]?.value ?? 0;
    const before = await failures();
    for (let i = 0; i < 1000; i++) log.write(record(2, { evidence_id: `evd_deny_${i}`, blob: 'y'.repeat(1024) } as Partial<EvidenceRecord>));
    log.write(record(3));
    await new Promise((r) => setImmediate(r));
    expect(await failures()).toBe(before + 1000);
    let received = '';
    reader.on('data', (d) => (received += d));
    reader.resume();
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 5000, interval: 5 });
    await log.close();
    await vi.waitFor(() => expect(received.split('\n').filter(Boolean)).toHaveLength(2), { timeout: 5000, interval: 5 });
    expect(received.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { evidence_id: string; sequence: number }).sequence)).toEqual([1, 2]);
    expect(received).not.toContain('evd_deny_');
    reader.destroy();
  });

  it('a regular file receives each turn\'s records within that turn (a direct append, nothing pending)', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger, maxPendingBytes: 1024 });
    log.write(record(1, { blob: 'x'.repeat(256 * 1024) } as Partial<EvidenceRecord>));
    log.write(record(2));
    await new Promise((r) => setImmediate(r));
    expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(2);
    expect(log.healthy()).toBe(true);
    await log.close();
    expect((await verifyEvidenceFile(file)).ok).toBe(true);
  });

  it('a write error (ENOSPC on /dev/full) makes the sink unhealthy and is counted', async () => {
    const log = await EvidenceLog.open({ sink: '/dev/full', metrics, logger, retryMs: 60_000 });
    expect(log.healthy()).toBe(true);
    log.write(record(1));
    log.write(record(2));
    log.write(record(3));
    await vi.waitFor(() => expect(log.healthy()).toBe(false), { timeout: 2000, interval: 5 });
    expect(await gauge()).toBe(0);
    await vi.waitFor(async () => expect(await failures()).toBe(3), { timeout: 2000, interval: 5 });
    log.write(record(4));
    expect(await failures()).toBe(4);
    await log.close();
  });
});

describe('a reopened file is proven writable before requests are admitted (SPEC §9 fail closed)', () => {
  // The sink path is a symlink to /dev/full (opens fine, every write ENOSPC); swapping it for a
  // regular file is a disk that got space back.
  function fullDisk(): string {
    const file = join(dir, 'e.log');
    symlinkSync('/dev/full', file);
    return file;
  }
  function freeDisk(file: string, content = ''): void {
    writeFileSync(file + '.new', content);
    renameSync(file + '.new', file);
  }
  async function failedWith(file: string, n: number): Promise<EvidenceLog> {
    const log = await EvidenceLog.open({ sink: file, metrics, logger, retryMs: 20 });
    for (let i = 1; i <= n; i++) log.write(record(i));
    await vi.waitFor(() => expect(log.healthy()).toBe(false), { timeout: 2000, interval: 5 });
    return log;
  }

  it('stays unhealthy across reopen attempts while every write fails; the failed records are counted once', async () => {
    const file = fullDisk();
    const log = await failedWith(file, 3);
    const until = Date.now() + 300; // 15 reopen attempts
    while (Date.now() < until) {
      expect(log.healthy()).toBe(false);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await gauge()).toBe(0);
    expect(await failures()).toBe(3);
    await log.close();
  });

  it('once writable, the records of the failed write are written first, in order, then the chain goes on', async () => {
    const file = fullDisk();
    const log = await failedWith(file, 3);
    await new Promise((r) => setTimeout(r, 60));
    freeDisk(file);
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 5 });
    expect(await gauge()).toBe(1);
    log.write(record(4));
    await log.close();
    const parsed = lines(file).map((l) => JSON.parse(l) as { evidence_id: string; sequence: number });
    expect(parsed.map((p) => [p.evidence_id, p.sequence])).toEqual([['evd_1', 1], ['evd_2', 2], ['evd_3', 3], ['evd_4', 4]]);
    expect(await verifyEvidenceFile(file)).toMatchObject({ ok: true, records: 4 });
  });

  it('a permit recorded while the kept records are being written goes to the file too (r19e 7)', async () => {
    const file = fullDisk();
    const log = await failedWith(file, 3);
    await new Promise((r) => setTimeout(r, 60));
    freeDisk(file);
    // The reopen's write of the kept records is in flight when a forwarded request's upstream answers.
    const write = WriteStream.prototype.write;
    let answered = false;
    const spy = vi.spyOn(WriteStream.prototype, 'write').mockImplementation(function (this: WriteStream, ...args: Parameters<WriteStream['write']>) {
      const r = write.apply(this, args);
      if (!answered) {
        answered = true;
        log.write(record(5, { upstream_status: 200 }));
      }
      return r;
    });
    try {
      await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 5 });
    } finally {
      spy.mockRestore();
    }
    expect(answered).toBe(true);
    log.write(record(7));
    await log.close();
    const parsed = lines(file).map((l) => JSON.parse(l) as { evidence_id: string; sequence: number });
    expect(parsed.map((p) => [p.evidence_id, p.sequence])).toEqual([['evd_1', 1], ['evd_2', 2], ['evd_3', 3], ['evd_5', 4], ['evd_7', 5]]);
    expect(await verifyEvidenceFile(file)).toMatchObject({ ok: true, records: 5 });
  });

  it('records a part-failed write already put in the file are not written twice', async () => {
    const file = fullDisk();
    const log = await failedWith(file, 3);
    // What a write that hit ENOSPC part-way leaves: evd_1 whole, evd_2 torn.
    const first = JSON.stringify({ ...record(1), sequence: 1, prev_hash: null });
    freeDisk(file, first + '\n{"evidence_id":"evd_2","dec');
    await vi.waitFor(() => expect(log.healthy()).toBe(true), { timeout: 2000, interval: 5 });
    await log.close();
    const ls = lines(file);
    expect(ls).toHaveLength(4);
    expect(ls[1]).toBe('{"evidence_id":"evd_2","dec');
    const ids = [ls[0]!, ls[2]!, ls[3]!].map((l) => (JSON.parse(l) as { evidence_id: string }).evidence_id);
    expect(ids).toEqual(['evd_1', 'evd_2', 'evd_3']);
    const v = await verifyEvidenceFile(file);
    expect(v.breaks).toBe(1); // the torn line, visible
    expect(v.firstBreak?.line).toBe(2);
  });
});

describe('mission-gateway verify-evidence CLI', () => {
  it('exit 0 intact, 1 broken, 2 usage', async () => {
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const file = join(dir, 'e.log');
      await writeAll(file, [record(1), record(2), record(3)]);
      expect(await verifyEvidenceCli([file])).toBe(0);
      expect(out.join('')).toMatch(/^intact: 3 records/);
      writeFileSync(file, lines(file).filter((_, i) => i !== 1).join('\n') + '\n');
      expect(await verifyEvidenceCli([file])).toBe(1);
      expect(out.join('')).toMatch(/BROKEN at line 2/);
      expect(await verifyEvidenceCli([])).toBe(2);
      expect(await verifyEvidenceCli([file, '--key'])).toBe(2);
      expect(await verifyEvidenceCli([join(dir, 'missing.log')])).toBe(2);
    } finally {
      spy.mockRestore();
      err.mockRestore();
    }
  });
});

describe('evidence keeps flowing under fake timers', () => {
  it('a test that fakes timers after start still gets its records', async () => {
    const file = join(dir, 'e.log');
    const log = await EvidenceLog.open({ sink: file, metrics, logger });
    const realSetTimeout = globalThis.setTimeout;
    const sleep = (ms: number): Promise<void> => new Promise((r) => realSetTimeout(r, ms));
    vi.useFakeTimers({ toFake: ['setTimeout', 'setImmediate', 'setInterval'] });
    try {
      log.write(record(1));
      // Poll on the real clock (vi.waitFor would advance the fake one itself).
      let seen = false;
      for (let i = 0; i < 200 && !seen; i++) {
        await sleep(10);
        seen = readFileSync(file, 'utf8').includes('evd_1');
      }
      expect(seen).toBe(true);
    } finally {
      vi.useRealTimers();
    }
    await log.close();
  });
});
