/**
 * Interop: a real authorization server (oidc-provider, DPoP + resource indicators, JWT access
 * tokens) and a real client (oauth4webapi) against the credentials, token and DPoP stages. The
 * client sends real HTTP requests to a capture server whose handler runs the stages on the real
 * IncomingMessage, so header parsing, proofs and htu are exactly what a client puts on the wire.
 * Midway, the provider rotates its signing key (the old key leaves the JWKS).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as jose from 'jose';
import * as oauth from 'oauth4webapi';
import Provider from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCredentialsStage } from '../../src/auth/credentials.js';
import { createDpopStage } from '../../src/auth/dpop.js';
import { IssuerKeys } from '../../src/auth/keys.js';
import { MemoryReplayStore } from '../../src/auth/replay.js';
import { createTokenStage } from '../../src/auth/token.js';
import { configSchema } from '../../src/config/schema.js';
import { normalizeTarget } from '../../src/http/path.js';
import { Denial } from '../../src/errors.js';
import type { Stage } from '../../src/pipeline/context.js';
import { logger, makeCtx, newMetrics } from './helpers.js';

const RESOURCE = 'https://api.example.com';

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function signingJwk(kid: string): Promise<jose.JWK> {
  const { privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  return { ...(await jose.exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' };
}

function makeProvider(issuer: string, keys: jose.JWK[]): Provider {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'agent-1',
        client_secret: 'a-client-secret-long-enough-for-tests',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256',
      },
    ],
    jwks: { keys: keys as never },
    features: {
      clientCredentials: { enabled: true },
      dPoP: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'invoices', audience: RESOURCE, accessTokenFormat: 'jwt', accessTokenTTL: 300, jwt: { sign: { alg: 'ES256' } } }),
      },
    },
  });
  provider.on('server_error', () => undefined);
  return provider;
}

let asServer: Server;
let issuer: string;
let provider: Provider;
let rsServer: Server;
let rsUrl: string;
let keys: IssuerKeys;
let stages: Stage[];
/** Outcome of the last request the capture server saw. */
let lastOutcome: string = 'none';

beforeAll(async () => {
  const as = await listen((req, res) => provider.callback()(req, res));
  asServer = as.server;
  issuer = as.url;
  provider = makeProvider(issuer, [await signingJwk('as-key-1')]);

  const rs = await listen((req, res) => {
    void (async () => {
      const target = normalizeTarget(req.url ?? '/');
      const ctx = makeCtx(req.rawHeaders, { method: req.method ?? 'GET', path: target.path });
      try {
        for (const s of stages) await s(ctx);
        lastOutcome = 'ok';
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: ctx.token?.subject, jkt: ctx.proof?.jkt }));
      } catch (err) {
        lastOutcome = err instanceof Denial ? err.code : 'error';
        res.writeHead(err instanceof Denial ? err.spec.status : 500, { 'www-authenticate': 'DPoP error="invalid_token"' }).end();
      }
    })();
  });
  rsServer = rs.server;
  rsUrl = rs.url;

  // No jwks_uri: keys are discovered from the provider's OIDC discovery document.
  const config = configSchema.parse({
    public_base_url: rsUrl,
    resource: RESOURCE,
    upstream: { url: 'http://127.0.0.1:1' },
    issuers: [{ issuer, algorithms: ['ES256'] }],
  });
  const metrics = newMetrics();
  keys = new IssuerKeys({ issuers: config.issuers, metrics, logger, cooldownMs: 0, refreshIntervalMs: 0 });
  await keys.start();
  stages = [
    createCredentialsStage(),
    createTokenStage({ config, keys, metrics, logger }),
    createDpopStage({ config, replay: new MemoryReplayStore({ maxEntries: 10_000, metrics }), nonces: null, metrics }),
  ];
});

afterAll(async () => {
  keys.close();
  await new Promise((r) => asServer.close(r));
  await new Promise((r) => rsServer.close(r));
});

const client: oauth.Client = { client_id: 'agent-1' };
const clientAuth = oauth.ClientSecretBasic('a-client-secret-long-enough-for-tests');

async function getToken(dpop: oauth.DPoPHandle): Promise<string> {
  const as = await oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oidc', [oauth.allowInsecureRequests]: true }));
  const params = new URLSearchParams({ resource: RESOURCE, scope: 'invoices' });
  const call = () => oauth.clientCredentialsGrantRequest(as, client, clientAuth, params, { DPoP: dpop, [oauth.allowInsecureRequests]: true });
  let response = await call();
  let result;
  try {
    result = await oauth.processClientCredentialsResponse(as, client, response);
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw Object.assign(new Error(`token request failed: ${JSON.stringify((err as { cause?: unknown }).cause)}`), { cause: err });
    response = await call();
    result = await oauth.processClientCredentialsResponse(as, client, response);
  }
  expect(result.token_type.toLowerCase()).toBe('dpop');
  return result.access_token;
}

async function callResource(token: string, dpop: oauth.DPoPHandle, path = '/invoices/42?expand=lines'): Promise<number> {
  try {
    const res = await oauth.protectedResourceRequest(token, 'GET', new URL(path, rsUrl), new Headers(), null, { DPoP: dpop, [oauth.allowInsecureRequests]: true });
    return res.status;
  } catch (err) {
    // oauth4webapi turns a 401 with a challenge into an error carrying the response.
    if (err instanceof oauth.WWWAuthenticateChallengeError) return err.response.status;
    throw err;
  }
}

describe('interop: oidc-provider tokens + oauth4webapi proofs', () => {
  it('RFC 9068 + RFC 9449: a DPoP-bound JWT access token from oidc-provider and oauth4webapi proofs are accepted, a fresh proof per request', async () => {
    const keyPair = await oauth.generateKeyPair('ES256');
    const dpop = oauth.DPoP(client, keyPair);
    const token = await getToken(dpop);
    const header = jose.decodeProtectedHeader(token);
    expect(header.typ).toBe('at+jwt');
    const claims = jose.decodeJwt(token);
    expect(claims.cnf).toMatchObject({ jkt: await jose.calculateJwkThumbprint(await jose.exportJWK(keyPair.publicKey)) });
    expect(claims).toMatchObject({ iss: issuer, aud: RESOURCE, client_id: 'agent-1', sub: 'agent-1' });
    for (let i = 0; i < 3; i++) {
      expect(await callResource(token, dpop)).toBe(200);
      expect(lastOutcome).toBe('ok');
    }
  });

  it('RFC 9449 §4.3 step 13: the token used with proofs from another oauth4webapi key is refused', async () => {
    const dpop = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
    const token = await getToken(dpop);
    const thief = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
    expect(await callResource(token, thief)).toBe(401);
    expect(lastOutcome).toBe('dpop_invalid');
  });

  it('RFC 9449 §7.2: the same token sent as Bearer is refused', async () => {
    const dpop = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
    const token = await getToken(dpop);
    const res = await fetch(new URL('/invoices/1', rsUrl), { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(401);
    expect(lastOutcome).toBe('token_invalid');
  });

  it('key rotation at the provider: new tokens verify without restart; tokens signed by the removed key stop verifying', async () => {
    const dpop = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
    const oldToken = await getToken(dpop);
    expect(await callResource(oldToken, dpop)).toBe(200); // now cached as verified

    provider = makeProvider(issuer, [await signingJwk('as-key-2')]);
    const newToken = await getToken(dpop);
    expect(jose.decodeProtectedHeader(newToken).kid).toBe('as-key-2');
    expect(await callResource(newToken, dpop)).toBe(200); // unknown kid -> JWKS refetch
    expect(await callResource(oldToken, dpop)).toBe(401); // its key left the set: cache entry dropped
    expect(lastOutcome).toBe('token_invalid');
  });
});
