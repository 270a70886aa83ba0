/**
 * The HTTP surface of the dev authority: one node:http server, a path table built at start, and
 * one error funnel (HttpError -> its JSON; anything else -> 500 with a generic body).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthorityContext } from './context.js';
import { HttpError, NO_STORE, sendJson } from './http.js';
import { ASYMMETRIC_ALGS } from './proofs.js';
import { SIGNING_ALG } from './keys.js';
import { GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE } from './tokens.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

export interface Handlers {
  readonly token: Handler;
  readonly status: Handler;
  readonly poll: Handler;
  readonly admin: (req: IncomingMessage, res: ServerResponse, subpath: string) => Promise<void>;
}

/** RFC 8414 metadata plus the Mission Status and Signals members (mission-contracts.md section 2). */
export function metadata(ctx: AuthorityContext): Record<string, unknown> {
  const e = ctx.endpoints;
  return {
    issuer: ctx.issuer,
    // RFC 8414 requires it unless no grant uses it; clients such as the MCP SDK's refuse metadata
    // without it. There is no authorization-code flow here: it answers unsupported_response_type.
    authorization_endpoint: e.authorize,
    token_endpoint: e.token,
    jwks_uri: e.jwks,
    grant_types_supported: [GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ASYMMETRIC_ALGS,
    dpop_signing_alg_values_supported: ASYMMETRIC_ALGS,
    authorization_details_types_supported: ['mission_resource_access'],
    response_types_supported: [],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: [SIGNING_ALG],
    mission_status_endpoint: e.status,
    mission_status_endpoint_auth_methods_supported: ['private_key_jwt'],
    mission_status_endpoint_auth_signing_alg_values_supported: ASYMMETRIC_ALGS,
    mission_status_signing_alg_values_supported: [SIGNING_ALG],
    mission_max_stale_seconds: ctx.settings.maxStaleSeconds,
    mission_event_stream_endpoint: e.ssfConfiguration,
    ssf_poll_endpoint: e.ssfPoll,
  };
}

/** SSF Transmitter Configuration Metadata (the target of `mission_event_stream_endpoint`). */
function ssfConfiguration(ctx: AuthorityContext): Record<string, unknown> {
  return {
    spec_version: '1_0',
    issuer: ctx.issuer,
    jwks_uri: ctx.endpoints.jwks,
    delivery_methods_supported: ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936'],
    poll_endpoint: ctx.endpoints.ssfPoll,
    mission_capabilities_supported: ['authority_changed'],
  };
}

const wellKnown = (name: string, issuerPath: string): string[] => [`/.well-known/${name}${issuerPath}`, `${issuerPath}/.well-known/${name}`];

export function router(ctx: AuthorityContext, h: Handlers, log: (line: string) => void): (req: IncomingMessage, res: ServerResponse) => void {
  const issuerPath = new URL(ctx.issuer).pathname.replace(/\/$/, '');
  const pathOf = (url: string): string => new URL(url).pathname;
  const meta = JSON.stringify(metadata(ctx));
  const ssf = JSON.stringify(ssfConfiguration(ctx));
  const json = (body: string): Handler => (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' });
    res.end(body);
  };

  const posts = new Map<string, Handler>([
    [pathOf(ctx.endpoints.token), h.token],
    [pathOf(ctx.endpoints.status), h.status],
    [pathOf(ctx.endpoints.ssfPoll), h.poll],
  ]);
  const gets = new Map<string, Handler>([
    [
      pathOf(ctx.endpoints.authorize),
      (_req, res) => sendJson(res, 400, { error: 'unsupported_response_type', error_description: 'the development authority issues tokens by client_credentials and token exchange only' }),
    ],
    [pathOf(ctx.endpoints.jwks), (_req, res) => sendJson(res, 200, ctx.keys.jwks(), { 'cache-control': 'max-age=60' })],
    ...['oauth-authorization-server', 'openid-configuration', 'mission-authority-server'].flatMap((n) => wellKnown(n, issuerPath).map((p) => [p, json(meta)] as const)),
    ...wellKnown('ssf-configuration', issuerPath).map((p) => [p, json(ssf)] as const),
  ]);
  const adminPrefix = pathOf(ctx.endpoints.admin);

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    let run: Promise<void> | void;
    if (path === adminPrefix || path.startsWith(`${adminPrefix}/`)) {
      run = h.admin(req, res, path.slice(adminPrefix.length));
    } else {
      const table = req.method === 'POST' ? posts : req.method === 'GET' || req.method === 'HEAD' ? gets : undefined;
      const handler = table?.get(path);
      const known = posts.has(path) || gets.has(path);
      run = handler !== undefined ? handler(req, res)
        : sendJson(res, known ? 405 : 404, { error: known ? 'invalid_request' : 'not_found', error_description: known ? 'method not allowed' : 'not found' });
    }
    Promise.resolve(run).catch((e: unknown) => fail(res, e, path, log));
  };
}

function fail(res: ServerResponse, e: unknown, path: string, log: (line: string) => void): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (e instanceof HttpError) {
    sendJson(res, e.status, e.body, { ...NO_STORE, ...e.headers });
    return;
  }
  log(`dev-authority: internal error on ${path}: ${e instanceof Error ? e.name : 'error'}`);
  sendJson(res, 500, { error: 'server_error', error_description: 'internal error' }, NO_STORE);
}
