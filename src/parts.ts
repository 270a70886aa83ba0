/**
 * Wiring: which implementation backs each stage and service, built from the config.
 * gateway.ts owns lifecycles; this file only says what is made of what.
 */
import type { Socket } from 'node:net';
import { createDpopStage } from './auth/dpop.js';
import { createCredentialsStage } from './auth/credentials.js';
import { ASYMMETRIC_ALGS } from './auth/jws.js';
import { IssuerKeys, type TrustedIssuer } from './auth/keys.js';
import { NonceIssuer } from './auth/nonce.js';
import { createProtectedResourceMetadata } from './auth/prm.js';
import { createTokenStage } from './auth/token.js';
import type { ReplayStore } from './auth/types.js';
import { createAuthorityStage, createParametersStage, createReviewer } from './authority/stage.js';
import { createMissionBus, createReplayStore } from './cluster/index.js';
import type { Config } from './config/schema.js';
import { isDenial } from './errors.js';
import { EvidenceLog } from './evidence/log.js';
import type { EvidenceSink } from './evidence/record.js';
import { createIdJagHandler } from './idjag/guard.js';
import { createMcpHandler } from './mcp/handler.js';
import { McpSessions } from './mcp/sessions.js';
import { createMissionReferenceStage } from './mission/reference.js';
import { MissionHolds, type Review } from './mission/holds.js';
import { MissionStates } from './mission/state.js';
import type { MissionBus, MissionChange } from './mission/types.js';
import type { Logger } from './observability/logger.js';
import type { Metrics } from './observability/metrics.js';
import type { RequestContext, Stage } from './pipeline/context.js';
import type { Handler, Stages } from './pipeline/run.js';
import { wholeMs } from './values.js';

/** Parts that survive a config reload. */
export interface LongLived {
  readonly evidence: EvidenceSink;
  /**
   * Open client connections on the proxy listener, kept by the Gateway: their number batches DPoP
   * verifications, and what is left of them when the shutdown grace period ends is cut.
   */
  readonly connections: Set<Socket>;
  readonly replay: ReplayStore;
  /** The replica bus; `subscribe` replaces the previous runtime's handler (one consumer at a time). */
  readonly bus: MissionBus;
  /** Exchanges in flight under a Mission (response streams, tunnels), cut when it stops being active. */
  readonly holds: MissionHolds;
  /** Client sockets of open WebSocket tunnels: they outlive a reload, and close with the gateway. */
  readonly tunnels: Set<Socket>;
  /** MCP sessions held under the Missions their requests ran under (ended with them); outlive a reload. */
  readonly sessions: McpSessions;
  close(): Promise<void>;
}

/** Parts rebuilt on every config (re)load. */
export interface Parts {
  readonly keys: IssuerKeys;
  readonly missionStates: MissionStates;
  readonly stages: Stages;
  /** How a held exchange's request is decided again when its Mission's authority changes. */
  readonly reviewer: (ctx: RequestContext) => Review;
  readonly prm: { readonly paths: ReadonlyMap<string, string>; urlFor(resource: string): string };
  readonly mcp: Handler | null;
  readonly idJag: Handler | null;
  start(): void;
  close(): Promise<void>;
}

/** A bus whose single consumer can be swapped on reload (the newest runtime's Mission cache). */
export function switchableBus(inner: MissionBus): MissionBus {
  let handler: ((change: MissionChange) => void) | null = null;
  let onGap: (() => void) | null = null;
  inner.subscribe(
    (change) => handler?.(change),
    () => onGap?.(),
  );
  return {
    publish: (change) => inner.publish(change),
    subscribe: (h, gap) => {
      handler = h;
      onGap = gap ?? null;
    },
    ready: () => inner.ready(),
    opened: () => inner.opened?.() ?? Promise.resolve(),
    close: () => inner.close(),
  };
}

export async function buildLongLivedParts(config: Config, metrics: Metrics, logger: Logger): Promise<LongLived> {
  const evidence = await EvidenceLog.open({
    sink: config.evidence.sink,
    sign: config.evidence.sign === undefined ? undefined : { privateKeyFile: config.evidence.sign.private_key_file, kid: config.evidence.sign.kid },
    metrics,
    logger,
  });
  const replay = createReplayStore(config.replay_store, { maxEntries: config.dpop.replay_max_entries, logger, metrics });
  const bus = switchableBus(createMissionBus(config.replay_store, { logger, metrics, catchUpMs: wholeMs(config.mission.max_stale_s) }));
  // Not listening before the first connection attempts to a shared Redis: a proof (or a pushed
  // event) arriving the moment a replica starts would otherwise be refused 503 only because the
  // connection was still being opened. A Redis down at start costs at most the connect timeout.
  await Promise.all([replay.opened?.(), bus.opened?.()]);
  const tunnels = new Set<Socket>();
  const holds = new MissionHolds({ logger, counted: (cause, n) => metrics.exchangesCut.labels(cause).inc(n) });
  const sessions = new McpSessions(holds, logger);
  metrics.heldExchanges = () => holds.size;
  return {
    evidence,
    connections: new Set(),
    replay,
    bus,
    holds,
    tunnels,
    sessions,
    async close() {
      holds.close();
      sessions.close();
      for (const s of tunnels) s.destroy();
      await Promise.allSettled([evidence.close(), replay.close(), bus.close()]);
    },
  };
}

/**
 * Issuers whose keys the gateway may need besides token issuers: Mission authorities, ID-JAG
 * issuers. Not configured with algorithms of their own, they may sign with any asymmetric one
 * (docs/id-jag.md, docs/missions.md); never `none` or HS*. An ID-JAG issuer's keys are needed for
 * readiness, as a token issuer's: every grant needs them (r21e 3); an authority's are not (cached
 * Mission states still serve without them).
 */
export function extraIssuers(config: Config): TrustedIssuer[] {
  const known = new Set(config.issuers.map((i) => i.issuer));
  const out = new Map<string, TrustedIssuer>();
  const add = (issuer: string, required: boolean, jwks?: string): void => {
    if (known.has(issuer)) return;
    const seen = out.get(issuer);
    if (seen === undefined) out.set(issuer, { issuer, jwks_uri: jwks, algorithms: [...ASYMMETRIC_ALGS], required });
    else if (required) out.set(issuer, { ...seen, required });
  };
  for (const a of config.mission.authorities) add(a.issuer, false, a.jwks_uri);
  for (const i of config.id_jag?.trusted_issuers ?? []) add(i, true);
  return [...out.values()];
}

export async function buildParts(config: Config, longLived: LongLived, metrics: Metrics, logger: Logger): Promise<Parts> {
  const keys = new IssuerKeys({
    issuers: config.issuers,
    extraIssuers: extraIssuers(config),
    metrics,
    logger,
    cooldownMs: wholeMs(config.token.jwks_cooldown_s),
    refreshIntervalMs: wholeMs(config.token.jwks_refresh_s),
  });
  const missionStates = new MissionStates({ config, keys, metrics, logger, bus: longLived.bus, holds: longLived.holds });
  const nonces = config.dpop.nonce ? new NonceIssuer({ windowSeconds: config.dpop.nonce_window_s, secret: config.dpop.nonce_secret }) : null;
  const missionReference = createMissionReferenceStage({ config });
  const stages: Stages = {
    credentials: createCredentialsStage(),
    token: createTokenStage({ config, keys, metrics, logger }),
    dpop: createDpopStage({ config, replay: longLived.replay, nonces, metrics, openConnections: () => longLived.connections.size }),
    missionReference: config.mission.accept_header_references ? deferOnMcp(missionReference) : missionReference,
    missionState: missionStates.stage(),
    parameters: createParametersStage(),
    authority: config.mission.required ? createAuthorityStage({ config }) : migrationAuthority(createAuthorityStage({ config })),
  };
  return {
    keys,
    missionStates,
    stages,
    reviewer: createReviewer({ config }),
    prm: createProtectedResourceMetadata(config),
    mcp: config.mcp === undefined ? null : createMcpHandler({ config, missionStates, logger, sessions: longLived.sessions }),
    idJag: config.id_jag === undefined ? null : createIdJagHandler({ config, keys, replay: longLived.replay, missionStates, metrics, logger }),
    start() {
      void keys.start();
      missionStates.startPolling();
    },
    async close() {
      await Promise.allSettled([missionStates.close(), Promise.resolve(keys.close())]);
    },
  };
}

/**
 * Migration mode (`mission.required: false`): a token that names no Mission and carries no
 * `mission_resource_access` entries has no Authority Set to evaluate, so only token, DPoP and the
 * route apply. A token that carries entries, or names a Mission, is always evaluated.
 */
function migrationAuthority(stage: Stage): Stage {
  return (ctx) => {
    if (ctx.missionRef === null && ctx.mission === null && !hasAuthorityEntries(ctx.token?.claims['authorization_details'])) return;
    return stage(ctx);
  };
}

function hasAuthorityEntries(details: unknown): boolean {
  return Array.isArray(details) && details.some((d) => d !== null && typeof d === 'object' && (d as { type?: unknown }).type === 'mission_resource_access');
}

/**
 * MAS mode on the MCP path: a token without a Mission reference may name its Mission per call in
 * `_meta`, so the missing reference is judged per tools/call by the MCP handler, not here.
 */
function deferOnMcp(stage: Stage): Stage {
  return (ctx) => {
    try {
      const pending = stage(ctx);
      if (pending === undefined || ctx.kind !== 'mcp') return pending;
      return pending.catch((err: unknown) => {
        if (!(isDenial(err) && err.code === 'mission_claim_missing')) throw err;
        ctx.missionRef = null;
      });
    } catch (err) {
      if (ctx.kind === 'mcp' && isDenial(err) && err.code === 'mission_claim_missing') {
        ctx.missionRef = null;
        return;
      }
      throw err;
    }
  };
}
