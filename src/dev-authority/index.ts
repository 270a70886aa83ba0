/**
 * The development-only Mission Authority (SPEC section 2, `mission-gateway dev-authority`): an
 * OAuth AS minting DPoP-bound RFC 9068 tokens with a `mission` claim, ID-JAGs by token exchange,
 * a Mission Status endpoint, an SSF transmitter and an admin API, on one port. It speaks the same
 * protocols a real authority would, so the gateway never special-cases it. Never use in production:
 * any client_id may obtain tokens, and keys live in memory (or a plain folder).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JSONWebKeySet, JWK, JWTPayload } from 'jose';
import { adminHandler } from './admin.js';
import type { AuthorityContext, Endpoints, Settings } from './context.js';
import { KeyRing } from './keys.js';
import { missionsApi, type MissionsApi } from './lifecycle.js';
import { MissionStore } from './missions.js';
import { ClientRegistry, ReplayCache } from './proofs.js';
import { router } from './server.js';
import { Transmitter, type Delivery, type Receiver } from './ssf.js';
import { statusHandler } from './status.js';
import { mintAccessToken, tokenHandler, type MissionClaimForm } from './tokens.js';

export { devAuthorityCli } from './cli.js';
export type { Mission, MissionState } from './missions.js';
export type { MissionCreate, MissionResult, MissionsApi, SuspendInput } from './lifecycle.js';
export type { Delivery, Receiver } from './ssf.js';
export type { AuthorityEntry } from './authority.js';
export { authorityHash } from './authority.js';
export { LIFECYCLE_EVENT, SSF_VERIFICATION_EVENT } from './ssf.js';

export const DEV_WARNING = 'DEVELOPMENT ONLY - never use in production: this Mission Authority issues tokens to any client_id and keeps its keys in memory.';

export interface DevAuthorityOptions {
  port?: number;
  host?: string;
  /** Default `http://<host>:<port>` (127.0.0.1 when listening on every interface). */
  issuer?: string;
  /** `mission_max_stale_seconds`; Status `fresh_until` is at most iat + this. Default 60. */
  maxStaleSeconds?: number;
  /** Access token lifetime. Default 300. */
  tokenTtlSeconds?: number;
  /** ID-JAG lifetime, capped at 300. Default 300. */
  idJagTtlSeconds?: number;
  /** Lifetime of a Mission created without `expires_at`. Default 86400. */
  missionTtlSeconds?: number;
  /** Mint a Bearer (unbound) token when a client_credentials request has no DPoP proof. */
  allowBearer?: boolean;
  /** Folder of ES256 private keys (JWK JSON or PKCS#8 PEM); a new key is saved there when empty. */
  keysDir?: string;
  /** How long a rotated-out key stays in the JWKS. Default 3600. */
  keyRetentionSeconds?: number;
  /** Bearer token guarding /admin; none by default. */
  adminToken?: string;
  /** Bearer token guarding the RFC 8936 poll endpoint; none by default. */
  pollToken?: string;
  /** How long a poll without `returnImmediately` waits for events. Default 5000. */
  longPollMs?: number;
  pushTimeoutMs?: number;
  /** Answer Mission Status with seed 002's JSON whenever the request's Accept allows it. */
  preferJsonStatus?: boolean;
  /** Period of SSF verification SETs pushed to receivers (stream liveness). Default maxStaleSeconds / 2; 0 disables. */
  heartbeatSeconds?: number;
  /** Interval of the deadline sweep (`expires_at`, `suspend_until`). Default 1000. */
  sweepIntervalMs?: number;
  /** Epoch milliseconds; injectable for tests. */
  now?: () => number;
  quiet?: boolean;
  log?: (line: string) => void;
}

export interface AccessTokenOptions {
  /** Omitted: a token with no Mission (sub = client id). The Mission's state is not checked. */
  missionId?: string;
  /** Default: the Mission's client_id. */
  clientId?: string;
  resource: string | readonly string[];
  /** DPoP key thumbprint; omitted mints a Bearer token. */
  jkt?: string;
  claimForm?: MissionClaimForm;
  scope?: string;
  ttlSeconds?: number;
  omitAuthorizationDetails?: boolean;
}

export interface DevAuthority {
  /** The issuer URL, e.g. http://127.0.0.1:PORT. */
  readonly url: string;
  readonly port: number;
  readonly endpoints: Endpoints;
  readonly missions: MissionsApi;
  /** Registers a client's public key(s) for private_key_jwt (Mission Status, token endpoint). */
  registerClient(clientId: string, keys: JWK | JSONWebKeySet, opts?: { audiences?: readonly string[] }): void;
  /** Adds an RFC 8935 push receiver; every later transition is pushed to it. */
  addReceiver(r: Receiver): void;
  /** Opens an RFC 8936 poll queue for `audience`; returns the poll endpoint URL naming it. */
  addPollAudience(audience: string): string;
  rotateKey(): Promise<void>;
  /** Pushes an SSF verification (liveness) SET to every receiver now; also sent every heartbeatSeconds. */
  sendHeartbeat(): Promise<Delivery[]>;
  jwks(): { keys: JWK[] };
  /** Mints an access token in-process (no DPoP proof needed), e.g. for a Mission since revoked. */
  issueAccessToken(opts: AccessTokenOptions): Promise<string>;
  /** Signs any payload with the authority's current key (for negative tests: forged SETs, etc.). */
  signJwt(payload: JWTPayload, typ: string, header?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

const defaultLog = (line: string): void => void process.stderr.write(`${line}\n`);

export async function startDevAuthority(opts: DevAuthorityOptions = {}): Promise<DevAuthority> {
  const log = opts.log ?? defaultLog;
  const now = opts.now ?? Date.now;
  const host = opts.host ?? '127.0.0.1';
  let dispatch: ((req: Parameters<ReturnType<typeof router>>[0], res: Parameters<ReturnType<typeof router>>[1]) => void) | undefined;
  const server = createServer((req, res) => {
    if (dispatch === undefined) {
      res.writeHead(503).end();
      return;
    }
    dispatch(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const issuer = (opts.issuer ?? `http://${shownHost}:${port}`).replace(/\/$/, '');
  const endpoints: Endpoints = {
    authorize: `${issuer}/authorize`,
    token: `${issuer}/token`,
    jwks: `${issuer}/jwks`,
    status: `${issuer}/mission/status`,
    ssfPoll: `${issuer}/ssf/poll`,
    ssfConfiguration: `${issuer}/.well-known/ssf-configuration`,
    admin: `${issuer}/admin`,
  };
  const settings: Settings = {
    maxStaleSeconds: opts.maxStaleSeconds ?? 60,
    tokenTtlSeconds: opts.tokenTtlSeconds ?? 300,
    idJagTtlSeconds: Math.min(opts.idJagTtlSeconds ?? 300, 300),
    allowBearer: opts.allowBearer ?? false,
    dpopMaxAgeSeconds: 60,
    clockSkewSeconds: 5,
    adminToken: opts.adminToken,
    pollToken: opts.pollToken,
    pushTimeoutMs: opts.pushTimeoutMs ?? 5000,
    longPollMs: opts.longPollMs ?? 5000,
    preferJsonStatus: opts.preferJsonStatus ?? false,
    heartbeatSeconds: opts.heartbeatSeconds ?? Math.max(1, Math.floor((opts.maxStaleSeconds ?? 60) / 2)),
  };
  let keys: KeyRing;
  try {
    keys = await KeyRing.create({ retainSeconds: opts.keyRetentionSeconds ?? 3600, now, dir: opts.keysDir });
  } catch (e) {
    server.close();
    throw e;
  }
  const ctx: AuthorityContext = {
    issuer,
    endpoints,
    settings,
    keys,
    missions: new MissionStore(issuer, now),
    clients: new ClientRegistry(),
    replay: new ReplayCache(),
    now,
  };
  const ssf = new Transmitter(ctx);
  const missions = missionsApi(ctx.missions, ssf, now, opts.missionTtlSeconds ?? 86_400);
  ctx.missions.onDeadline = (t) => {
    ssf.publish(t).catch(() => log('dev-authority: lifecycle event delivery failed'));
  };
  const sweep = setInterval(() => ctx.missions.sweep(), opts.sweepIntervalMs ?? 1000);
  sweep.unref();

  const registerClient: DevAuthority['registerClient'] = (clientId, k, o) => ctx.clients.register(clientId, k, o?.audiences);
  const addReceiver = (r: Receiver): void => ssf.addReceiver(r);
  const addPollAudience = (audience: string): string => ssf.addPollAudience(audience);
  const rotateKey = (): Promise<void> => keys.rotate();

  dispatch = router(ctx, {
    token: tokenHandler(ctx),
    status: statusHandler(ctx),
    poll: ssf.handler(),
    admin: adminHandler({ token: settings.adminToken, missions, registerClient, addReceiver, addPollAudience, rotateKey, kid: () => keys.kid }),
  }, log);

  if (opts.quiet !== true) {
    log(`dev-authority: ${DEV_WARNING}`);
    log(`dev-authority: issuer ${issuer} (metadata ${issuer}/.well-known/oauth-authorization-server)`);
  }

  return {
    url: issuer,
    port,
    endpoints,
    missions,
    registerClient,
    addReceiver,
    addPollAudience,
    rotateKey,
    sendHeartbeat: () => ssf.verify(),
    jwks: () => keys.jwks(),
    issueAccessToken: async (o) => {
      const mission = o.missionId === undefined ? undefined : ctx.missions.get(o.missionId);
      if (o.missionId !== undefined && mission === undefined) throw new Error('unknown Mission');
      const clientId = o.clientId ?? mission?.client_id;
      if (clientId === undefined) throw new Error('clientId is required without a Mission');
      const issued = await mintAccessToken(ctx, {
        mission,
        clientId,
        resources: typeof o.resource === 'string' ? [o.resource] : o.resource,
        jkt: o.jkt,
        claimForm: o.claimForm,
        scope: o.scope,
        ttlSeconds: o.ttlSeconds,
        omitAuthorizationDetails: o.omitAuthorizationDetails,
      });
      return issued.token;
    },
    signJwt: (payload, typ, header) => keys.sign(payload, typ, header),
    close: async () => {
      clearInterval(sweep);
      ssf.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
