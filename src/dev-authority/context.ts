/** What every handler of the dev authority shares, built once at start. */
import type { KeyRing } from './keys.js';
import type { MissionStore } from './missions.js';
import type { ClientRegistry, ReplayCache } from './proofs.js';

export interface Endpoints {
  /** No authorization-code flow: answers unsupported_response_type (present for clients that require it). */
  readonly authorize: string;
  readonly token: string;
  readonly jwks: string;
  readonly status: string;
  readonly ssfPoll: string;
  readonly ssfConfiguration: string;
  readonly admin: string;
}

export interface Settings {
  readonly maxStaleSeconds: number;
  readonly tokenTtlSeconds: number;
  readonly idJagTtlSeconds: number;
  readonly allowBearer: boolean;
  readonly dpopMaxAgeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly adminToken: string | undefined;
  readonly pollToken: string | undefined;
  readonly pushTimeoutMs: number;
  readonly longPollMs: number;
  /** Serve seed 002's JSON whenever the client accepts it (not only when it accepts nothing else). */
  readonly preferJsonStatus: boolean;
  /** Period of SSF verification SETs pushed to receivers as stream liveness; 0 disables. */
  readonly heartbeatSeconds: number;
}

export interface AuthorityContext {
  readonly issuer: string;
  readonly endpoints: Endpoints;
  readonly settings: Settings;
  readonly keys: KeyRing;
  readonly missions: MissionStore;
  readonly clients: ClientRegistry;
  readonly replay: ReplayCache;
  /** Epoch milliseconds; injectable for tests. */
  readonly now: () => number;
}

export const nowSeconds = (ctx: AuthorityContext): number => Math.floor(ctx.now() / 1000);
