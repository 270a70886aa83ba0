import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_RESPONSE_BYTES } from '../../src/mcp/relay.js';
import { MAX_EVENT_BYTES, messageEvent, parseEvent, rewriteEvent, SseRewriter, SseSplitter } from '../../src/mcp/sse.js';

function splitAll(text: string, cuts: number[]): string[] {
  const s = new SseSplitter();
  const bytes = Buffer.from(text);
  const out: string[] = [];
  let prev = 0;
  for (const c of [...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b), bytes.length]) {
    for (const e of s.push(bytes.subarray(prev, c))) out.push(e.toString());
    prev = c;
  }
  const rest = s.flush();
  if (rest !== null) out.push(rest.toString());
  return out;
}

describe('WHATWG server-sent events: splitting a stream into events', () => {
  it('splits LF, CRLF and CR terminated events', () => {
    expect(splitAll('data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n\n', [])).toEqual(['data: a\n\n', 'data: b\r\n\r\n', 'data: c\r\r', 'data: d\n\n']);
  });

  it('keeps an unterminated tail for flush', () => {
    expect(splitAll('data: a\n\ndata: b\n', [])).toEqual(['data: a\n\n', 'data: b\n']);
  });

  it('does not end an event on a CR that may be the first half of a CRLF split across chunks', () => {
    const s = new SseSplitter();
    expect(s.push(Buffer.from('data: a\r\n\r'))).toEqual([]);
    expect(s.push(Buffer.from('\nid: 2\r\n')).map(String)).toEqual(['data: a\r\n\r\n']);
  });

  it('yields the same events however the bytes are cut (property)', () => {
    const event = fc
      .array(fc.constantFrom('data: {"a":1}', 'event: message', 'id: 7', ': comment', 'data: x', 'retry: 10'), { minLength: 1, maxLength: 4 })
      .chain((lines) => fc.constantFrom('\n', '\r\n', '\r').map((eol) => lines.join(eol) + eol + eol));
    fc.assert(
      fc.property(fc.array(event, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(400), { maxLength: 12 }), (events, cuts) => {
        expect(splitAll(events.join(''), cuts)).toEqual(events);
      }),
    );
  });

  it('SPEC §7: a 16 MiB SSE event in 16 KiB chunks is split in linear time (each byte copied at most once)', () => {
    const big = Buffer.from('data: ' + 'x'.repeat(16 * 1024 * 1024) + '\n\n');
    // Counting the bytes joined rather than timing the loop: the machine is shared, a count is not.
    // A plain wrapper, not a vi spy: a spy would keep every joined buffer alive.
    const concat = Buffer.concat;
    let copied = 0;
    Buffer.concat = ((list: readonly Uint8Array[], totalLength?: number) => {
      const joined = concat(list, totalLength);
      copied += joined.length;
      return joined;
    }) as typeof Buffer.concat;
    try {
      const s = new SseSplitter();
      const events: Buffer[] = [];
      for (let i = 0; i < big.length; i += 16384) events.push(...s.push(big.subarray(i, i + 16384)));
      expect(events.length).toBe(1);
      expect(events[0]!.equals(big)).toBe(true);
      expect(copied).toBeLessThanOrEqual(big.length);
    } finally {
      Buffer.concat = concat;
    }
  });

  it('SPEC §7: an event that never ends is refused once its unfinished bytes pass the bound', () => {
    expect(MAX_EVENT_BYTES).toBe(MAX_RESPONSE_BYTES);
    const s = new SseSplitter();
    const chunk = Buffer.alloc(64 * 1024, 0x78);
    s.push(Buffer.from('data: '));
    for (let sent = 6; sent + chunk.length <= MAX_EVENT_BYTES; sent += chunk.length) s.push(chunk);
    expect(() => s.push(chunk)).toThrow(/SSE event/);
    const small = new SseSplitter(16);
    expect(small.push(Buffer.from('data: 0123456789'))).toEqual([]);
    expect(() => small.push(Buffer.from('\r'))).toThrow(/SSE event/);
    // A finished event is released, not counted against the bound.
    const ok = new SseSplitter(16);
    expect(ok.push(Buffer.from('data: 0123456789abc\n\n')).map(String)).toEqual(['data: 0123456789abc\n\n']);
  });

  it('splits multi-byte UTF-8 across chunks without damage', () => {
    const text = 'data: {"t":"€ü😀"}\n\n';
    const out = splitAll(text, [9, 10, 11, 13]);
    expect(out).toEqual([text]);
  });
});

describe('WHATWG server-sent events: parsing and rewriting', () => {
  it('joins data lines with LF and reads the event type', () => {
    const e = parseEvent(Buffer.from('event: message\r\nid: 3\r\ndata: {"a":\r\ndata:1}\r\n\r\n'));
    expect(e.type).toBe('message');
    expect(e.data).toBe('{"a":\n1}');
    expect(parseEvent(Buffer.from(': keepalive\n\n')).data).toBeNull();
    expect(parseEvent(Buffer.from('event: ping\ndata\n\n'))).toMatchObject({ type: 'ping', data: '' });
  });

  it('keeps id and event fields in place when replacing data', () => {
    const e = parseEvent(Buffer.from('id: 9\nevent: message\ndata: {"x":\ndata: 1}\n\n'));
    expect(rewriteEvent(e, '{"y":2}').toString()).toBe('id: 9\nevent: message\ndata: {"y":2}\n\n');
  });

  it('rewrites only the messages the callback replaces, passing others as their original bytes', () => {
    const keep = 'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\r\n\r\n';
    const change = 'id: 1\ndata: {"jsonrpc":"2.0","id":1,"result":{"tools":[1,2]}}\n\n';
    const r = new SseRewriter((m) => ((m as { id?: number }).id === 1 ? { jsonrpc: '2.0', id: 1, result: { tools: [] } } : undefined));
    const a = r.push(Buffer.from(keep + change.slice(0, 10)));
    const b = r.push(Buffer.from(change.slice(10)));
    expect(a.toString()).toBe(keep);
    expect(b.toString()).toBe('id: 1\ndata: {"jsonrpc":"2.0","id":1,"result":{"tools":[]}}\n\n');
  });

  it('reads a data line behind a leading byte order mark, as a client would', () => {
    expect(parseEvent(Buffer.from('\ufeffdata: {"id":1}\n\n')).data).toBe('{"id":1}');
  });

  it('leaves events without JSON data alone', () => {
    let calls = 0;
    const r2 = new SseRewriter(() => {
      calls++;
      return { replaced: true };
    });
    expect(r2.push(Buffer.from(': comment\n\nevent: ping\n\ndata: not json\n\ndata: {bad\n\n')).toString()).toBe(': comment\n\nevent: ping\n\ndata: not json\n\ndata: {bad\n\n');
    expect(calls).toBe(0);
    expect(r2.push(Buffer.from('event: other\ndata: {}\n\n')).toString()).toBe('event: other\ndata: {"replaced":true}\n\n');
  });

  it('reads JSON behind whitespace a client skips (a second space, a tab, an empty first data line)', () => {
    const r = new SseRewriter(() => ({ replaced: true }));
    for (const ev of ['data:  {"id":1}\n\n', 'data:\t{"id":1}\n\n', 'data:\ndata: {"id":1}\n\n', 'data: \ndata:  [{"id":1}]\n\n']) {
      expect(r.push(Buffer.from(ev)).toString()).toBe('data: {"replaced":true}\n\n');
    }
  });

  it('rewrites the stream\'s tail too: an event ended by a lone CR at the end, or an unterminated one', () => {
    for (const tail of ['event: message\rid: e1\rdata: {"id":1}\r\r', 'data: {"id":1}\n', 'data: {"id":1}']) {
      const r = new SseRewriter(() => ({ replaced: true }));
      const out = Buffer.concat([r.push(Buffer.from(tail)), r.flush() ?? Buffer.alloc(0)]).toString();
      expect(out).toContain('data: {"replaced":true}');
      expect(out).not.toContain('{"id":1}');
    }
  });

  it('encodes a message as a message event', () => {
    expect(messageEvent({ a: 1 }).toString()).toBe('event: message\ndata: {"a":1}\n\n');
  });
});
