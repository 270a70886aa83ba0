/**
 * End to end on real sockets: the dev Mission Authority issues DPoP-bound tokens, the gateway
 * checks token, proof, Mission state and authority, and a revocation pushed as a SET denies the
 * very next request.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { verifyEvidenceFile } from '../../src/evidence/verify.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

const API = 'https://api.example.com';
const ENTRIES = [
  { type: 'mission_resource_access', resource: API, actions: ['invoices.read'] },
  {
    type: 'mission_resource_access',
    resource: API,
    actions: ['payments.create'],
    constraints: { max_amount: { amount: '500.00', currency: 'USD' }, recipient_domain: 'example.com' },
  },
];

describe('end to end: token + DPoP + Mission state + authority', () => {
  let dev: DevAuthority;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let gw: TestGateway;
  let agent: Agent;
  let missionId: string;
  let token: string;

  const call = async (method: string, path: string, body?: unknown, tok = token, headers: Record<string, string> = {}) =>
    raw(gw.url, {
      method,
      path,
      headers: {
        authorization: `DPoP ${tok}`,
        dpop: await agent.proof(method, `${API}${path.split('?')[0]}`, tok),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

  beforeAll(async () => {
    dev = await startDevAuthority({ port: 0, quiet: true });
    echo = await startEcho();
    const folder = mkdtempSync(join(tmpdir(), 'mgw-e2e-'));
    const keyFile = await gatewayClientKey(dev, folder);
    gw = await startGateway(
      `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${echo.url} }
issuers: [{ issuer: ${dev.url} }]
mission:
  client: { client_id: gw-api, private_key_file: ${keyFile} }
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
  - match: { method: POST, path: /payments }
    action: payments.create
    params:
      amount: { body: /amount }
      currency: { body: /currency }
      recipient: { body: /to }
  - match: { method: DELETE, path: /invoices/* }
    action: invoices.delete
`,
      { folder },
    );
    dev.addReceiver({ endpoint: `${gw.url}/.well-known/ssf/push`, audience: API });
    agent = await newAgent();
    const m = await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'reconcile', authorization_details: ENTRIES });
    missionId = (m as unknown as { id: string }).id;
    token = await agent.token(dev, missionId, API);
  });

  afterAll(async () => {
    await gw?.close();
    await echo?.close();
    await dev?.close();
  });

  it('permits an action inside the authority and forwards identity, never credentials', async () => {
    const r = await call('GET', '/invoices/42');
    expect(r.status).toBe(200);
    const h = r.json()['headers'] as Record<string, string>;
    expect(h['authorization']).toBeUndefined();
    expect(h['dpop']).toBeUndefined();
    expect(h['x-mission-id']).toBe(missionId);
    expect(h['x-mission-issuer']).toBe(dev.url);
    expect(h['x-mission-subject']).toBe('user_1');
    expect(h['x-mission-client-id']).toBe('agent-1');
    expect(h['x-mission-action']).toBe('invoices.read');
    expect(h['mission-decision']).toMatch(/^dec_/);
  });

  it('permits a payment within its constraints and forwards the body byte-identical', async () => {
    const body = { amount: '499.99', currency: 'usd', to: 'billing@example.com', memo: 'x'.repeat(900) };
    const r = await call('POST', '/payments', body);
    expect(r.status).toBe(200);
    expect(echo.requests.at(-1)!.body.toString()).toBe(JSON.stringify(body));
  });

  it("a Mission's first request, one whose body is read, records the state it fetched as fresh (r21c 3)", async () => {
    const m = await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'pay one', authorization_details: ENTRIES });
    const id = (m as unknown as { id: string }).id;
    const tok = await agent.token(dev, id, API);
    const r = await call('POST', '/payments', { amount: '1.00', currency: 'USD', to: 'billing@example.com' }, tok);
    expect(r.status).toBe(200);
    const record = gw.evidence().findLast((e) => (e['mission'] as { id?: string } | null)?.id === id);
    expect(record?.['mission']).toMatchObject({ id, state: 'active', source: 'fresh' });
    // The next one is served from the cache.
    await call('POST', '/payments', { amount: '1.00', currency: 'USD', to: 'billing@example.com' }, tok);
    expect(gw.evidence().findLast((e) => (e['mission'] as { id?: string } | null)?.id === id)?.['mission']).toMatchObject({ source: 'cached' });
  });

  it('denies a payment over max_amount: 403 parameter_violation with the authority challenge', async () => {
    const r = await call('POST', '/payments', { amount: '500.01', currency: 'USD', to: 'billing@example.com' });
    expect(r.status).toBe(403);
    expect(r.json()).toMatchObject({ error: 'insufficient_scope', denial_reason: 'parameter_violation' });
    expect(String(r.headers['www-authenticate'])).toContain('mission_denial="insufficient_authority"');
  });

  it('denies an action outside the Authority Set: 403 out_of_authority', async () => {
    const r = await call('DELETE', '/invoices/42');
    expect(r.status).toBe(403);
    expect(r.json()).toMatchObject({ error: 'insufficient_scope', denial_reason: 'out_of_authority' });
  });

  it('denies bad JSON on a params route: 400 parameter_unparseable', async () => {
    const r = await raw(gw.url, {
      method: 'POST',
      path: '/payments',
      headers: { authorization: `DPoP ${token}`, dpop: await agent.proof('POST', `${API}/payments`, token), 'content-type': 'application/json' },
      body: '{"amount": 1,',
    });
    expect(r.status).toBe(400);
    expect(r.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
  });

  it('RFC 9449 §11.1: a replayed proof is refused', async () => {
    const proof = await agent.proof('GET', `${API}/invoices/1`, token);
    const first = await raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${token}`, dpop: proof } });
    expect(first.status).toBe(200);
    const again = await raw(gw.url, { path: '/invoices/1', headers: { authorization: `DPoP ${token}`, dpop: proof } });
    expect(again.status).toBe(401);
    expect(again.json()).toMatchObject({ error: 'invalid_dpop_proof', denial_reason: 'dpop_invalid' });
  });

  it('a bound token sent as Bearer is refused (no downgrade)', async () => {
    const r = await raw(gw.url, { path: '/invoices/1', headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ error: 'invalid_token', denial_reason: 'token_invalid' });
    expect(String(r.headers['www-authenticate'])).toMatch(/^DPoP error="invalid_token"/);
  });

  it('suspension denies mission_suspended, resumption allows again, revocation denies the very next request', async () => {
    // A Mission of its own: the file's shared one stays active for the other tests, in any order.
    const own = ((await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'reconcile', authorization_details: ENTRIES })) as unknown as { id: string }).id;
    const tok = await agent.token(dev, own, API);
    expect((await call('GET', '/invoices/7', undefined, tok)).status).toBe(200);
    await dev.missions.suspend(own, {});
    const suspended = await call('GET', '/invoices/7', undefined, tok);
    expect(suspended.status).toBe(403);
    expect(suspended.json()).toMatchObject({ error: 'mission_suspended', denial_reason: 'mission_inactive', mission_status: 'suspended' });
    await dev.missions.resume(own);
    expect((await call('GET', '/invoices/7', undefined, tok)).status).toBe(200);
    await dev.missions.revoke(own);
    const revoked = await call('GET', '/invoices/7', undefined, tok);
    expect(revoked.status).toBe(403);
    expect(revoked.json()).toMatchObject({ error: 'mission_terminated', denial_reason: 'mission_inactive', mission_status: 'revoked' });
  });

  it('writes one evidence record per request, permit and deny, without secrets', () => {
    const records = gw.evidence();
    expect(records.length).toBeGreaterThan(8);
    const text = JSON.stringify(records);
    expect(text).not.toContain(token);
    const permit = records.find((r) => r['decision'] === 'permit' && r['action'] === 'payments.create')!;
    expect(permit['parameter_digest']).toMatch(/^sha-256:[A-Za-z0-9_-]{43}$/);
    expect(permit['mission']).toMatchObject({ id: missionId, issuer: dev.url, state: 'active' });
    expect(permit['jkt']).toBe(agent.jkt);
    const deny = records.find((r) => r['denial_reason'] === 'parameter_violation')!;
    expect(deny['decision']).toBe('deny');
  });

  it('SPEC §9: the evidence file is one hash chain (sequence from 1, prev_hash) that verify-evidence accepts, and reports a tampered line', async () => {
    const records = gw.evidence();
    records.forEach((r, i) => expect(r['sequence']).toBe(i + 1));
    expect(records[0]!['prev_hash']).toBeNull();
    expect(records[1]!['prev_hash']).toMatch(/^sha-256:[A-Za-z0-9_-]{43}$/);
    expect((await verifyEvidenceFile(gw.evidenceFile)).ok).toBe(true);
    const cli = resolve(__dirname, '../../dist/cli.js');
    const ok = spawnSync(process.execPath, [cli, 'verify-evidence', gw.evidenceFile], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    const lines = readFileSync(gw.evidenceFile, 'utf8').split('\n');
    lines[2] = lines[2]!.replace('"method":"', '"method":"X');
    const tampered = join(gw.folder, 'tampered.jsonl');
    writeFileSync(tampered, lines.join('\n'));
    const bad = spawnSync(process.execPath, [cli, 'verify-evidence', tampered], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stdout + bad.stderr).toMatch(/line (3|4)/);
  });
});
