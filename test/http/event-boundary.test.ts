/**
 * EventBoundary: whether an event stream written so far ends between two events, however the
 * chunks cut it, for every line ending the event-stream syntax allows (CRLF, LF, CR).
 */
import { describe, expect, it } from 'vitest';
import { EventBoundary } from '../../src/http/event-boundary.js';

/** `text` seen in chunks of `size` bytes. */
function after(text: string, size: number): boolean {
  const b = new EventBoundary();
  const bytes = Buffer.from(text, 'utf8');
  for (let i = 0; i < bytes.length; i += size) b.see(bytes.subarray(i, i + size));
  return b.at;
}

describe('EventBoundary', () => {
  it('nothing written yet is a boundary', () => {
    expect(new EventBoundary().at).toBe(true);
    const b = new EventBoundary();
    b.see(Buffer.alloc(0));
    expect(b.at).toBe(true);
  });

  const ends: [string, boolean][] = [
    ['data: x\n\n', true],
    ['data: x\r\n\r\n', true],
    ['data: x\r\r', true],
    ['data: x\n\r\n', true],
    ['data: x\r\n\n', true],
    ['data: x\r\r\n', true],
    ['data: x\n\r', true],
    ['data: x\n', false],
    ['data: x\r\n', false],
    ['data: x\r', false],
    ['data: x', false],
    ['data: x\n\ndata: y', false],
    ['data: x\n\ndata: y\n', false],
    ['data: x\n\ndata: y\n\n', true],
    [': keepalive\n\n', true],
    ['\u0000\u0000\u0000', false],
  ];
  it.each(ends.flatMap(([text, at]) => [1, 2, 3, 64].map((size) => [JSON.stringify(text), size, text, at] as const)))('%s in chunks of %i', (_name, size, text, at) => {
    expect(after(text, size)).toBe(at);
  });
});
