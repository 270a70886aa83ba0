/**
 * Bounded body reads, for the requests whose body the gateway must read (route params, MCP,
 * ID-JAG). Past `max` bytes the read stops with Denial('body_too_large') (413); a declared
 * Content-Length over the limit is refused before reading anything.
 */
import type { IncomingMessage } from 'node:http';
import { Denial } from '../errors.js';
import { rawHeader } from './headers.js';

export function hasBody(req: IncomingMessage): boolean {
  const raw = req.rawHeaders;
  const len = rawHeader(raw, 'content-length');
  if (len !== undefined) return len.trim() !== '0';
  return rawHeader(raw, 'transfer-encoding') !== undefined;
}

/** Bodies up to this declared size are read before forwarding (Pipeline.sendBody). */
export const SMALL_BODY_BYTES = 64 * 1024;

/** A body declared by Content-Length, non-empty, at most SMALL_BODY_BYTES and `max`. */
export function hasSmallBody(req: IncomingMessage, max: number): boolean {
  const len = rawHeader(req.rawHeaders, 'content-length');
  if (len === undefined) return false;
  const n = Number(len);
  return n > 0 && n <= SMALL_BODY_BYTES && n <= max;
}

export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = rawHeader(req.rawHeaders, 'content-length');
  if (declared !== undefined && Number(declared) > max) {
    return Promise.reject(new Denial('body_too_large'));
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        cleanup();
        req.resume(); // drain what is left so the 413 can be written
        reject(new Denial('body_too_large'));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new Denial('request_malformed', { description: 'the request body could not be read', cause: err }));
    };
    const onAborted = (): void => onError(new Error('client aborted'));
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}
