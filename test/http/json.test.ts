/**
 * The gateway's own JSON answers (src/http/json.ts), over a real socket: their framing, and a
 * stream that already started is cut, never finished as if the answer were its end.
 */
import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { writeJson } from '../../src/http/json.js';

let server: Server | null = null;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  server = null;
});

async function serve(answer: (res: ServerResponse) => void): Promise<string> {
  server = createServer((_req, res) => answer(res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('writeJson', () => {
  it('frames the document: JSON type, its byte length (UTF-8), no-store, and the extra fields', async () => {
    const url = await serve((res) => writeJson(res, 403, JSON.stringify({ error: 'é' }), { 'mission-decision': 'dec_1' }));
    const r = await request(url);
    expect(r.statusCode).toBe(403);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.headers['mission-decision']).toBe('dec_1');
    expect(r.headers['content-length']).toBe(String(Buffer.byteLength('{"error":"é"}')));
    expect(await r.body.json()).toEqual({ error: 'é' });
  });

  it('takes another Cache-Control when given one, but never another Content-Length', async () => {
    const url = await serve((res) => writeJson(res, 200, '{}', { 'cache-control': 'max-age=300', 'content-length': '99' }));
    const r = await request(url);
    expect(r.headers['cache-control']).toBe('max-age=300');
    expect(r.headers['content-length']).toBe('2');
    expect(await r.body.text()).toBe('{}');
  });

  it('cuts a response whose head already went out instead of ending it', async () => {
    const url = await serve((res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: 1\n\n');
      setTimeout(() => writeJson(res, 403, '{"error":"x"}'), 50);
    });
    const r = await request(url);
    expect(r.statusCode).toBe(200);
    await expect(r.body.text()).rejects.toThrow();
  });
});
