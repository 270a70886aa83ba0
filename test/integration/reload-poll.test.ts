/**
 * r17e 1: a reload (SIGHUP) retires the running config's RFC 8936 poller at once. Before, the
 * retired poller went on polling until its runtime was closed 30 s later, took lifecycle events
 * for its own cache and acknowledged them: a revocation it took never reached the cache requests
 * read. Now what it has not acknowledged is delivered again, to the running config's poller.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';

const API = 'https://api.example.com';
const ENTRIES = [{ type: 'mission_resource_access', resource: API, actions: ['api.use'] }];

let dev: DevAuthority;
let upstream: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;
let agent: Agent;
let yaml: (intervalS: number) => string;

beforeAll(async () => {
  dev = await startDevAuthority({ port: 0, quiet: true });
  upstream = await startEcho();
  const folder = mkdtempSync(join(tmpdir(), 'mgw-reload-poll-'));
  const keyFile = await gatewayClientKey(dev, folder);
  const endpoint = dev.addPollAudience(API);
  yaml = (intervalS) => `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${upstream.url} }
issuers: [{ issuer: ${dev.url} }]
mission:
  max_stale_s: 300
  client: { client_id: gw-api, private_key_file: ${keyFile} }
  events:
    poll: { endpoint: "${endpoint}", interval_s: ${intervalS} }
routes:
  - match: { path: /** }
    action: api.use
listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
evidence: { sink: ${JSON.stringify(join(folder, 'evidence.jsonl'))} }
log: { level: silent }
`;
  gw = await startGateway(yaml(0.2), { folder });
  agent = await newAgent();
});

afterAll(async () => {
  await gw?.close();
  await upstream?.close();
  await dev?.close();
});

async function call(token: string): Promise<number> {
  const res = await fetch(`${gw.url}/pay`, { headers: { host: 'api.example.com', authorization: `DPoP ${token}`, dpop: await agent.proof('GET', `${API}/pay`, token) } });
  await res.arrayBuffer();
  return res.status;
}

/** SETs the gateway verified and applied (any runtime), from /metrics. */
async function applied(): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  let n = 0;
  for (const line of text.split('\n')) {
    const m = /^mission_gateway_events_total\{result="(accepted|gap|stale|uncached)"\} (\d+)/.exec(line);
    if (m !== null) n += Number(m[2]);
  }
  return n;
}

describe('a reload retires the old poller at once', () => {
  it('a revocation polled after a reload reaches the running config, never the retired one', async () => {
    const m = (await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'pay', authorization_details: ENTRIES })) as unknown as { id: string };
    const token = await agent.token(dev, m.id, API);
    expect(await call(token)).toBe(200);

    // The new config polls only at its start: from then on, only the retired poller (every 0.2 s)
    // could take an event.
    writeFileSync(gw.configFile, yaml(3600));
    expect(await gw.gateway.reload()).toBe(true);
    await new Promise((r) => setTimeout(r, 1000)); // the new poller's first poll is done (once, at its start)
    const before = await applied();
    await dev.missions.revoke(m.id);
    await new Promise((r) => setTimeout(r, 1000)); // five of the retired poller's intervals
    expect(await applied()).toBe(before);

    // Another reload: its poller polls at once and gets the revocation, still unacknowledged.
    writeFileSync(gw.configFile, yaml(0.2));
    expect(await gw.gateway.reload()).toBe(true);
    await eventually(async () => (await applied()) > before, 3000);
    expect(await call(token)).toBe(403);
  });
});
