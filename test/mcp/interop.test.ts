/**
 * Interop with clients nobody on the team wrote, through the whole gateway (real token, DPoP,
 * Mission reference and state stages) in front of the example server (stock SDK server):
 *
 * - the stock @modelcontextprotocol/sdk client with its own OAuth flow (ClientCredentialsProvider)
 *   against a real oidc-provider issuing RFC 9068 JWT access tokens for the MCP resource (resource
 *   indicators) with a `mission` claim naming a Mission at the development authority; Bearer,
 *   since the SDK has no DPoP (dpop.required: false);
 * - openid-client 6 as a DPoP client that handles use_dpop_nonce by itself (dpop.required: true,
 *   dpop.nonce: true), carrying the SDK client's requests.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import Provider from 'oidc-provider';
import { afterEach, describe, expect, it } from 'vitest';
import type { DevAuthority } from '../../src/dev-authority/index.js';
import { eventually, type TestGateway } from '../helpers/gateway.js';
import { connectWithDpop, devAuthority, example, freePort, gatewayClientKey, mcpGateway, type Example } from './gateway.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function authorityFor(resource: string): Record<string, unknown>[] {
  return [
    { type: 'mission_resource_access', resource, actions: ['get_invoice'] },
    { type: 'mission_resource_access', resource, actions: ['pay_invoice'], constraints: { max_amount: { amount: '1000.00', currency: 'USD' } } },
  ];
}

async function startOidcProvider(missionClaim: () => Record<string, unknown>): Promise<{ issuer: string; server: Server }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...(privateKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: 'op-key-1', alg: 'ES256', use: 'sig' };
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'agent_1',
        client_secret: 'agent-secret-for-tests-only',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    jwks: { keys: [jwk] },
    scopes: ['mcp'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined as unknown as string,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({ scope: 'mcp', audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
    extraTokenClaims: () => ({ mission: missionClaim() }),
  } as never);
  const server = createServer(provider.callback());
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  return { issuer, server };
}

interface Setup {
  dev: DevAuthority;
  upstream: Example;
  gw: TestGateway;
  mcpUrl: string;
  missionId: string;
}

async function setup(opts: { tokenIssuer?: (dev: DevAuthority) => string; dpop: string; json?: boolean }): Promise<Setup & { folder: string }> {
  const folder = mkdtempSync(join(tmpdir(), 'mgw-mcp-'));
  const dev = await devAuthority();
  cleanups.push(() => dev.close());
  const upstream = await example(opts.json ?? false);
  cleanups.push(() => upstream.close());
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const mcpUrl = `${base}/mcp`;
  const mission = await dev.missions.create({ subject: 'agent_1', client_id: 'agent_1', purpose: 'pay vendor invoices', authorization_details: authorityFor(mcpUrl) });
  const keyFile = gatewayClientKey(dev, folder);
  const issuer = opts.tokenIssuer?.(dev) ?? dev.url;
  const yaml = `
listen: { host: 127.0.0.1, port: ${port} }
public_base_url: ${base}
resource: ${base}
upstream: { url: ${new URL(upstream.url).origin} }
issuers:
  - issuer: ${issuer}
    algorithms: [ES256]
dpop: ${opts.dpop}
mission:
  required: true
  client: { client_id: gw-mcp, private_key_file: ${keyFile} }
  authorities:
    - issuer: ${dev.url}
  events: { push_path: /.well-known/ssf/push }
routes: []
mcp: { path: /mcp, resource: ${mcpUrl} }
`;
  const gw = await mcpGateway(yaml, folder);
  cleanups.push(() => gw.close());
  return { dev, upstream, gw, mcpUrl, missionId: mission.id, folder };
}

describe('interop: stock MCP SDK client, its own OAuth flow, a real oidc-provider (Bearer; dpop.required: false)', () => {
  it('401 -> protected-resource metadata -> AS metadata -> token -> tools/list (filtered) -> tools/call, all through the gateway', async () => {
    let missionClaim: Record<string, unknown> = {};
    const op = await startOidcProvider(() => missionClaim);
    cleanups.push(() => new Promise<void>((r) => op.server.close(() => r())));
    const s = await setup({ tokenIssuer: () => op.issuer, dpop: '{ required: false }' });
    missionClaim = { id: s.missionId, issuer: s.dev.url };

    // The first request has no token: the challenge the SDK reads starts with Bearer.
    const first = await fetch(s.mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(first.status).toBe(401);
    expect(first.headers.get('www-authenticate')).toMatch(/^Bearer resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);

    const provider = new ClientCredentialsProvider({ clientId: 'agent_1', clientSecret: 'agent-secret-for-tests-only', scope: 'mcp', expectedIssuer: op.issuer });
    const transport = new StreamableHTTPClientTransport(new URL(s.mcpUrl), { authProvider: provider });
    const client = new Client({ name: 'sdk-interop', version: '1.0.0' });
    await client.connect(transport);
    cleanups.push(() => client.close());
    expect(provider.tokens()?.access_token).toBeTruthy();

    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(['get_invoice', 'pay_invoice']);
    const ok = await client.callTool({ name: 'pay_invoice', arguments: { invoice_id: 'inv_1001', amount: '420.00', currency: 'USD' } });
    expect(ok.structuredContent).toMatchObject({ status: 'paid' });
    const over = await client.callTool({ name: 'pay_invoice', arguments: { invoice_id: 'inv_1002', amount: '12500.00', currency: 'USD' } });
    expect(over).toMatchObject({ isError: true, structuredContent: { ok: false, denial_reason: 'parameter_violation' } });
    expect(s.upstream.calls.filter((c) => c['tool'] === 'pay_invoice')).toHaveLength(1);

    const records = (await eventually(() => {
      const r = s.gw.evidence().filter((x) => x['tool'] === 'pay_invoice');
      return r.length === 2 ? r : null;
    }))!;
    expect(records.map((r) => [r['decision'], r['denial_reason'], r['client_id']])).toEqual([
      ['permit', null, 'agent_1'],
      ['deny', 'parameter_violation', 'agent_1'],
    ]);
    expect(records[0]!['mission']).toMatchObject({ id: s.missionId, issuer: s.dev.url, state: 'active' });
  });
});

describe('interop: openid-client 6 as a DPoP client handling use_dpop_nonce itself (dpop.required: true, dpop.nonce: true)', () => {
  async function dpopClient(s: Setup) {
    const c = await connectWithDpop(s.dev.url, s.mcpUrl, s.missionId);
    cleanups.push(() => c.client.close());
    return c;
  }

  for (const json of [false, true]) {
    it(`RFC 9449 section 9: nonce challenge answered by the client; list, allowed call, denied call (${json ? 'JSON' : 'SSE'} responses)`, async () => {
      const s = await setup({ dpop: '{ required: true, nonce: true }', json });
      const first = await fetch(s.mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(first.headers.get('www-authenticate')).toMatch(/^DPoP /);

      const { client } = await dpopClient(s);
      expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['get_invoice', 'pay_invoice']);
      const inv = await client.callTool({ name: 'get_invoice', arguments: { invoice_id: 'inv_1002' } });
      expect(inv.structuredContent).toMatchObject({ vendor: 'Globex Cloud' });
      const denied = await client.callTool({ name: 'send_email', arguments: { to: 'cfo@evil.example', subject: 'x', body: 'y' } });
      expect(denied).toMatchObject({ isError: true, structuredContent: { denial_reason: 'out_of_authority' } });
      expect(s.upstream.calls.map((c) => c['tool'])).toEqual(['get_invoice']);
      const nonceDenials = s.gw.evidence().filter((r) => r['denial_reason'] === 'dpop_nonce_required');
      expect(nonceDenials.length).toBeGreaterThanOrEqual(1);
      const permit = (await eventually(() => s.gw.evidence().find((r) => r['tool'] === 'get_invoice')))!;
      expect(permit['jkt']).toMatch(/^[A-Za-z0-9_-]{43}$/);
    });
  }

  it('revocation: after the Mission is revoked (SET pushed to the gateway), the session\'s next call is denied', async () => {
    const s = await setup({ dpop: '{ required: true, nonce: true }' });
    const { client } = await dpopClient(s);
    expect((await client.callTool({ name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } })).isError).toBeFalsy();
    // SET `aud` is mission.events.audience, by default `resource` (the gateway's, not the MCP one).
    const origin = new URL(s.mcpUrl).origin;
    s.dev.addReceiver({ endpoint: `${origin}/.well-known/ssf/push`, audience: origin });
    const revoked = await s.dev.missions.revoke(s.missionId);
    expect(revoked.deliveries.map((d) => d.status)).toEqual([202]);
    await expect(client.callTool({ name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } })).rejects.toThrow(/"denial_reason":"mission_inactive"/);
    const last = await eventually(() => s.gw.evidence().find((r) => r['denial_reason'] === 'mission_inactive'));
    expect(last).toMatchObject({ decision: 'deny', denial_reason: 'mission_inactive', mission: { state: 'revoked' } });
    expect(s.upstream.calls.filter((c) => c['tool'] === 'get_invoice')).toHaveLength(1);
  });
});
