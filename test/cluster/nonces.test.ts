/**
 * DPoP server nonces across replicas (RFC 9449 section 8): a nonce one replica issued is accepted
 * by another only when both sign with the same `dpop.nonce_secret`. Without it, each process signs
 * with a random secret of its own; a replica sharing a Redis replay store (several replicas) then
 * warns at start.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';
import { API, startTarget, type Target } from '../security/fixture.js';
import { RedisServer } from './redis-server.js';

const SECRET = 'a-shared-nonce-secret-of-40-characters-xx';

describe('DPoP nonces across replicas', () => {
  let redis: RedisServer;
  let a: Target;
  const others: TestGateway[] = [];

  beforeAll(async () => {
    redis = await RedisServer.start();
    a = await startTarget(`dpop: { nonce: true, nonce_secret: "${SECRET}" }\nreplay_store: { type: redis, url: "${redis.url}" }`);
  });
  afterAll(async () => {
    for (const g of others) await g.close();
    await a?.close();
    await redis?.stop();
  });

  /** Replica A's config, with `edit` applied, as another replica (its own evidence file and logger). */
  async function replica(edit: (text: string) => string): Promise<{ gw: TestGateway; warnings: string[] }> {
    const warnings: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) {
          if (l === '') continue;
          const line = JSON.parse(l) as { level: number; msg: string };
          if (line.level === 40) warnings.push(line.msg);
        }
        done();
      },
    });
    const text = edit(readFileSync(a.gw.configFile, 'utf8').replace(/^(evidence|log):.*$/gm, ''));
    const gw = await startGateway(text, { logger: pino({ level: 'info' }, sink) });
    others.push(gw);
    return { gw, warnings };
  }

  const withNonce = async (url: string, nonce: string) =>
    raw(url, { path: '/invoices/1', headers: { authorization: `DPoP ${a.token}`, dpop: await a.agent.proof('GET', `${API}/invoices/1`, a.token, { nonce }) } });

  it('with the same nonce_secret, a nonce from replica A is accepted at replica B', async () => {
    const first = await a.good();
    expect(first.status).toBe(401);
    const nonce = String(first.headers['dpop-nonce']);
    const b = await replica((t) => t);
    expect(b.warnings).toEqual([]);
    expect((await withNonce(b.gw.url, nonce)).status).toBe(200);
    expect((await withNonce(a.gw.url, nonce)).status).toBe(200);
  });

  it('without a shared secret, replica B refuses it (use_dpop_nonce) and says why at start', async () => {
    const nonce = String((await a.good()).headers['dpop-nonce']);
    const b = await replica((t) => t.replace(/, nonce_secret: "[^"]*"/, ''));
    const r = await withNonce(b.gw.url, nonce);
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'use_dpop_nonce', denial_reason: 'dpop_nonce_required' });
    expect(b.warnings.some((w) => w.startsWith('dpop.nonce without dpop.nonce_secret'))).toBe(true);
  });
});
