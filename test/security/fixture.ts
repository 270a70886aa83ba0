/**
 * The attack suite's target: the dev authority, an echo upstream and a gateway protecting it,
 * with one agent holding a valid DPoP-bound token for an active Mission.
 */
import { createPrivateKey, sign } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw, type RawResponse } from '../helpers/http.js';

export const API = 'https://api.example.com';
export const ENTRIES = [
  { type: 'mission_resource_access', resource: API, actions: ['invoices.read', 'reports.*'] },
  { type: 'mission_resource_access', resource: API, actions: ['payments.create'], constraints: { max_amount: { amount: '100.00', currency: 'USD' } } },
];

export interface Target {
  dev: DevAuthority;
  echo: Awaited<ReturnType<typeof startEcho>>;
  gw: TestGateway;
  agent: Agent;
  missionId: string;
  token: string;
  /** A request with the given Authorization and DPoP values (either may be omitted). */
  send(opts: { path?: string; method?: string; authorization?: string; dpop?: string | string[]; headers?: Record<string, string | string[]>; body?: string }): Promise<RawResponse>;
  /** Signs any header and payload bytes with the authority's key, bypassing every library check. */
  forge(header: Record<string, unknown>, payload: unknown): string;
  /** A well-formed request by the agent, with `mutate` applied to the proof claims. */
  good(path?: string, method?: string, proofClaims?: Record<string, unknown>): Promise<RawResponse>;
  close(): Promise<void>;
}

export async function startTarget(extraConfig = '', upstream?: Parameters<typeof startEcho>[0]): Promise<Target> {
  const folder = mkdtempSync(join(tmpdir(), 'mgw-sec-'));
  const keysDir = join(folder, 'authority-keys');
  const dev = await startDevAuthority({ port: 0, quiet: true, keysDir });
  const echo = await startEcho(upstream);
  const keyFile = await gatewayClientKey(dev, folder);
  const gw = await startGateway(
    `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${echo.url} }
issuers: [{ issuer: ${dev.url}, algorithms: [ES256] }]
mission:
  client: { client_id: gw-api, private_key_file: ${keyFile} }
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
  - match: { method: GET, path: /reports/** }
    action: reports.view
  - match: { method: POST, path: /payments }
    action: payments.create
    params: { amount: { body: /amount }, currency: { body: /currency } }
  - match: { path: /public/** }
    auth: none
  - match: { path: /admin/** }
    action: admin.all
${extraConfig}`,
    { folder },
  );
  dev.addReceiver({ endpoint: `${gw.url}/.well-known/ssf/push`, audience: API });
  const agent = await newAgent();
  const m = (await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'reconcile', authorization_details: ENTRIES })) as { id: string };
  const token = await agent.token(dev, m.id, API);
  const send: Target['send'] = (o) =>
    raw(gw.url, {
      method: o.method ?? 'GET',
      path: o.path ?? '/invoices/1',
      headers: {
        ...(o.authorization === undefined ? {} : { authorization: o.authorization }),
        ...(o.dpop === undefined ? {} : { dpop: o.dpop }),
        ...o.headers,
      },
      ...(o.body === undefined ? {} : { body: o.body }),
    });
  return {
    dev,
    echo,
    gw,
    agent,
    missionId: m.id,
    token,
    send,
    forge(header, payload) {
      const file = readdirSync(keysDir).find((n) => n.endsWith('.jwk') || n.endsWith('.json'))!;
      const jwk = JSON.parse(readFileSync(join(keysDir, file), 'utf8')) as Record<string, unknown>;
      const input = `${b64u({ kid: jwk['kid'], ...header })}.${typeof payload === 'string' ? Buffer.from(payload).toString('base64url') : b64u(payload)}`;
      const sig = sign('sha256', Buffer.from(input), { key: createPrivateKey({ key: jwk as never, format: 'jwk' }), dsaEncoding: 'ieee-p1363' });
      return `${input}.${sig.toString('base64url')}`;
    },
    good: async (path = '/invoices/1', method = 'GET', claims = {}) =>
      send({ path, method, authorization: `DPoP ${token}`, dpop: await agent.proof(method, `${API}${path.split('?')[0]}`, token, claims) }),
    async close() {
      await gw.close();
      await echo.close();
      await dev.close();
    },
  };
}

export function b64u(v: unknown): string {
  return Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
}
