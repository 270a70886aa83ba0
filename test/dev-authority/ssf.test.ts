import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from 'jose';
import { LIFECYCLE_EVENT, SSF_VERIFICATION_EVENT, type DevAuthority } from '../../src/dev-authority/index.js';
import { API, ENTRIES, newMission, postJson, start } from './helpers.js';

let dev: DevAuthority | undefined;
let receiver: Server | undefined;
afterEach(async () => {
  await dev?.close();
  dev = undefined;
  receiver?.closeAllConnections();
  await new Promise((r) => (receiver === undefined ? r(undefined) : receiver.close(r)));
  receiver = undefined;
});

interface Received {
  readonly contentType: string | undefined;
  readonly authorization: string | undefined;
  readonly set: string;
}

/** A real RFC 8935 receiver: records each SET, answers with `answer()`. */
async function startReceiver(answer: () => [number, string] = () => [202, '']): Promise<{ url: string; got: Received[] }> {
  const got: Received[] = [];
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      got.push({ contentType: req.headers['content-type'], authorization: req.headers.authorization, set: body });
      const [status, text] = answer();
      res.writeHead(status, { 'content-type': 'application/json' }).end(text);
    });
  });
  await new Promise<void>((r) => receiver!.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/.well-known/ssf/push`, got };
}

async function verifySet(d: DevAuthority, set: string, aud: string): Promise<JWTPayload> {
  const { payload, protectedHeader } = await jwtVerify(set, createRemoteJWKSet(new URL(`${d.url}/jwks`)), { typ: 'secevent+jwt', issuer: d.url, audience: aud, algorithms: ['ES256'] });
  expect(typeof protectedHeader.kid).toBe('string');
  return payload;
}

const event = (p: JWTPayload): Record<string, unknown> => (p['events'] as Record<string, Record<string, unknown>>)[LIFECYCLE_EVENT]!;

describe('SSF transmitter: RFC 8935 push of lifecycle-change SETs', () => {
  it('pushes a verifiable SET on approval and on every transition, and the admin call returns the delivery', async () => {
    dev = await start();
    const r = await startReceiver();
    const reg = await postJson(`${dev.url}/admin/receivers`, { endpoint: r.url, audience: API, authorization: 'Bearer push-secret' });
    expect(reg.status).toBe(201);

    const created = (await (await postJson(`${dev.url}/admin/missions`, { subject: 'u', client_id: 'c', purpose: 'p', authorization_details: ENTRIES })).json()) as Record<string, unknown>;
    const id = created['id'] as string;
    expect(created['deliveries']).toEqual([expect.objectContaining({ endpoint: r.url, audience: API, status: 202, ok: true })]);
    // Awaited delivery: the receiver has it before the admin call returned.
    expect(r.got).toHaveLength(1);
    expect(r.got[0]!.contentType).toBe('application/secevent+jwt');
    expect(r.got[0]!.authorization).toBe('Bearer push-secret');
    const first = await verifySet(dev, r.got[0]!.set, API);
    expect(first['sub_id']).toEqual({ format: 'opaque', id });
    expect(typeof first.jti).toBe('string');
    expect(event(first)).toMatchObject({ mission: { id, issuer: dev.url }, state: 'active', version: 1 });
    expect(event(first)).not.toHaveProperty('prior_state');
    expect(typeof event(first)['committed_at']).toBe('string');
    expect(typeof event(first)['expires_at']).toBe('string');

    const until = Math.floor(Date.now() / 1000) + 600;
    await postJson(`${dev.url}/admin/missions/${id}/suspend`, { suspend_until: until, on_expiry: 'revoke' });
    await postJson(`${dev.url}/admin/missions/${id}/resume`, {});
    const revoked = (await (await postJson(`${dev.url}/admin/missions/${id}/revoke`, {})).json()) as Record<string, unknown>;
    expect(revoked['deliveries']).toEqual([expect.objectContaining({ status: 202, ok: true })]);
    const events = await Promise.all(r.got.map(async (g) => event(await verifySet(dev!, g.set, API))));
    expect(events.map((e) => [e['prior_state'], e['state'], e['version']])).toEqual([
      [undefined, 'active', 1],
      ['active', 'suspended', 2],
      ['suspended', 'active', 3],
      ['active', 'revoked', 4],
    ]);
    expect(events[1]).toMatchObject({ suspend_until: new Date(until * 1000).toISOString().replace('.000Z', 'Z'), on_expiry: 'revoke' });
    expect(events[2]).not.toHaveProperty('suspend_until');
  });

  it('an authority change is pushed with authority_changed: true and the same state', async () => {
    dev = await start();
    const r = await startReceiver();
    const id = await newMission(dev);
    dev.addReceiver({ endpoint: r.url, audience: API });
    const res = await dev.missions.changeAuthority(id, [ENTRIES[0]]);
    expect(res.deliveries[0]).toMatchObject({ ok: true });
    const e = event(await verifySet(dev, r.got[0]!.set, API));
    expect(e).toMatchObject({ state: 'active', prior_state: 'active', version: 2, authority_changed: true, authority_hash: res.authority_hash });
  });

  it('reports receiver rejections (RFC 8935 §2.3 error JSON) and unreachable receivers in the delivery results', async () => {
    dev = await start({ pushTimeoutMs: 2000 });
    const r = await startReceiver(() => [400, JSON.stringify({ err: 'invalid_audience', description: 'wrong aud' })]);
    dev.addReceiver({ endpoint: r.url, audience: 'https://other.example.com' });
    dev.addReceiver({ endpoint: 'http://127.0.0.1:1/push', audience: API });
    const m = await dev.missions.create({ subject: 'u', client_id: 'c', purpose: 'p', authorization_details: ENTRIES });
    expect(m.deliveries).toEqual([
      expect.objectContaining({ audience: 'https://other.example.com', status: 400, ok: false, err: 'invalid_audience', description: 'wrong aud' }),
      expect.objectContaining({ audience: API, status: null, ok: false, err: 'unreachable' }),
    ]);
    expect(decodeJwt(r.got[0]!.set)['aud']).toBe('https://other.example.com');
  });

  it('SSF verification SETs are pushed as stream liveness, on demand and every heartbeatSeconds', async () => {
    dev = await start({ heartbeatSeconds: 1 });
    const r = await startReceiver();
    dev.addReceiver({ endpoint: r.url, audience: API });
    const now = await dev.sendHeartbeat();
    expect(now).toEqual([expect.objectContaining({ ok: true, status: 202 })]);
    const p = await verifySet(dev, r.got[0]!.set, API);
    expect(p['events']).toEqual({ [SSF_VERIFICATION_EVENT]: {} });
    expect(p['sub_id']).toMatchObject({ format: 'opaque' });
    await expect.poll(() => r.got.length, { timeout: 5000, interval: 100 }).toBeGreaterThanOrEqual(2);
  });

  it('deadline transitions (suspend_until reached) are pushed too', async () => {
    dev = await start({ sweepIntervalMs: 50 });
    const r = await startReceiver();
    dev.addReceiver({ endpoint: r.url, audience: API });
    const id = await newMission(dev);
    await dev.missions.suspend(id, { suspend_until: Math.floor(Date.now() / 1000) + 1, on_expiry: 'resume' });
    await expect.poll(() => r.got.length, { timeout: 5000, interval: 50 }).toBe(3);
    const e = event(await verifySet(dev, r.got[2]!.set, API));
    expect(e).toMatchObject({ prior_state: 'suspended', state: 'active', version: 3 });
  });
});

describe('SSF transmitter: RFC 8936 poll', () => {
  const poll = (d: DevAuthority, body: unknown, url = `${d.url}/ssf/poll?aud=${encodeURIComponent(API)}`, headers: Record<string, string> = {}): Promise<Response> =>
    postJson(url, body, headers);

  it('queues SETs per audience; acknowledged SETs are not returned again; maxEvents and moreAvailable', async () => {
    dev = await start();
    const endpoint = dev.addPollAudience(API);
    expect(endpoint).toBe(`${dev.url}/ssf/poll?aud=${encodeURIComponent(API)}`);
    const id = await newMission(dev);
    await dev.missions.suspend(id);
    await dev.missions.revoke(id);

    const one = (await (await poll(dev, { maxEvents: 2, returnImmediately: true })).json()) as { sets: Record<string, string>; moreAvailable: boolean };
    expect(Object.keys(one.sets)).toHaveLength(2);
    expect(one.moreAvailable).toBe(true);
    for (const [jti, set] of Object.entries(one.sets)) {
      const p = await verifySet(dev, set, API);
      expect(p.jti).toBe(jti);
    }
    const two = (await (await poll(dev, { ack: Object.keys(one.sets), returnImmediately: true })).json()) as { sets: Record<string, string>; moreAvailable: boolean };
    expect(Object.keys(two.sets)).toHaveLength(1);
    expect(two.moreAvailable).toBe(false);
    expect(event(decodeJwt(Object.values(two.sets)[0]!))).toMatchObject({ state: 'revoked', version: 3 });
    const three = (await (await poll(dev, { ack: Object.keys(two.sets), returnImmediately: true })).json()) as { sets: Record<string, string> };
    expect(three.sets).toEqual({});
  });

  it('a long poll (returnImmediately false) returns as soon as an event is committed', async () => {
    dev = await start({ longPollMs: 10_000 });
    dev.addPollAudience(API);
    const started = Date.now();
    const pending = poll(dev, { returnImmediately: false });
    await new Promise((r) => setTimeout(r, 100));
    await newMission(dev);
    const body = (await (await pending).json()) as { sets: Record<string, string> };
    expect(Object.keys(body.sets)).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a poll token, when configured, is required', async () => {
    dev = await start({ pollToken: 'poll-secret' });
    dev.addPollAudience(API);
    const denied = await poll(dev, { returnImmediately: true });
    expect(denied.status).toBe(401);
    const ok = await poll(dev, { returnImmediately: true }, undefined, { authorization: 'Bearer poll-secret' });
    expect(ok.status).toBe(200);
  });
});
