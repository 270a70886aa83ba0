#!/usr/bin/env node
/**
 * An unmodified MCP server (Streamable HTTP transport, @modelcontextprotocol/sdk) for the gateway
 * to protect: it knows nothing about Missions. Plain ESM, runs without a build:
 *
 *   node examples/mcp-server/server.js --port 3001 [--host 127.0.0.1] [--json]
 *
 * `--json` answers POSTs with application/json instead of SSE. Tools:
 *   get_invoice   {invoice_id}                      read
 *   pay_invoice   {invoice_id, amount, currency}    consequential write with an amount
 *   send_email    {to, subject, body}               sends to a recipient
 *   export_report {steps?}                          long-running, streams progress notifications
 * Every call is logged to stderr (one JSON line) so a demo can show what reached the server.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const INVOICES = new Map([
  ['inv_1001', { invoice_id: 'inv_1001', vendor: 'Acme Paper', amount: '420.00', currency: 'USD', status: 'open' }],
  ['inv_1002', { invoice_id: 'inv_1002', vendor: 'Globex Cloud', amount: '12500.00', currency: 'USD', status: 'open' }],
]);

const json = (value) => ({ content: [{ type: 'text', text: JSON.stringify(value) }], structuredContent: value });

/** One McpServer per session (the SDK binds a server to one transport). */
export function buildServer(log = () => {}) {
  const server = new McpServer({ name: 'example-invoices', version: '1.0.0' });

  server.registerTool(
    'get_invoice',
    { description: 'Read one invoice', inputSchema: { invoice_id: z.string() } },
    async ({ invoice_id }) => {
      log({ tool: 'get_invoice', invoice_id });
      const inv = INVOICES.get(invoice_id);
      if (inv === undefined) return { isError: true, content: [{ type: 'text', text: `no invoice ${invoice_id}` }] };
      return json(inv);
    },
  );

  server.registerTool(
    'pay_invoice',
    {
      description: 'Pay an invoice',
      inputSchema: { invoice_id: z.string(), amount: z.union([z.string(), z.number()]), currency: z.string() },
    },
    async ({ invoice_id, amount, currency }) => {
      log({ tool: 'pay_invoice', invoice_id, amount, currency });
      return json({ payment_id: `pay_${randomUUID().slice(0, 8)}`, invoice_id, amount: String(amount), currency, status: 'paid' });
    },
  );

  server.registerTool(
    'send_email',
    { description: 'Send an e-mail', inputSchema: { to: z.string(), subject: z.string(), body: z.string() } },
    async ({ to, subject }) => {
      log({ tool: 'send_email', to, subject });
      return json({ message_id: `msg_${randomUUID().slice(0, 8)}`, to, status: 'sent' });
    },
  );

  server.registerTool(
    'export_report',
    { description: 'Export a report, reporting progress as it goes', inputSchema: { steps: z.number().int().min(1).max(50).optional(), delay_ms: z.number().int().min(0).max(2000).optional() } },
    async ({ steps = 3, delay_ms = 50 }, extra) => {
      log({ tool: 'export_report', steps });
      const token = extra._meta?.progressToken;
      for (let i = 1; i <= steps; i++) {
        await new Promise((r) => setTimeout(r, delay_ms));
        if (token !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: i, total: steps, message: `step ${i}` } });
        }
      }
      return json({ report: 'q3-invoices.csv', rows: steps * 100 });
    },
  );

  return server;
}

/**
 * Starts the HTTP server on `path` (default /mcp). Stateful: `initialize` creates a session
 * (Mcp-Session-Id); GET opens its SSE stream; DELETE ends it.
 */
export async function startExampleServer({ port = 0, host = '127.0.0.1', path = '/mcp', jsonResponse = false, log = () => {} } = {}) {
  const sessions = new Map();
  const http = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== path) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}');
      return;
    }
    try {
      const sid = req.headers['mcp-session-id'];
      let transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
      if (transport === undefined) {
        if (typeof sid === 'string') {
          res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found' }, id: null }));
          return;
        }
        if (req.method !== 'POST') {
          res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: no session' }, id: null }));
          return;
        }
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          enableJsonResponse: jsonResponse,
          onsessioninitialized: (id) => sessions.set(id, transport),
          onsessionclosed: (id) => sessions.delete(id),
        });
        transport.onclose = () => {
          if (transport.sessionId !== undefined) sessions.delete(transport.sessionId);
        };
        await buildServer(log).connect(transport);
      }
      await transport.handleRequest(req, res);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
      log({ error: String(err) });
    }
  });
  await new Promise((resolve) => http.listen(port, host, resolve));
  const address = http.address();
  return {
    url: `http://${host}:${address.port}${path}`,
    port: address.port,
    sessions,
    close: async () => {
      for (const t of sessions.values()) await t.close().catch(() => {});
      http.closeAllConnections();
      await new Promise((resolve) => http.close(() => resolve()));
    },
  };
}

function arg(name) {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const s = await startExampleServer({
    port: Number(arg('--port') ?? 3001),
    host: arg('--host') ?? '127.0.0.1',
    jsonResponse: process.argv.includes('--json'),
    log: (entry) => process.stderr.write(JSON.stringify({ at: new Date().toISOString(), ...entry }) + '\n'),
  });
  process.stdout.write(`example MCP server listening on ${s.url}\n`);
  const stop = () => void s.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
