/**
 * Wiring: which implementation backs each stage and service, built from the config.
 * gateway.ts owns lifecycles; this file only says what is made of what.
 */
import type { Config } from './config/schema.js';
import { Denial } from './errors.js';
import type { EvidenceRecord, EvidenceSink } from './evidence/record.js';
import type { KeyResolver, ReplayStore } from './auth/types.js';
import type { MissionBus } from './mission/types.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from './observability/logger.js';
import type { Metrics } from './observability/metrics.js';
import type { Stage } from './pipeline/context.js';
import type { Handler, Stages } from './pipeline/run.js';

/** Parts that survive a config reload. */
export interface LongLived {
  readonly evidence: EvidenceSink;
  readonly replay: ReplayStore;
  readonly bus: MissionBus;
  close(): Promise<void>;
}

export interface MissionService {
  handlePush(req: IncomingMessage, res: ServerResponse): void;
  ready(): boolean;
}

/** Parts rebuilt on every config (re)load. */
export interface Parts {
  readonly keys: KeyResolver;
  readonly missionStates: MissionService;
  readonly stages: Stages;
  readonly prm: { readonly paths: ReadonlyMap<string, string>; urlFor(resource: string): string };
  readonly mcp: Handler | null;
  readonly idJag: Handler | null;
  start(): void;
  close(): Promise<void>;
}

export async function buildLongLivedParts(config: Config, metrics: Metrics, logger: Logger): Promise<LongLived> {
  void config;
  void metrics;
  void logger;
  const evidence: EvidenceSink = {
    write(record: EvidenceRecord) {
      process.stdout.write(JSON.stringify(record) + '\n');
    },
    healthy: () => true,
    close: async () => {},
  };
  const replay: ReplayStore = { claim: () => true, ready: () => true, close: async () => {} };
  const bus: MissionBus = { publish: async () => {}, subscribe: () => {}, close: async () => {} };
  return { evidence, replay, bus, close: async () => {} };
}

export async function buildParts(config: Config, longLived: LongLived, metrics: Metrics, logger: Logger): Promise<Parts> {
  void longLived;
  void metrics;
  void logger;
  const pass: Stage = () => {};
  const credentials: Stage = (ctx) => {
    if (ctx.req.headers.authorization === undefined) throw new Denial('token_missing');
    throw new Denial('token_invalid');
  };
  const base = config.public_base_url.replace(/\/$/, '');
  const urlFor = (resource: string): string => {
    let suffix = '';
    try {
      const p = new URL(resource).pathname;
      suffix = p === '/' ? '' : p;
    } catch {
      suffix = '';
    }
    return `${base}/.well-known/oauth-protected-resource${suffix}`;
  };
  return {
    keys: { resolve: () => Promise.reject(new Denial('keys_unavailable')), metadata: () => Promise.reject(new Error('no')), ready: () => true },
    missionStates: { handlePush: (_q, s) => { s.writeHead(400); s.end(); }, ready: () => true },
    stages: { credentials, token: pass, dpop: pass, missionReference: pass, missionState: pass, parameters: pass, authority: pass },
    prm: { paths: new Map(), urlFor },
    mcp: null,
    idJag: null,
    start() {},
    close: async () => {},
  };
}
