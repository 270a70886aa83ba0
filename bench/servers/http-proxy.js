/** (d) A minimal http-proxy-3 reverse proxy with a keep-alive agent (its recommended setup). */
import { Agent, createServer } from 'node:http';
import { createProxyServer } from 'http-proxy-3';
import { serveStats } from '../lib/proc.js';

const proxy = createProxyServer({ target: process.argv[2], agent: new Agent({ keepAlive: true, maxSockets: 128 }) });
proxy.on('error', (_err, _req, res) => {
  if (res && typeof res.writeHead === 'function' && !res.headersSent) res.writeHead(502);
  res?.end?.();
});
const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => proxy.web(req, res));
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  serveStats();
  process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` });
});
