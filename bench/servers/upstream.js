/**
 * The benchmark upstream: GET answers a ~200 B JSON document, POST reads the body and answers the
 * same small document; POST on /mcp answers a JSON-RPC result for the request's id.
 */
import { createServer } from 'node:http';
import { serveStats } from '../lib/proc.js';

const doc = JSON.stringify({
  id: 'inv_0001',
  status: 'paid',
  amount: '120.00',
  currency: 'USD',
  customer: 'cus_8f2k1m',
  issued_at: '2026-01-01T00:00:00Z',
  lines: [{ sku: 'sku_1', qty: 1, price: '100.00' }, { sku: 'sku_2', qty: 2, price: '10.00' }],
  note: 'benchmark payload xxxx',
});
const docHeaders = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(doc) };

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  if (req.method === 'GET' || req.method === 'HEAD') {
    res.writeHead(200, docHeaders);
    res.end(doc);
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.url.startsWith('/mcp')) {
      let id = null;
      try {
        id = JSON.parse(Buffer.concat(chunks).toString('utf8')).id ?? null;
      } catch {
        // not JSON: answer with id null
      }
      const body = JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'ok' }], isError: false } });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    res.writeHead(200, docHeaders);
    res.end(doc);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  serveStats();
  process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` });
});
