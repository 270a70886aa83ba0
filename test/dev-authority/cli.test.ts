import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodeJwt } from 'jose';
import { devAuthorityCli, type DevAuthority } from '../../src/dev-authority/index.js';
import { API, clientAssertion, clientKey, ENTRIES, postForm, runCli, start, type ClientKey } from './helpers.js';

let dev: DevAuthority;
beforeAll(async () => {
  dev = await start();
});
afterAll(() => dev.close());
afterEach(() => vi.restoreAllMocks());

const run = runCli;

describe('mission-gateway dev-authority CLI', () => {
  it('usage errors exit 2', async () => {
    expect((await run(['--no-such-flag'])).code).toBe(2);
    expect((await run(['mission'])).code).toBe(2);
    expect((await run(['mission', 'revoke', 'msn_x'])).code).toBe(2);
    const r = await run(['mission', 'create', '--url', dev.url, '--subject', 's']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/Usage:/);
  });

  it('mission create / suspend / resume / revoke call the admin API and print the Mission; an illegal transition exits 1', async () => {
    const created = await run(['mission', 'create', '--url', dev.url, '--subject', 'user-9', '--client-id', 'agent-9', '--purpose', 'p', '--authority', JSON.stringify(ENTRIES)]);
    expect(created.code).toBe(0);
    const m = JSON.parse(created.out) as { id: string; state: string };
    expect(m.state).toBe('active');
    expect(dev.missions.get(m.id)?.subject).toBe('user-9');
    const suspended = await run(['mission', 'suspend', m.id, '--url', dev.url, '--suspend-until', new Date(Date.now() + 60_000).toISOString(), '--on-expiry', 'revoke']);
    expect(suspended.code).toBe(0);
    expect(JSON.parse(suspended.out)).toMatchObject({ state: 'suspended', on_expiry: 'revoke' });
    expect((await run(['mission', 'resume', m.id, '--url', dev.url])).code).toBe(0);
    expect((await run(['mission', 'revoke', m.id, '--url', dev.url])).code).toBe(0);
    const again = await run(['mission', 'complete', m.id, '--url', dev.url]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/conflict/);
    expect(dev.missions.get(m.id)).toMatchObject({ state: 'revoked', version: 4 });
  });

  it('serve: registers --client keys, creates --seed Missions, prints its issuer, and stops on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'devauth-cli-'));
    const gw = await clientKey();
    writeFileSync(join(dir, 'gw.jwk'), JSON.stringify(gw.publicJwk));
    const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(join(dir, 'gw2.pem'), pem.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(dir, 'seed.json'), JSON.stringify([{ subject: 'seed-user', client_id: 'agent', purpose: 'p', authorization_details: ENTRIES }]));
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const running = devAuthorityCli(['--port', '0', '--client', `gw-api=${join(dir, 'gw.jwk')}`, '--client', `gw-pem=${join(dir, 'gw2.pem')}`, '--seed', join(dir, 'seed.json'), '--max-stale', '20']);
    await expect.poll(() => out.length, { timeout: 5000 }).toBeGreaterThan(0);
    vi.restoreAllMocks();
    const started = JSON.parse(out) as { issuer: string; missions: string[] };
    expect(started.missions).toHaveLength(1);
    const status = `${started.issuer}/mission/status`;
    const res = await postForm(status, {
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(gw, 'gw-api', status),
      mission_id: started.missions[0]!,
      audience: API,
      nonce: 'cli-nonce',
    });
    expect(res.status).toBe(200);
    expect(decodeJwt(await res.text())['mission']).toMatchObject({ id: started.missions[0], state: 'active', subject: { sub: 'seed-user' } });
    const pemKey = { privateKey: pem.privateKey } as unknown as ClientKey;
    const viaPem = await postForm(status, {
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(pemKey, 'gw-pem', status),
      mission_id: started.missions[0]!,
      audience: API,
      nonce: 'cli-nonce-2',
    });
    expect(viaPem.status).toBe(200);
    process.emit('SIGTERM');
    expect(await running).toBe(0);
    await expect(fetch(`${started.issuer}/jwks`)).rejects.toThrow();
  });
});
