/**
 * Interop with an authorization server and a client nobody on this team wrote: oidc-provider issues
 * DPoP-bound JWT access tokens (RFC 9068, resource indicators), oauth4webapi makes the token request
 * and the DPoP-protected resource requests through the gateway. Keys rotate at the provider mid-test.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import * as oauth from 'oauth4webapi';
import Provider from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../cluster/redis-server.js';
import { listen, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';

async function signingKey(kid: string): Promise<Record<string, unknown>> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' };
}

describe('oidc-provider + oauth4webapi through the gateway (RFC 9068, RFC 9449)', () => {
  let issuer: string;
  let handler: (req: IncomingMessage, res: ServerResponse) => void;
  const asServer = createServer((req, res) => handler(req, res));
  let gw: TestGateway;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let api: string;
  const keyOne = signingKey('key-1');

  function provider(keys: Record<string, unknown>[]): Provider {
    const p = new Provider(issuer, {
      clients: [{ client_id: 'agent', client_secret: 'agent-secret-agent-secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [], id_token_signed_response_alg: 'ES256' }],
      jwks: { keys: keys as never },
      features: {
        clientCredentials: { enabled: true },
        dPoP: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => api,
          useGrantedResource: () => true,
          getResourceServerInfo: () => ({ scope: 'invoices', audience: api, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
        },
      },
      scopes: ['invoices'],
    });
    p.proxy = false;
    return p;
  }

  let as: oauth.AuthorizationServer;
  const client: oauth.Client = { client_id: 'agent' };
  const clientAuth = oauth.ClientSecretPost('agent-secret-agent-secret');
  let dpopKeys: oauth.CryptoKeyPair;
  const opts = () => ({ DPoP: oauth.DPoP(client, dpopKeys), [oauth.allowInsecureRequests]: true });

  async function getToken(): Promise<string> {
    const res = await oauth.clientCredentialsGrantRequest(as, client, clientAuth, new URLSearchParams({ resource: api, scope: 'invoices' }), opts());
    try {
      return (await oauth.processClientCredentialsResponse(as, client, res)).access_token;
    } catch (err) {
      throw new Error(`token request failed: ${JSON.stringify((err as { cause?: unknown }).cause)}`);
    }
  }

  beforeAll(async () => {
    issuer = await listen(asServer);
    handler = provider([await keyOne]).callback();
    echo = await startEcho();
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    gw = await startGateway(`listen: { host: 127.0.0.1, port: ${port} }
public_base_url: ${api}
resource: ${api}
upstream: { url: ${echo.url} }
issuers: [{ issuer: ${issuer}, algorithms: [ES256] }]
mission: { required: false }
token: { jwks_cooldown_s: 0.2 }
routes:
  - match: { method: GET, path: /invoices/** }
    action: invoices.read
`);
    as = await oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oidc', [oauth.allowInsecureRequests]: true }));
    dpopKeys = await oauth.generateKeyPair('ES256');
  });

  afterAll(async () => {
    await gw.close();
    await echo.close();
    asServer.close();
  });

  const get = (token: string, path = '/invoices/1') =>
    oauth.protectedResourceRequest(token, 'GET', new URL(`${api}${path}`), new Headers(), null, opts()).catch((err: unknown) => {
      const res = (err as { response?: Response }).response;
      throw new Error(`refused: ${res?.status} ${res?.headers.get('www-authenticate')} ${String(err)}`);
    });

  it('a DPoP-bound JWT access token from oidc-provider is accepted with an oauth4webapi proof', async () => {
    const token = await getToken();
    const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { typ: string };
    expect(header.typ).toBe('at+jwt');
    const res = await get(token);
    expect(res.status).toBe(200);
    const seen = (await res.json()) as { headers: Record<string, string> };
    expect(seen.headers['authorization']).toBeUndefined();
    expect(seen.headers['x-mission-client-id']).toBe('agent');
  });

  it('the same token with another client key is refused (cnf.jkt binding)', async () => {
    const token = await getToken();
    const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
    const err = (await oauth
      .protectedResourceRequest(token, 'GET', new URL(`${api}/invoices/1`), new Headers(), null, { DPoP: thief, [oauth.allowInsecureRequests]: true })
      .then(() => null, (e: unknown) => e)) as oauth.WWWAuthenticateChallengeError;
    expect(err).toBeInstanceOf(oauth.WWWAuthenticateChallengeError);
    expect(err.response.status).toBe(401);
    expect(err.cause[0]).toMatchObject({ scheme: 'dpop', parameters: { error: 'invalid_dpop_proof' } });
  });

  it('keys rotate at the provider: tokens under the new kid are accepted without a restart', async () => {
    const before = await getToken();
    const keyTwo = await signingKey('key-2');
    handler = provider([keyTwo, await keyOne]).callback(); // signs with key-2, still publishes key-1
    await new Promise((r) => setTimeout(r, 300)); // past the refetch cooldown
    const after = await getToken();
    expect(JSON.parse(Buffer.from(after.split('.')[0]!, 'base64url').toString()).kid).toBe('key-2');
    expect((await get(after)).status).toBe(200);
    expect((await get(before)).status).toBe(200);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/mission_gateway_jwks_refresh_total\{[^}]*outcome="(success|ok)"[^}]*\} [2-9]/);
  });
});
