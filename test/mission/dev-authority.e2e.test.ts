/**
 * End to end against the development Mission Authority (startDevAuthority), on real sockets: the
 * real IssuerKeys (RFC 8414 discovery, JWKS), Mission Status with private_key_jwt, SETs pushed to
 * the receiver and polled from the transmitter.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IssuerKeys } from '../../src/auth/keys.js';
import type { Config } from '../../src/config/schema.js';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { createMissionReferenceStage } from '../../src/mission/reference.js';
import { MissionStates } from '../../src/mission/state.js';
import type { RequestContext } from '../../src/pipeline/context.js';
import { context, denialOf, logger, makeConfig, newMetrics, RecordingBus, RESOURCE } from './helpers.js';

const PUSH = '/.well-known/ssf/push';
const AUTHORITY = [{ type: 'mission_resource_access', resource: RESOURCE, actions: ['invoices.read'] }];

let dev: DevAuthority;
let keys: IssuerKeys;
let states: MissionStates;
let receiver: Server;
let base: string;
let config: Config;

async function start(mission: (dev: DevAuthority) => Record<string, unknown> = () => ({}), devOptions: { pollToken?: string } = {}): Promise<void> {
  dev = await startDevAuthority({ quiet: true, heartbeatSeconds: 0, log: () => undefined, ...devOptions });
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const dir = mkdtempSync(join(tmpdir(), 'mgw-e2e-'));
  const file = join(dir, 'gw.jwk');
  writeFileSync(file, JSON.stringify(privateKey.export({ format: 'jwk' })));
  dev.registerClient('gw-api', publicKey.export({ format: 'jwk' }) as jose.JWK);

  config = makeConfig({ issuers: [{ issuer: dev.url, algorithms: ['ES256'] }] }, { client: { client_id: 'gw-api', private_key_file: file }, ...mission(dev) });
  const metrics = newMetrics();
  keys = new IssuerKeys({ issuers: config.issuers, metrics, logger, refreshIntervalMs: 0 });
  states = new MissionStates({ config, keys, metrics, logger, bus: new RecordingBus() });
  receiver = createServer((req, res) => (req.url === PUSH ? states.handlePush(req, res) : res.writeHead(404).end()));
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
}

afterEach(async () => {
  await states?.close();
  (keys as unknown as { close?: () => Promise<void> | void })?.close?.();
  receiver?.closeAllConnections();
  await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
  await dev?.close();
});

async function request(tokenJwt: string, headers: Array<[string, string]> = []): Promise<{ code: string | null; ctx: RequestContext }> {
  const claims = jose.decodeJwt(tokenJwt);
  const ctx = context({
    token: { raw: tokenJwt, issuer: claims.iss!, subject: claims.sub!, clientId: String(claims['client_id']), jti: claims.jti!, exp: claims.exp!, jkt: null, claims },
    headers,
  });
  const refStage = createMissionReferenceStage({ config });
  const stateStage = states.stage();
  const d = await denialOf(async () => {
    await refStage(ctx);
    await stateStage(ctx);
  });
  return { code: d?.code ?? null, ctx };
}

async function newMission(): Promise<{ id: string; token: string }> {
  const m = await dev.missions.create({ subject: 'user_1', client_id: 'agent_1', purpose: 'reconcile', authorization_details: AUTHORITY });
  return { id: m.id, token: await dev.issueAccessToken({ missionId: m.id, resource: RESOURCE }) };
}

describe('e2e with the dev Mission Authority: Status discovered from RFC 8414 metadata, SETs pushed', () => {
  beforeEach(() => start());

  it('active -> permitted with the Authority Set; revoke pushed -> next request denied; not regressed by Status', async () => {
    const { id, token } = await newMission();
    const first = await request(token);
    expect(first.code).toBeNull();
    expect(first.ctx.mission).toMatchObject({ id, issuer: dev.url, state: 'active', version: 1, source: 'fresh', subject: 'user_1', clientId: 'agent_1' });
    expect(first.ctx.mission?.authority).toEqual(AUTHORITY);

    dev.addReceiver({ endpoint: `${base}${PUSH}`, audience: RESOURCE });
    const revoked = await dev.missions.revoke(id);
    expect(revoked.deliveries.map((d) => d.status)).toEqual([202]);
    const after = await request(token);
    expect(after.code).toBe('mission_terminated');
    expect(after.ctx.mission).toMatchObject({ state: 'revoked', source: 'event' });
  });

  it('suspend / resume pushed: mission_suspended, then allowed again', async () => {
    const { id, token } = await newMission();
    await request(token);
    dev.addReceiver({ endpoint: `${base}${PUSH}`, audience: RESOURCE });
    await dev.missions.suspend(id, { suspend_until: new Date(Date.now() + 600_000).toISOString(), on_expiry: 'resume' } as never);
    const s = await request(token);
    expect(s.code).toBe('mission_suspended');
    await dev.missions.resume(id);
    expect((await request(token)).code).toBeNull();
  });

  it('AAuth claim form: Status by mission_s256', async () => {
    const m = await dev.missions.create({ subject: 'user_1', client_id: 'agent_1', purpose: 'p', authorization_details: AUTHORITY });
    const token = await dev.issueAccessToken({ missionId: m.id, resource: RESOURCE, claimForm: 'aauth' });
    const r = await request(token);
    expect(r.code).toBeNull();
    expect(r.ctx.missionRef?.form).toBe('aauth_claim');
    expect(r.ctx.mission?.id).toBe(m.id);
  });

  it('a Mission-Reference header naming another Mission than the token is a conflict', async () => {
    const { token } = await newMission();
    const other = await newMission();
    expect((await request(token, [['Mission-Reference', `id="${other.id}", issuer="${dev.url}"`]])).code).toBe('mission_reference_conflict');
  });
});

describe('e2e with the dev Mission Authority: RFC 8936 poll', () => {
  beforeEach(() => start((d) => ({ events: { poll: { endpoint: d.addPollAudience(RESOURCE), interval_s: 1 } } })));

  it('a revoke is learned by polling; the poll acknowledges it', async () => {
    const { id, token } = await newMission();
    expect(states.ready()).toBe(false);
    expect((await request(token)).code).toBeNull();
    await dev.missions.revoke(id);
    await states.pollOnce();
    expect(states.ready()).toBe(true);
    const r = await request(token);
    expect(r.code).toBe('mission_terminated');
    expect(r.ctx.mission).toMatchObject({ state: 'revoked', source: 'event' });
    await states.pollOnce();
  });
});

describe('e2e with the dev Mission Authority: RFC 8936 poll with a bearer token (mission.events.poll.token)', () => {
  it('a transmitter that requires a token refuses a poll without it (not ready) and serves one with it', async () => {
    await start((d) => ({ events: { poll: { endpoint: d.addPollAudience(RESOURCE), interval_s: 1 } } }), { pollToken: 'poll-secret-0123456789' });
    await expect(states.pollOnce()).rejects.toThrow();
    expect(states.ready()).toBe(false);
    await states.close();
    const endpoint = (config.mission.events.poll as { endpoint: string }).endpoint;
    config = makeConfig({ issuers: config.issuers }, { client: config.mission.client!, events: { poll: { endpoint, interval_s: 1, token: 'poll-secret-0123456789' } } });
    states = new MissionStates({ config, keys, metrics: newMetrics(), logger, bus: new RecordingBus() });
    await states.pollOnce();
    expect(states.ready()).toBe(true);
  });
});
