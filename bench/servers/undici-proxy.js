/**
 * BASELINE (b): the smallest honest reverse proxy: node:http server, undici Pool `dispatch`
 * streaming both ways, hop-by-hop request headers dropped.
 *
 * With `--crypto-floor <public JWK>` (f) it receives the same requests as the gateway's DPoP
 * scenarios (access token + a fresh proof each) and does exactly one synchronous ES256
 * verification per request: the request's own DPoP proof (its signing input and signature, taken
 * from the header by two `lastIndexOf`s), against a KeyObject imported once from the client's
 * public key. Nothing else is checked. `Authorization` and `DPoP` are not forwarded, as the
 * gateway does not forward them, so the upstream does the same work behind both. The cost no
 * DPoP-validating proxy can go under.
 */
import { createPublicKey, verify } from 'node:crypto';
import { createServer } from 'node:http';
import { Pool } from 'undici';
import { serveStats } from '../lib/proc.js';

const upstream = process.argv[2];
const floorAt = process.argv.indexOf('--crypto-floor');
const pool = new Pool(upstream, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 });
const host = new URL(upstream).host;
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

/** The client's public key, imported once (the floor's one verification per request uses it). */
const floorKey = floorAt === -1 ? null : createPublicKey({ key: JSON.parse(process.argv[floorAt + 1]), format: 'jwk' });
if (floorKey !== null) HOP.add('authorization').add('dpop');

/** The request's DPoP proof verified against floorKey: one ES256 verification, nothing else. */
function proofVerifies(raw) {
  let proof = null;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 4 && raw[i].toLowerCase() === 'dpop') proof = raw[i + 1];
  }
  if (proof === null) return false;
  const dot = proof.lastIndexOf('.');
  if (dot === -1) return false;
  return verify('sha256', Buffer.from(proof.slice(0, dot)), { key: floorKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(proof.slice(dot + 1), 'base64url'));
}

function headersOf(req) {
  const raw = req.rawHeaders;
  const out = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  }
  out.push('host', host);
  return out;
}

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  if (floorKey !== null && !proofVerifies(req.rawHeaders)) {
    res.writeHead(401).end();
    return;
  }
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  let abort = null;
  let done = false;
  // A client that goes away aborts the upstream request (else a half-sent body holds the connection).
  res.once('close', () => {
    if (!done && abort !== null) abort(new Error('client went away'));
  });
  pool.dispatch(
    { method: req.method, path: req.url, headers: headersOf(req), body: hasBody ? req : null },
    {
      onConnect(a) {
        abort = a;
      },
      onHeaders(status, rawHeaders, resume) {
        const h = [];
        for (let i = 0; i < rawHeaders.length; i += 2) {
          const name = rawHeaders[i].toString('latin1');
          if (!HOP.has(name.toLowerCase())) h.push(name, rawHeaders[i + 1].toString('latin1'));
        }
        res.writeHead(status, h);
        res.on('drain', resume);
        return true;
      },
      onData(chunk) {
        return res.write(chunk);
      },
      onComplete() {
        done = true;
        res.end();
      },
      onError() {
        done = true;
        if (!res.headersSent) res.writeHead(502);
        res.end();
      },
    },
  );
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  serveStats();
  process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` });
});
