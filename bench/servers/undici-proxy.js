/**
 * BASELINE (b): the smallest honest reverse proxy: node:http server, undici Pool `dispatch`
 * streaming both ways, hop-by-hop request headers dropped. With `--crypto-floor` (f) it also does
 * exactly one synchronous ES256 verification per request of a pre-generated DPoP proof, with a
 * cached KeyObject: the cost no DPoP-validating proxy can go under.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomUUID, sign, verify } from 'node:crypto';
import { createServer } from 'node:http';
import { Pool } from 'undici';
import { serveStats } from '../lib/proc.js';

const upstream = process.argv[2];
const cryptoFloor = process.argv.includes('--crypto-floor');
const pool = new Pool(upstream, { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 });
const host = new URL(upstream).host;
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

let floor = null;
if (cryptoFloor) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
  const input = `${b64({ typ: 'dpop+jwt', alg: 'ES256', jwk })}.${b64({ jti: randomUUID(), htm: 'GET', htu: 'https://api.bench.example/x', iat: Math.floor(Date.now() / 1000), ath: createHash('sha256').update('t').digest('base64url') })}`;
  const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  floor = { data: Buffer.from(input), signature, key: createPublicKey({ key: jwk, format: 'jwk' }) };
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
  if (floor !== null && !verify('sha256', floor.data, { key: floor.key, dsaEncoding: 'ieee-p1363' }, floor.signature)) {
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
