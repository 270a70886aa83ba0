/**
 * SPEC section 7 (MCP responses as Server-Sent Events, filtered by the gateway) under fuzzing of
 * SseSplitter (WHATWG HTML server-sent events: CRLF, LF or CR line ends; a blank line ends an
 * event): however the upstream's bytes are cut into chunks, the same events come out, no byte is
 * lost or duplicated, and each event is released as soon as its blank line arrives.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseEvent, SseSplitter } from '../../src/mcp/sse.js';
import { bounded, RUNS } from './bounds.js';

const piece = fc.constantFrom('data: {"jsonrpc":"2.0"}', 'event: message', 'id: 7', ': comment', 'data:', 'retry: 10', '\r\n', '\n', '\r', '\r\n\r\n', '\n\n', '\r\r', 'é', 'x');
const stream = fc.array(piece, { maxLength: 40 }).map((p) => Buffer.from(p.join('')));

function split(buf: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    out.push(buf.subarray(from, p));
    from = p;
  }
  out.push(buf.subarray(from));
  return out;
}

function run(chunks: readonly Buffer[]): { events: Buffer[]; rest: Buffer | null } {
  const s = new SseSplitter();
  const events: Buffer[] = [];
  for (const c of chunks) events.push(...s.push(c));
  return { events, rest: s.flush() };
}

describe('SPEC §7 SSE splitting under fuzzing (WHATWG server-sent events)', () => {
  it('chunking does not change the events; bytes are neither lost nor duplicated', () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 12 }), (buf, cuts) => {
        const whole = bounded(() => run([buf]));
        const parts = bounded(() => run(split(buf, cuts)));
        if (!whole.ok || !parts.ok) throw new Error('splitter threw');
        expect(parts.value.events.map((e) => e.toString('latin1'))).toEqual(whole.value.events.map((e) => e.toString('latin1')));
        const all = Buffer.concat([...parts.value.events, parts.value.rest ?? Buffer.alloc(0)]);
        expect(all.equals(buf)).toBe(true);
        for (const e of parts.value.events) {
          const ev = bounded(() => parseEvent(e));
          if (!ev.ok) throw new Error('parseEvent threw');
          // Every released event ends with a blank line (two line ends in a row).
          expect(/(\r\n|\r|\n)(\r\n|\r|\n)$/.test(e.toString('latin1')) || /^(\r\n|\r|\n)$/.test(e.toString('latin1'))).toBe(true);
        }
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('byte-by-byte delivery of a long stream stays linear', () => {
    const big = Buffer.from('data: ' + 'x'.repeat(200_000) + '\n\n' + 'data: y\n\n'.repeat(5000));
    const out = bounded(() => {
      const s = new SseSplitter();
      let n = 0;
      for (let i = 0; i < big.length; i += 64) n += s.push(big.subarray(i, i + 64)).length;
      return n;
    }, 3000);
    expect(out.ok && out.value).toBe(5001);
  });
});
