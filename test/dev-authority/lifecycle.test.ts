import { afterEach, describe, expect, it } from 'vitest';
import type { DevAuthority } from '../../src/dev-authority/index.js';
import { API, ENTRIES, postJson, start } from './helpers.js';

let dev: DevAuthority | undefined;
afterEach(async () => {
  await dev?.close();
  dev = undefined;
});

const CREATE = { subject: 'user-1', client_id: 'agent-1', purpose: 'reconcile', authorization_details: ENTRIES };

async function create(d: DevAuthority, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const res = await postJson(`${d.url}/admin/missions`, { ...CREATE, ...extra });
  expect(res.status).toBe(201);
  return (await res.json()) as Record<string, unknown>;
}

const act = (d: DevAuthority, id: string, verb: string, body: unknown = {}): Promise<Response> => postJson(`${d.url}/admin/missions/${id}/${verb}`, body);

describe('Mission lifecycle via the admin API (mission-contracts.md §1 state machine)', () => {
  it('approval creates an active Mission at version 1 with msn_ id and authority_hash', async () => {
    dev = await start();
    const m = await create(dev);
    expect(m['id']).toMatch(/^msn_[A-Za-z0-9_-]{32}$/);
    expect(m).toMatchObject({ state: 'active', version: 1, issuer: dev.url, subject: 'user-1', client_id: 'agent-1', purpose: 'reconcile' });
    expect(m['authority_hash']).toMatch(/^sha-256:[A-Za-z0-9_-]{43}$/);
    const got = await fetch(`${dev.url}/admin/missions/${m['id'] as string}`);
    expect(await got.json()).toMatchObject({ id: m['id'], state: 'active' });
  });

  it('suspend -> resume -> suspend -> revoke, each with a strictly increasing version', async () => {
    dev = await start();
    const id = (await create(dev))['id'] as string;
    const steps: [string, string][] = [['suspend', 'suspended'], ['resume', 'active'], ['suspend', 'suspended'], ['revoke', 'revoked']];
    let version = 1;
    for (const [verb, state] of steps) {
      const res = await act(dev, id, verb);
      expect(res.status).toBe(200);
      const m = (await res.json()) as Record<string, unknown>;
      expect(m['state']).toBe(state);
      expect(m['version']).toBe(++version);
      expect(m['deliveries']).toEqual([]);
    }
  });

  it.each([
    ['complete', 'completed'],
    ['revoke', 'revoked'],
    ['expire', 'expired'],
    ['supersede', 'superseded'],
    ['cascade', 'cascaded'],
  ])('active -> %s -> %s is terminal: every later event is 409', async (verb, state) => {
    dev = await start();
    const id = (await create(dev))['id'] as string;
    const res = await act(dev, id, verb);
    expect(((await res.json()) as Record<string, unknown>)['state']).toBe(state);
    for (const later of ['suspend', 'resume', 'revoke', 'complete', 'expire', 'supersede', 'cascade']) {
      const again = await act(dev, id, later);
      expect(again.status).toBe(409);
      expect(await again.json()).toMatchObject({ error: 'conflict' });
    }
  });

  it('resume is legal only from suspended; suspend only from active; complete and revoke also from suspended', async () => {
    dev = await start();
    const id = (await create(dev))['id'] as string;
    expect((await act(dev, id, 'resume')).status).toBe(409);
    expect((await act(dev, id, 'suspend')).status).toBe(200);
    expect((await act(dev, id, 'suspend')).status).toBe(409);
    expect((await act(dev, id, 'supersede')).status).toBe(409);
    expect((await act(dev, id, 'complete')).status).toBe(200);
    const other = (await create(dev))['id'] as string;
    await act(dev, other, 'suspend');
    expect((await act(dev, other, 'revoke')).status).toBe(200);
  });

  it('unknown Missions are 404, malformed input 400, unknown admin paths 404', async () => {
    dev = await start();
    expect((await act(dev, 'msn_nope', 'revoke')).status).toBe(404);
    expect((await fetch(`${dev.url}/admin/missions/msn_nope`)).status).toBe(404);
    const bad = await postJson(`${dev.url}/admin/missions`, { ...CREATE, authorization_details: [{ type: 'other' }] });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'invalid_request' });
    expect((await postJson(`${dev.url}/admin/missions`, { ...CREATE, subject: '' })).status).toBe(400);
    expect((await postJson(`${dev.url}/admin/nothing`, {})).status).toBe(404);
  });

  it.each([
    ['a number max_amount', { max_amount: { amount: 500, currency: 'USD' } }],
    ['a negative max_amount', { max_amount: { amount: '-5', currency: 'USD' } }],
    ['a max_amount without currency', { max_amount: { amount: '5.00' } }],
    ['an empty tenant list', { tenant: [] }],
    ['a time_window that is not RFC 3339', { time_window: { not_after: 'tomorrow' } }],
  ])('refuses %s, which the gateway could not enforce (400, naming the constraint)', async (_what, constraints) => {
    dev = await start();
    const entries = [{ type: 'mission_resource_access', resource: API, actions: ['payments.create'], constraints }];
    const res = await postJson(`${dev.url}/admin/missions`, { ...CREATE, authorization_details: entries });
    expect(res.status).toBe(400);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body['error']).toBe('invalid_request');
    expect(String(body['error_description'])).toContain(`authorization_details[0].constraints.${Object.keys(constraints)[0]!}`);
    // The same Mission through an authority change is refused as well.
    const id = (await create(dev))['id'] as string;
    const change = await postJson(`${dev.url}/admin/missions/${id}/authority`, { authorization_details: entries });
    expect(change.status).toBe(400);
  });

  it('accepts a constraint the gateway does not know, and requires_action_approval true (the gateway refuses those per request)', async () => {
    dev = await start();
    const entries = [{ type: 'mission_resource_access', resource: API, actions: ['payments.create'], constraints: { geo_fence: 'EU', requires_action_approval: true } }];
    expect((await postJson(`${dev.url}/admin/missions`, { ...CREATE, authorization_details: entries })).status).toBe(201);
  });

  it('suspend_until with on_expiry resume returns to active when the time comes; with revoke it ends revoked', async () => {
    let now = Date.now();
    dev = await start({ now: () => now, sweepIntervalMs: 60_000 });
    const a = (await create(dev))['id'] as string;
    const b = (await create(dev))['id'] as string;
    const until = Math.floor(now / 1000) + 30;
    const sa = (await (await act(dev, a, 'suspend', { suspend_until: until, on_expiry: 'resume' })).json()) as Record<string, unknown>;
    expect(sa).toMatchObject({ state: 'suspended', on_expiry: 'resume', suspend_until: new Date(until * 1000).toISOString().replace('.000Z', 'Z') });
    await act(dev, b, 'suspend', { suspend_until: new Date(until * 1000).toISOString(), on_expiry: 'revoke' });
    now += 31_000;
    expect(dev.missions.get(a)).toMatchObject({ state: 'active', version: 3 });
    expect(dev.missions.get(a)!.suspend_until).toBeUndefined();
    expect(dev.missions.get(b)).toMatchObject({ state: 'revoked', version: 3 });
    expect((await act(dev, a, 'suspend', { on_expiry: 'revoke' })).status).toBe(400);
    expect((await act(dev, a, 'suspend', { suspend_until: Math.floor(now / 1000) - 5 })).status).toBe(400);
  });

  it('expires_at reached -> expired (lazily on read)', async () => {
    let now = Date.now();
    dev = await start({ now: () => now, sweepIntervalMs: 60_000 });
    const id = (await create(dev, { expires_at: Math.floor(now / 1000) + 10 }))['id'] as string;
    expect(dev.missions.get(id)!.state).toBe('active');
    now += 11_000;
    expect(dev.missions.get(id)).toMatchObject({ state: 'expired', version: 2 });
    expect((await postJson(`${dev.url}/admin/missions`, { ...CREATE, expires_at: '2001-01-01T00:00:00Z' })).status).toBe(400);
  });

  it('authority may only narrow: a narrower set is committed with a new hash and version, a wider one is refused', async () => {
    dev = await start();
    const m = await create(dev);
    const id = m['id'] as string;
    const narrower = [ENTRIES[0]];
    const ok = await postJson(`${dev.url}/admin/missions/${id}/authority`, { authorization_details: narrower });
    expect(ok.status).toBe(200);
    const after = (await ok.json()) as Record<string, unknown>;
    expect(after).toMatchObject({ state: 'active', version: 2, authorization_details: narrower });
    expect(after['authority_hash']).not.toBe(m['authority_hash']);
    const wider = [{ type: 'mission_resource_access', resource: API, actions: ['invoices.read', 'invoices.delete'] }];
    expect((await postJson(`${dev.url}/admin/missions/${id}/authority`, { authorization_details: wider })).status).toBe(400);
    const dropped = [{ type: 'mission_resource_access', resource: API, actions: ['payments.create'] }];
    expect((await postJson(`${dev.url}/admin/missions/${id}/authority`, { authorization_details: dropped })).status).toBe(400);
  });

  it('an admin token, when configured, guards /admin', async () => {
    dev = await start({ adminToken: 'let-me-in' });
    expect((await postJson(`${dev.url}/admin/missions`, CREATE)).status).toBe(401);
    expect((await postJson(`${dev.url}/admin/missions`, CREATE, { authorization: 'Bearer wrong-token' })).status).toBe(401);
    expect((await postJson(`${dev.url}/admin/missions`, CREATE, { authorization: 'Bearer let-me-in' })).status).toBe(201);
  });

  it('the in-process API rejects illegal transitions as well', async () => {
    dev = await start();
    const m = await dev.missions.create(CREATE);
    await expect(dev.missions.resume(m.id)).rejects.toMatchObject({ code: 'conflict' });
    await expect(dev.missions.revoke('msn_none')).rejects.toMatchObject({ code: 'not_found' });
  });
});
