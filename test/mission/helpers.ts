/**
 * Fixtures for the Mission tests: a key resolver over local keys, a real Mission Status server on
 * 127.0.0.1:0 that authenticates the gateway's private_key_jwt, SET minting, configs through the
 * real schema, and a RequestContext with a real-enough request.
 */
import { createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as jose from 'jose';
import { UnknownKey } from '../../src/auth/keys.js';
import type { JwsHeader, KeyResolver } from '../../src/auth/types.js';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { Denial } from '../../src/errors.js';
import type { MissionBus, MissionChange } from '../../src/mission/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { newRequestContext, type AccessToken, type RequestContext } from '../../src/pipeline/context.js';
import type { CompiledRoute } from '../../src/config/compile.js';

export const logger = createLogger('silent');
export const newMetrics = (): Metrics => new Metrics({ defaultMetrics: false });

export const ISSUER = 'https://as.example.com';
export const RESOURCE = 'https://api.example.com';
export const CLIENT_ID = 'gw-api';
export const MISSION_ID = 'msn_8RfX2Lqv9TqMv4z7sA2bN1k0YpEdHc9-';
export const S256 = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
export const LIFECYCLE = 'https://schemas.karlmcguinness.com/mission/lifecycle-change';

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly kid: string;
}

export function signingKey(kid: string = randomUUID()): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, publicKey, kid };
}

/** A KeyResolver over local keys: issuer -> keys by kid, issuer -> metadata. */
export class LocalKeys implements KeyResolver {
  readonly keys = new Map<string, Map<string, KeyObject>>();
  readonly meta = new Map<string, Record<string, unknown>>();
  metadataCalls = 0;
  /** When > 0, keys resolve asynchronously after this delay (a JWKS fetch). */
  resolveDelayMs = 0;
  /** Kids the issuer rotated to that keys.ts could not fetch (the JWKS unreachable just now). */
  readonly pending = new Set<string>();

  add(issuer: string, key: SigningKey): this {
    let m = this.keys.get(issuer);
    if (m === undefined) this.keys.set(issuer, (m = new Map()));
    m.set(key.kid, key.publicKey);
    return this;
  }

  resolve(issuer: string, header: JwsHeader): KeyObject | Promise<KeyObject> {
    const k = typeof header.kid === 'string' ? this.keys.get(issuer)?.get(header.kid) : undefined;
    if (typeof header.kid === 'string' && this.pending.has(header.kid)) throw new Denial('token_invalid', { cause: new UnknownKey(false) });
    if (k === undefined) throw new Denial('token_invalid');
    return this.resolveDelayMs > 0 ? new Promise((r) => setTimeout(() => r(k), this.resolveDelayMs)) : k;
  }

  metadata(issuer: string): Promise<Readonly<Record<string, unknown>>> {
    this.metadataCalls++;
    const m = this.meta.get(issuer);
    return m === undefined ? Promise.reject(new Error('no metadata')) : Promise.resolve(m);
  }

  ready(): boolean {
    return true;
  }
}

/** The gateway's client key, written as a private JWK (or PKCS#8 PEM) file. */
export function clientKeyFile(format: 'jwk' | 'pem' = 'jwk'): { file: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const dir = mkdtempSync(join(tmpdir(), 'mgw-mission-'));
  const file = join(dir, format === 'jwk' ? 'gw.jwk' : 'gw.pem');
  writeFileSync(file, format === 'jwk' ? JSON.stringify(privateKey.export({ format: 'jwk' })) : (privateKey.export({ format: 'pem', type: 'pkcs8' }) as string));
  return { file, publicKey };
}

export function makeConfig(extra: Record<string, unknown> = {}, mission: Record<string, unknown> = {}): Config {
  const { mission: _ignored, ...rest } = extra;
  return configSchema.parse({
    public_base_url: RESOURCE,
    resource: RESOURCE,
    upstream: { url: 'http://127.0.0.1:3000' },
    issuers: [{ issuer: ISSUER, algorithms: ['ES256'] }],
    ...rest,
    mission: { max_stale_s: 60, status_timeout_s: 2, ...mission },
  } as ConfigInput);
}

export interface StatusRequest {
  readonly form: URLSearchParams;
  readonly assertion: jose.JWTPayload;
  readonly accept: string | undefined;
}

export interface MissionRecordFixture {
  state: string;
  version: number;
  expires_at?: string;
  fresh_until?: string | null;
  suspend_until?: string;
  subject?: { sub: string; iss?: string };
  client_id?: string;
  authorization_details?: unknown[];
  /** Override what the answer names (an AAuth answer's governance id, or another issuer). */
  id?: string;
  issuer?: string;
}

/**
 * A Mission Status endpoint on 127.0.0.1:0. It authenticates the client assertion against the
 * gateway's public key (aud = this endpoint's URL, iss = sub = client_id), then answers with the
 * signed JWT built from `missions` unless `respond` overrides the answer.
 */
export class StatusServer {
  readonly requests: StatusRequest[] = [];
  readonly missions = new Map<string, MissionRecordFixture>();
  /** Override the whole answer (status, headers, body). */
  respond: ((req: StatusRequest, sign: (claims: Record<string, unknown>, header?: Record<string, unknown>) => Promise<string>) => Promise<{ status: number; headers?: Record<string, string>; body: string }> | null) | null = null;
  /** Mutate the claims before signing. */
  tamper: ((claims: Record<string, unknown>) => void) | null = null;
  delayMs = 0;
  down = false;
  url = '';
  private server: Server | null = null;
  private nowSeconds: () => number;

  constructor(
    readonly issuer: string,
    readonly key: SigningKey,
    private readonly clientPublicKey: KeyObject,
    now: () => number = Date.now,
  ) {
    this.nowSeconds = () => Math.floor(now() / 1000);
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/mission/status`;
    return this;
  }

  sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> =>
    new jose.SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: this.key.kid, typ: 'mission-status-response+jwt', ...header }).sign(this.key.privateKey);

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.down) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    let assertion: jose.JWTPayload;
    try {
      ({ payload: assertion } = await jose.jwtVerify(form.get('client_assertion') ?? '', this.clientPublicKey, { audience: this.url, issuer: CLIENT_ID, subject: CLIENT_ID, requiredClaims: ['jti', 'exp', 'iat'] }));
      if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') throw new Error('assertion type');
    } catch {
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unauthorized' }));
      return;
    }
    const sreq: StatusRequest = { form, assertion, accept: req.headers.accept };
    this.requests.push(sreq);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const custom = this.respond ? await this.respond(sreq, this.sign) : null;
    if (custom !== null) {
      res.writeHead(custom.status, custom.headers ?? {}).end(custom.body);
      return;
    }
    const id = form.get('mission_id') ?? `s256:${form.get('mission_s256')}`;
    const m = this.missions.get(id);
    if (m === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not_found', nonce: form.get('nonce') }));
      return;
    }
    const iat = this.nowSeconds();
    const { fresh_until, authorization_details, ...mission } = m;
    const claims: Record<string, unknown> = {
      iss: this.issuer,
      aud: form.get('audience'),
      sub: CLIENT_ID,
      nonce: form.get('nonce'),
      iat,
      exp: iat + 60,
      mission: {
        ...(form.get('mission_id') !== null ? { id: form.get('mission_id') } : { id: 'msn_from_s256', approver: this.issuer, s256: form.get('mission_s256') }),
        issuer: this.issuer,
        authority_hash: 'sha-256:x',
        ...mission,
        ...(fresh_until === null ? {} : { fresh_until: fresh_until ?? new Date((iat + 45) * 1000).toISOString() }),
      },
      authorization_details: authorization_details ?? [{ type: 'mission_resource_access', resource: RESOURCE, actions: ['invoices.read'] }],
    };
    this.tamper?.(claims);
    res.writeHead(200, { 'content-type': 'application/mission-status-response+jwt', 'cache-control': 'no-store' }).end(await this.sign(claims));
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** Mints a lifecycle-change SET. */
export function lifecycleSet(
  key: SigningKey,
  opts: { issuer?: string; aud?: unknown; jti?: string; id?: string; state: string; version: number; missionIssuer?: string; extra?: Record<string, unknown>; header?: Record<string, unknown>; iat?: number; claims?: Record<string, unknown> },
): Promise<string> {
  const issuer = opts.issuer ?? ISSUER;
  const id = opts.id ?? MISSION_ID;
  return new jose.SignJWT({
    iss: issuer,
    aud: (opts.aud ?? RESOURCE) as string | string[],
    iat: opts.iat ?? Math.floor(Date.now() / 1000),
    jti: opts.jti ?? `set_${randomUUID()}`,
    sub_id: { format: 'opaque', id },
    events: {
      [LIFECYCLE]: {
        mission: { id, issuer: opts.missionIssuer ?? issuer },
        state: opts.state,
        version: opts.version,
        committed_at: new Date().toISOString(),
        expires_at: '2099-12-31T23:59:59Z',
        ...opts.extra,
      },
    },
    ...opts.claims,
  })
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'secevent+jwt', ...opts.header })
    .sign(key.privateKey);
}

/** A bus that records publications and lets a test deliver changes "from another replica". */
export class RecordingBus implements MissionBus {
  readonly published: MissionChange[] = [];
  private handler: ((c: MissionChange) => void) | null = null;
  private onGap: (() => void) | null = null;
  fail = false;
  /** With `fail`: each publication fails only after this long (a hung Redis, and the bus's timeout). */
  failAfterMs = 0;
  publish(change: MissionChange): Promise<void> {
    if (this.fail) return this.failAfterMs > 0 ? new Promise((_, reject) => setTimeout(() => reject(new Error('bus timed out')), this.failAfterMs)) : Promise.reject(new Error('bus down'));
    this.published.push(change);
    return Promise.resolve();
  }
  subscribe(handler: (change: MissionChange) => void, onGap?: () => void): void {
    this.handler = handler;
    this.onGap = onGap ?? null;
  }
  deliver(change: MissionChange): void {
    this.handler?.(change);
  }
  /** As the Redis bus reports changes trimmed before this replica read them. */
  gap(): void {
    this.onGap?.();
  }
  ready(): boolean {
    return true;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

export function token(claims: Record<string, unknown> = {}, over: Partial<AccessToken> = {}): AccessToken {
  return { raw: 'x', issuer: ISSUER, subject: 'user_1', clientId: 'agent_1', jti: randomUUID(), exp: Math.floor(Date.now() / 1000) + 3600, jkt: null, claims: { iss: ISSUER, ...claims }, ...over };
}

/** A context with the request headers given as field lines (a repeated name = several lines). */
export function context(opts: { token?: AccessToken | null; headers?: Array<[string, string]>; audience?: string; route?: Partial<CompiledRoute> | null } = {}): RequestContext {
  const distinct: Record<string, string[]> = {};
  for (const [k, v] of opts.headers ?? []) (distinct[k.toLowerCase()] ??= []).push(v);
  const req = {
    rawHeaders: (opts.headers ?? []).flat(),
    headersDistinct: distinct,
    headers: Object.fromEntries(Object.entries(distinct).map(([k, v]) => [k, v.join(', ')])),
  } as unknown as IncomingMessage;
  return newRequestContext({
    id: randomUUID(),
    started: 0,
    req,
    res: {} as ServerResponse,
    method: 'GET',
    path: '/',
    search: '',
    clientIp: '127.0.0.1',
    route: (opts.route ?? null) as CompiledRoute | null,
    audience: opts.audience ?? RESOURCE,
    token: opts.token === undefined ? token() : opts.token,
    stage: 'mission_reference',
  });
}

/** Runs a stage and returns the Denial it throws or rejects with (null when it passes). */
export async function denialOf(run: () => void | Promise<void>): Promise<Denial | null> {
  try {
    await run();
    return null;
  } catch (e) {
    if (e instanceof Denial) return e;
    throw e;
  }
}

export function counter(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  return metrics.registry.getSingleMetric(name)!.get().then((m) => {
    const v = m.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
    return v?.value ?? 0;
  });
}

export { createPublicKey };
