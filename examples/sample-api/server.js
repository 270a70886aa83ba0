#!/usr/bin/env node
/**
 * A small, unmodified HTTP API for the gateway to protect. It knows nothing about tokens or
 * Missions; it only shows what the gateway told it (the X-Mission-* identity headers). Plain ESM:
 *
 *   node examples/sample-api/server.js --port 3000 [--host 127.0.0.1]
 *
 *   GET  /public/status     {"status":"ok"}
 *   GET  /invoices/feed     a server-sent event stream of invoice updates, until the client leaves
 *   GET  /invoices/:id      the invoice (404 for an unknown one)
 *   POST /payments          echoes the JSON body back with a payment id (201)
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

const INVOICES = new Map([
  ['inv_1001', { invoice_id: 'inv_1001', vendor: 'Acme Paper', amount: '420.00', currency: 'USD', status: 'open' }],
  ['inv_1002', { invoice_id: 'inv_1002', vendor: 'Globex Cloud', amount: '12500.00', currency: 'USD', status: 'open' }],
]);
const MAX_BODY = 64 * 1024;

function send(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** What the gateway says about the caller (absent when the API is called directly). */
function caller(req) {
  const h = req.headers;
  const out = {};
  for (const k of ['mission-decision', 'x-mission-id', 'x-mission-subject', 'x-mission-client-id', 'x-mission-action']) {
    if (typeof h[k] === 'string') out[k] = h[k];
  }
  // Never echo a credential, only whether one arrived (behind the gateway it never should).
  if (h.authorization !== undefined || h.dpop !== undefined) out.credentials = 'received';
  return out;
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new Error('not JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** Invoice updates as server-sent events, one every 200 ms, for as long as the client listens. */
function feed(res) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
  const ids = [...INVOICES.keys()];
  let n = 0;
  const tick = setInterval(() => {
    const invoice = INVOICES.get(ids[n % ids.length]);
    res.write(`id: ${n}\nevent: invoice\ndata: ${JSON.stringify({ invoice_id: invoice.invoice_id, status: invoice.status })}\n\n`);
    n++;
  }, 200);
  res.on('close', () => clearInterval(tick));
}

async function handle(req, res, log) {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  log({ method: req.method, path, ...caller(req) });
  if (req.method === 'GET' && path === '/public/status') return send(res, 200, { status: 'ok', service: 'sample-api' });
  if (req.method === 'GET' && path === '/invoices/feed') return feed(res);
  const inv = /^\/invoices\/([^/]+)$/.exec(path);
  if (inv !== null && req.method === 'GET') {
    const found = INVOICES.get(decodeURIComponent(inv[1]));
    return found === undefined ? send(res, 404, { error: 'not_found' }) : send(res, 200, { ...found, caller: caller(req) });
  }
  if (inv !== null && req.method === 'DELETE') return send(res, 200, { deleted: decodeURIComponent(inv[1]) });
  if (req.method === 'POST' && path === '/payments') {
    let body;
    try {
      body = await readJson(req);
    } catch {
      return send(res, 400, { error: 'invalid_request' });
    }
    return send(res, 201, { payment_id: `pay_${randomUUID().slice(0, 8)}`, status: 'accepted', received: body, caller: caller(req) });
  }
  return send(res, 404, { error: 'not_found' });
}

/** Starts the API; resolves with its URL and a close function. */
export async function startSampleApi({ port = 0, host = '127.0.0.1', log = () => {} } = {}) {
  const server = createServer((req, res) => {
    handle(req, res, log).catch(() => {
      if (!res.headersSent) send(res, 500, { error: 'internal' });
      else res.destroy();
    });
  });
  await new Promise((resolve) => server.listen(port, host, resolve));
  const a = server.address();
  return {
    url: `http://${host}:${a.port}`,
    port: a.port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function arg(name) {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const s = await startSampleApi({
    port: Number(arg('--port') ?? 3000),
    host: arg('--host') ?? '127.0.0.1',
    log: (entry) => process.stderr.write(`${JSON.stringify({ at: new Date().toISOString(), ...entry })}\n`),
  });
  process.stdout.write(`sample API listening on ${s.url}\n`);
  const stop = () => void s.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
