/**
 * The ID-JAG scene on real sockets: the dev Mission Authority (the enterprise IdP minting ID-JAGs
 * by token exchange), a real oidc-provider as the downstream AS with a registered `jwt-bearer`
 * grant that records each invocation, and the gateway in front of the AS's token endpoint.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Provider from 'oidc-provider';
// The provider's own RFC 9449 check: the AS verifies the proof the gateway let through.
import validateDpop from 'oidc-provider/lib/helpers/validate_dpop.js';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { GRANT_JWT_BEARER } from '../../src/idjag/request.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';

export const TOKEN_PATH = '/oauth2/token';
export const AS_CLIENT = { id: 'crm-agent', secret: 'crm-secret' };
export const BASIC = 'Basic ' + Buffer.from(`${AS_CLIENT.id}:${AS_CLIENT.secret}`).toString('base64');
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

import { freePort } from '../../src/demo/free-port.js';

export { freePort };

export interface GrantCall {
  readonly assertion: string | undefined;
  readonly authorization: string;
  readonly dpopJkt: string | null;
}

export interface DownstreamAs {
  readonly url: string;
  /** Every invocation of the jwt-bearer grant handler. */
  readonly calls: GrantCall[];
  close(): Promise<void>;
}

/** oidc-provider at `issuer` (the gateway's public URL), listening on its own port. */
export async function startDownstreamAs(issuer: string, opts: { requireDpopNonce?: boolean } = {}): Promise<DownstreamAs> {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: AS_CLIENT.id,
        client_secret: AS_CLIENT.secret,
        grant_types: [GRANT_JWT_BEARER, 'client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    features: {
      // requireDpopNonce: every token request needs a server nonce (RFC 9449 section 8).
      dPoP: opts.requireDpopNonce ? { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true } : { enabled: true },
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
    },
    routes: { token: TOKEN_PATH },
    ttl: { ClientCredentials: 600 },
  });
  // Behind the gateway: the proof's htu is checked against X-Forwarded-Proto/Host.
  provider.proxy = true;
  const calls: GrantCall[] = [];
  provider.registerGrantType(
    GRANT_JWT_BEARER,
    async (ctx: any) => {
      const dPoP = await validateDpop(provider, ctx);
      calls.push({ assertion: ctx.oidc.params.assertion, authorization: ctx.get('authorization'), dpopJkt: dPoP?.thumbprint ?? null });
      const token = new provider.ClientCredentials({ client: ctx.oidc.client, scope: ctx.oidc.params.scope });
      if (dPoP) token.setThumbprint('jkt', dPoP.thumbprint);
      ctx.body = { access_token: await token.save(), token_type: token.tokenType, expires_in: token.expiration, scope: ctx.oidc.params.scope };
    },
    ['assertion', 'scope'],
  );
  server.on('request', provider.callback());
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

export interface Scene {
  readonly dev: DevAuthority;
  readonly as: DownstreamAs;
  readonly gw: TestGateway;
  /** The gateway's public URL = the downstream AS's issuer = the ID-JAG audience. */
  readonly asIssuer: string;
  readonly tokenUrl: string;
  readonly agent: Agent;
  close(): Promise<void>;
}

/**
 * Starts the three servers. `idJag`: extra YAML under `id_jag:` (indented by the caller), given the
 * dev authority's URL; `top`: extra top-level YAML.
 */
export async function startScene(opts: { idJag?: (devUrl: string) => string; top?: string; upstream?: string; requireDpopNonce?: boolean } = {}): Promise<Scene> {
  const dev = await startDevAuthority({ quiet: true, log: () => undefined });
  const port = await freePort();
  const asIssuer = `http://127.0.0.1:${port}`;
  const as = await startDownstreamAs(asIssuer, { requireDpopNonce: opts.requireDpopNonce ?? false });
  const folder = mkdtempSync(join(tmpdir(), 'mgw-idjag-'));
  const keyFile = await gatewayClientKey(dev, folder);
  const yaml = [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `public_base_url: ${asIssuer}`,
    `resource: ${asIssuer}`,
    `upstream: { url: ${opts.upstream ?? as.url} }`,
    `mission:`,
    `  client: { client_id: gw-api, private_key_file: ${JSON.stringify(keyFile)} }`,
    `id_jag:`,
    `  token_path: ${TOKEN_PATH}`,
    `  trusted_issuers: [${dev.url}]`,
    ...(opts.idJag === undefined ? [] : [opts.idJag(dev.url)]),
    ...(opts.top === undefined ? [] : [opts.top]),
  ].join('\n');
  const gw = await startGateway(yaml, { folder });
  return {
    dev,
    as,
    gw,
    asIssuer,
    tokenUrl: `${asIssuer}${TOKEN_PATH}`,
    agent: await newAgent(),
    async close() {
      await gw.close();
      await as.close();
      await dev.close();
    },
  };
}

/** A Mission at the dev authority and an ID-JAG for it, minted by RFC 8693 token exchange. */
export async function mintIdJag(s: Scene, opts: { agent?: Agent; audience?: string; missionId?: string } = {}): Promise<{ missionId: string; idJag: string }> {
  const agent = opts.agent ?? s.agent;
  const missionId =
    opts.missionId ??
    (
      await s.dev.missions.create({
        subject: 'user-123',
        client_id: 'agent-1',
        purpose: 'https://example.com/purposes/schedule-meeting',
        authorization_details: [{ type: 'mission_resource_access', resource: s.asIssuer, actions: ['crm.notes.write'] }],
      })
    ).id;
  const subjectToken = await agent.token(s.dev, missionId, 'https://calendar.example.com');
  const res = await fetch(s.dev.endpoints.token, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await agent.proof('POST', s.dev.endpoints.token) },
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      client_id: 'agent-1',
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      requested_token_type: 'urn:openid:params:token-type:id-jag',
      audience: opts.audience ?? s.asIssuer,
    }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (body.access_token === undefined) throw new Error(`token exchange failed: ${JSON.stringify(body)}`);
  return { missionId, idJag: body.access_token };
}

export interface GrantResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

/** Presents `assertion` at the gateway as a JWT bearer grant, with client auth and a DPoP proof. */
export async function presentGrant(s: Scene, assertion: string, opts: { agent?: Agent; proof?: string | null; extra?: Record<string, string> } = {}): Promise<GrantResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC };
  const proof = opts.proof === undefined ? await (opts.agent ?? s.agent).proof('POST', s.tokenUrl) : opts.proof;
  if (proof !== null) headers['dpop'] = proof;
  const res = await fetch(s.tokenUrl, {
    method: 'POST',
    headers,
    body: new URLSearchParams({ grant_type: GRANT_JWT_BEARER, assertion, scope: 'crm.notes.write', ...opts.extra }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

/** A bare upstream for byte-level pass-through checks. */
export function echoHandler(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ url: req.url, authorization: req.headers.authorization ?? null, dpop: req.headers.dpop ?? null, body: body.toString('base64') }));
}
