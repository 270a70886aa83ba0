/**
 * A real Pipeline (run.ts) with the real MCP handler, forwarding over a real undici Upstream to the
 * example MCP server (real @modelcontextprotocol/sdk server) on 127.0.0.1:0. Only authentication is
 * a fixture here: the `token` stage maps `Authorization: Bearer <name>` to a prepared principal
 * (token claims, Mission reference and state), so these tests exercise the handler's gating,
 * forwarding and response rewriting; the gateway tests (gateway.test.ts) run the real stages.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createReviewer } from '../../src/authority/stage.js';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { Denial } from '../../src/errors.js';
import type { EvidenceRecord } from '../../src/evidence/record.js';
import { Upstream } from '../../src/http/forward.js';
import { makeDropSet, TrustedProxies } from '../../src/http/headers.js';
import { createMcpHandler, type MissionLookup } from '../../src/mcp/index.js';
import { assertMissionJoin } from '../../src/mission/state.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { AccessToken, MissionReference, MissionView, Stage } from '../../src/pipeline/context.js';
import { Challenges } from '../../src/pipeline/respond.js';
import { Pipeline } from '../../src/pipeline/run.js';
// @ts-expect-error plain JS example without types
import { startExampleServer } from '../../examples/mcp-server/server.js';

export const ISSUER = 'https://as.example.com';
export const BASE = 'https://gw.example.com';
export const MCP_RESOURCE = 'https://gw.example.com/mcp';

export interface Principal {
  readonly token: Partial<AccessToken> & { claims?: Record<string, unknown> };
  readonly ref: MissionReference | null;
  readonly mission: MissionView | null;
}

export function view(id: string, authority: readonly Record<string, unknown>[] | null, extra: Partial<MissionView> = {}): MissionView {
  return {
    id,
    issuer: ISSUER,
    state: 'active',
    version: 1,
    authorityHash: null,
    source: 'fresh',
    authority: authority as MissionView['authority'],
    expiresAt: null,
    suspendUntil: null,
    subject: 'user_1',
    subjectIssuer: null,
    clientId: 'agent_1',
    ...extra,
  };
}

export const claimRef = (id: string): MissionReference => ({ form: 'claim', issuer: ISSUER, id, s256: null, authorityHash: null });

export function entry(actions: string[], constraints?: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'mission_resource_access', resource: MCP_RESOURCE, actions, ...(constraints === undefined ? {} : { constraints }), ...extra };
}

export interface Harness {
  readonly url: string;
  readonly upstreamCalls: Record<string, unknown>[];
  readonly records: EvidenceRecord[];
  readonly principals: Map<string, Principal>;
  readonly missions: Map<string, MissionView | Error>;
  close(): Promise<void>;
}

export async function startHarness(
  opts: { json?: boolean; mcp?: Record<string, unknown>; mission?: Record<string, unknown>; maxBodyBytes?: number; patch?: (c: Config) => Config } = {},
): Promise<Harness> {
  const upstreamCalls: Record<string, unknown>[] = [];
  const example = await startExampleServer({ jsonResponse: opts.json ?? false, log: (e: Record<string, unknown>) => upstreamCalls.push(e) });
  const parsed: Config = configSchema.parse({
    public_base_url: BASE,
    resource: BASE,
    upstream: { url: new URL(example.url).origin },
    issuers: [{ issuer: ISSUER, algorithms: ['ES256'] }],
    mcp: { path: '/mcp', resource: MCP_RESOURCE, ...opts.mcp },
    mission: { ...opts.mission },
    max_body_bytes: opts.maxBodyBytes ?? 1_048_576,
  } as ConfigInput);
  const config = opts.patch === undefined ? parsed : opts.patch(parsed);

  const principals = new Map<string, Principal>();
  const missions = new Map<string, MissionView | Error>();
  const records: EvidenceRecord[] = [];
  const metrics = new Metrics({ defaultMetrics: false });
  const logger = createLogger('silent');

  const token: Stage = (ctx) => {
    const auth = ctx.req.headers.authorization;
    if (auth === undefined) throw new Denial('token_missing');
    const p = principals.get(auth.replace(/^Bearer /, ''));
    if (p === undefined) throw new Denial('token_invalid');
    ctx.token = { raw: 'x', issuer: ISSUER, subject: 'user_1', clientId: 'agent_1', jti: 'jti_1', exp: Math.floor(Date.now() / 1000) + 300, jkt: null, claims: {}, ...p.token };
    ctx.missionRef = p.ref;
    ctx.mission = p.mission;
  };
  const pass: Stage = () => {};
  const lookup: MissionLookup = {
    lookup(ref) {
      const m = missions.get(`${ref.issuer}\n${ref.id}`);
      if (m === undefined) return Promise.reject(new Denial('state_unavailable'));
      if (m instanceof Error) return Promise.reject(m);
      return m;
    },
    join: (view, token) => assertMissionJoin(view, token, 1),
  };
  const handler = createMcpHandler({ config, missionStates: lookup, logger });
  const upstream = new Upstream({ url: config.upstream.url, timeoutMs: 5000, connections: 8, keepAliveTimeoutMs: 4000, holds: null, preserveHost: false });
  const policy = (strip: boolean) => ({ drop: makeDropSet(strip), trusted: new TrustedProxies([]), proto: 'https', upstreamHost: upstream.host });
  const pipeline = new Pipeline({
    resource: BASE,
    routes: [],
    stages: { credentials: pass, token, dpop: pass, missionReference: pass, missionState: pass, parameters: pass, authority: pass },
    reviewer: createReviewer({ config }),
    upstream,
    evidence: { write: (r) => void records.push(r), healthy: () => true, close: async () => {} },
    holds: null,
    metrics,
    logger,
    maxBodyBytes: config.max_body_bytes,
    challenges: new Challenges({ algs: 'ES256', resourceMetadata: `${BASE}/.well-known/oauth-protected-resource`, bearerAllowed: true }),
    headers: { strip: policy(true), passCredentials: policy(false) },
    mcp: { path: '/mcp', resource: MCP_RESOURCE, challenges: new Challenges({ algs: 'ES256', resourceMetadata: `${BASE}/.well-known/oauth-protected-resource/mcp`, bearerAllowed: true }), handler },
    idJag: null,
    pushPath: config.mission.events.push_path,
    tokenSkewS: config.token.clock_skew_s,
  });
  const server: Server = createServer((req, res) => void pipeline.handle(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  return {
    url,
    upstreamCalls,
    records,
    principals,
    missions,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await upstream.destroy();
      await example.close();
    },
  };
}
