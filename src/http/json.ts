/**
 * The JSON answers the gateway writes itself (denials, ID-JAG grant errors, MCP answers it gives
 * in the upstream's place, SET receiver errors, admin endpoints): one place for their framing.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';

/**
 * Writes `text` (a JSON document) as the whole answer: `Content-Type: application/json`, its
 * `Content-Length`, `Cache-Control: no-store` unless `headers` names another, then `headers`.
 * A response whose head has already gone out (a stream that started) cannot carry the answer any
 * more: its connection is destroyed, so the client sees a cut stream and never a complete one.
 */
export function writeJson(res: ServerResponse, status: number, text: string, headers?: OutgoingHttpHeaders): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
