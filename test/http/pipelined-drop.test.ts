/**
 * A pipelined request whose response waits in Node's queue behind another's, when the client drops
 * the connection: its upstream request must end with it (Node gives a queued response no 'close').
 */
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { eventually, startEcho, startGateway } from '../helpers/gateway.js';

const config = (upstream: string): string => `
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${upstream}, timeout_s: 5 }
routes:
  - match: { path: /public/** }
    auth: none
`;

describe('a pipelined request queued behind another when the client drops the connection', () => {
  it('has its upstream request aborted, a stream included (it would hold an upstream connection for good)', async () => {
    const closed: string[] = [];
    const echo = await startEcho((req, res) => {
      res.once('close', () => closed.push(req.url ?? ''));
      if (req.url === '/public/slow') setTimeout(() => res.end('slow'), 3000);
      else {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: first\n\n');
      }
    });
    const gw = await startGateway(config(echo.url));
    try {
      const u = new URL(gw.url);
      const socket = connect(Number(u.port), u.hostname);
      socket.on('error', () => undefined);
      await new Promise<void>((r) => socket.once('connect', () => r()));
      socket.write('GET /public/slow HTTP/1.1\r\nHost: a\r\n\r\nGET /public/stream HTTP/1.1\r\nHost: a\r\n\r\n');
      await eventually(() => expect(echo.requests.map((r) => r.url)).toEqual(['/public/slow', '/public/stream']));
      socket.destroy();
      await eventually(() => expect(closed.sort()).toEqual(['/public/slow', '/public/stream']), 2000);
    } finally {
      await gw.close();
      await echo.close();
    }
  });
});
