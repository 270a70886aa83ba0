/**
 * (g) A typical Node stack validating JWT access tokens with DPoP: express 5 +
 * express-oauth2-jwt-bearer (token signature, iss, aud, exp, DPoP proof, htm, htu, ath, cnf.jkt),
 * then proxying with undici. It keeps no jti replay record, so it does less than the gateway.
 * argv: upstream issuer jwksUri audience
 */
import { createServer } from 'node:http';
import express from 'express';
import { auth } from 'express-oauth2-jwt-bearer';
import { Pool } from 'undici';
import { serveStats } from '../lib/proc.js';

const [upstream, issuer, jwksUri, audience] = process.argv.slice(2);
const pool = new Pool(upstream, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 });
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'authorization', 'dpop']);

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use(auth({ issuer, jwksUri, audience, tokenSigningAlg: 'ES256', dpop: { enabled: true, required: true } }));
app.use(async (req, res) => {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k)) headers[k] = v;
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  try {
    const up = await pool.request({ method: req.method, path: req.originalUrl, headers, body: hasBody ? req : null, signal: ac.signal });
    const out = {};
    for (const [k, v] of Object.entries(up.headers)) if (!HOP.has(k)) out[k] = v;
    res.writeHead(up.statusCode, out);
    for await (const chunk of up.body) res.write(chunk);
    res.end();
  } catch {
    if (!res.headersSent) res.status(502);
    res.end();
  }
});

const server = createServer({ keepAliveTimeout: 60_000 }, app);
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  serveStats();
  process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` });
});
