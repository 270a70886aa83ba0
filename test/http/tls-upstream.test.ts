/**
 * An https upstream behind the compiled CLI, trusted the way an operator trusts a private CA
 * (`NODE_EXTRA_CA_CERTS`), for plain requests and WebSocket upgrades. What the upstream sees of the
 * TLS handshake: the server name (SNI) it is asked for, with and without `upstream.preserve_host`.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { type CliGateway, eventually, startCli } from '../helpers/gateway.js';
import { rawSocket } from '../helpers/http.js';

const TLS = resolve(__dirname, '../fixtures/tls');
const CERT = join(TLS, 'upstream.crt');

/** What the upstream saw: the Host header and the TLS server name (`false` when none was sent). */
type Seen = { host: string | undefined; sni: string | false | null };

let server: Server;
let port: number;
const upgrades: Seen[] = [];

beforeAll(async () => {
  server = createServer({ key: readFileSync(join(TLS, 'upstream.key')), cert: readFileSync(CERT) }, (req, res) => {
    const seen: Seen = { host: req.headers.host, sni: (req.socket as TLSSocket).servername };
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(seen));
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (socket, req) => {
    upgrades.push({ host: req.headers.host, sni: (req.socket as TLSSocket).servername });
    socket.close();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
});

async function gateway(upstream: string, preserveHost: boolean): Promise<CliGateway> {
  const folder = mkdtempSync(join(tmpdir(), 'mgw-tls-'));
  const file = join(folder, 'gateway.yaml');
  writeFileSync(
    file,
    `public_base_url: http://api.example.com\nresource: http://api.example.com\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\n` +
      `evidence: { sink: ${JSON.stringify(join(folder, 'evidence.jsonl'))} }\n` +
      `upstream: { url: ${upstream}, preserve_host: ${preserveHost} }\nroutes:\n  - match: { path: /** }\n    auth: none\n`,
  );
  return startCli(file, { NODE_EXTRA_CA_CERTS: CERT });
}

const GET = 'GET /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n';
const UPGRADE = 'GET /ws HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

async function through(gw: CliGateway): Promise<{ request: Seen; upgrade: Seen }> {
  const answer = await rawSocket(gw.url, GET);
  expect(answer).toMatch(/^HTTP\/1\.1 200/);
  const before = upgrades.length;
  expect(await rawSocket(gw.url, UPGRADE)).toMatch(/^HTTP\/1\.1 101/);
  await eventually(() => upgrades.length > before);
  return { request: JSON.parse(answer.split('\r\n\r\n')[1]!) as Seen, upgrade: upgrades[upgrades.length - 1]! };
}

describe('https upstream (NODE_EXTRA_CA_CERTS)', () => {
  it('named by DNS: asked for its own name, with the public Host under preserve_host and its own otherwise', async () => {
    for (const preserve of [true, false]) {
      const gw = await gateway(`https://localhost:${port}`, preserve);
      try {
        const host = preserve ? 'api.example.com' : `localhost:${port}`;
        expect(await through(gw)).toEqual({ request: { host, sni: 'localhost' }, upgrade: { host, sni: 'localhost' } });
      } finally {
        gw.proc.kill('SIGTERM');
      }
    }
  });

  it('named by IP address: no server name at all (RFC 6066 section 3), the certificate checked against the address, no warning', async () => {
    for (const preserve of [true, false]) {
      const gw = await gateway(`https://127.0.0.1:${port}`, preserve);
      try {
        const host = preserve ? 'api.example.com' : `127.0.0.1:${port}`;
        expect(await through(gw)).toEqual({ request: { host, sni: false }, upgrade: { host, sni: false } });
        // Node warns (DEP0123) when asked to send an address as the server name.
        expect(gw.logs()).not.toMatch(/DEP0123|ServerName to an IP address/);
      } finally {
        gw.proc.kill('SIGTERM');
      }
    }
  });

  it('an upstream certificate the gateway does not trust is 502, never a plain-text fallback', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'mgw-tls-'));
    const file = join(folder, 'gateway.yaml');
    writeFileSync(
      file,
      `public_base_url: http://api.example.com\nresource: http://api.example.com\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\n` +
        `evidence: { sink: ${JSON.stringify(join(folder, 'evidence.jsonl'))} }\nupstream: { url: https://localhost:${port} }\nroutes:\n  - match: { path: /** }\n    auth: none\n`,
    );
    const gw = await startCli(file);
    try {
      expect(await rawSocket(gw.url, GET)).toMatch(/^HTTP\/1\.1 502[^]*bad_gateway/);
    } finally {
      gw.proc.kill('SIGTERM');
    }
  });
});
