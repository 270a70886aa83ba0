/**
 * Discovered issuer metadata is a living document (src/auth/keys.ts `metadata`): a copy older than
 * the refresh period is served while a new one is fetched in the background; while discovery
 * fails the last copy stands, and discovery is tried no more often than the key cooldown.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { IssuerKeys } from '../../src/auth/keys.js';
import { eventually } from '../helpers/gateway.js';
import { logger, newMetrics } from './helpers.js';

let server: Server | null = null;
let keys: IssuerKeys | null = null;
afterEach(async () => {
  keys?.close();
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  server = null;
});

/** An issuer whose metadata names `status` as its Mission Status endpoint, or answers 500 while `down`. */
async function issuer(): Promise<{ url: string; state: { status: string; down: boolean; fetches: number } }> {
  const state = { status: 'https://as.example/status/1', down: false, fetches: 0 };
  let url = '';
  server = createServer((req, res) => {
    if (!req.url!.startsWith('/.well-known/oauth-authorization-server')) return void res.writeHead(404).end();
    state.fetches++;
    if (state.down) return void res.writeHead(500).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: url, jwks_uri: `${url}/jwks`, mission_status_endpoint: state.status }));
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, state };
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100));

describe('discovered metadata', () => {
  it('is served from its copy, read again in the background once older than the refresh period, and followed', async () => {
    const { url, state } = await issuer();
    let now = 1_000_000;
    keys = new IssuerKeys({ issuers: [], extraIssuers: [{ issuer: url, algorithms: ['ES256'] }], metrics: newMetrics(), logger, cooldownMs: 5000, refreshIntervalMs: 60_000, clock: () => now });
    expect((await keys.metadata(url))['mission_status_endpoint']).toBe('https://as.example/status/1');
    state.status = 'https://as.example/status/2';
    now += 59_000;
    expect((await keys.metadata(url))['mission_status_endpoint']).toBe('https://as.example/status/1');
    expect(state.fetches).toBe(1);
    now += 2000; // older than the refresh period: this call still answers from the copy, and fetches anew
    expect((await keys.metadata(url))['mission_status_endpoint']).toBe('https://as.example/status/1');
    // The background fetch reached the issuer, and its answer was taken (a loaded machine may need longer than one settle).
    await eventually(() => state.fetches === 2);
    await settle();
    expect(state.fetches).toBe(2);
    expect((await keys.metadata(url))['mission_status_endpoint']).toBe('https://as.example/status/2');
  });

  it('while discovery fails: the last copy stands, tried again no more often than the cooldown; `fresh` waits for an answer', async () => {
    const { url, state } = await issuer();
    let now = 1_000_000;
    keys = new IssuerKeys({ issuers: [], extraIssuers: [{ issuer: url, algorithms: ['ES256'] }], metrics: newMetrics(), logger, cooldownMs: 5000, refreshIntervalMs: 60_000, clock: () => now });
    await keys.metadata(url);
    state.down = true;
    now += 61_000;
    for (let i = 0; i < 5; i++) {
      expect((await keys.metadata(url))['mission_status_endpoint']).toBe('https://as.example/status/1');
      await settle();
    }
    // One attempt (its RFC 8414 fetch counted here), not five.
    const afterOneTry = state.fetches;
    expect(afterOneTry).toBe(2);
    now += 5000;
    await keys.metadata(url);
    await eventually(() => state.fetches === afterOneTry + 1);
    await settle();
    expect(state.fetches).toBe(afterOneTry + 1);
    // `fresh` asks at once; with discovery down it still gets the last copy.
    expect((await keys.metadata(url, true))['mission_status_endpoint']).toBe('https://as.example/status/1');
    state.down = false;
    state.status = 'https://as.example/status/3';
    expect((await keys.metadata(url, true))['mission_status_endpoint']).toBe('https://as.example/status/3');
  });
});
