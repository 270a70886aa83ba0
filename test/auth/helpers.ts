/**
 * Test fixtures for the auth stages: a real JWKS server on port 0, token and proof minting with
 * jose, configs through the real schema, and a RequestContext-like object.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as jose from 'jose';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import { Denial, type DenialCode } from '../../src/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { newRequestContext, type RequestContext } from '../../src/pipeline/context.js';

export const logger = createLogger('silent');
export const newMetrics = (): Metrics => new Metrics({ defaultMetrics: false });

export type Key = { privateKey: jose.CryptoKey; publicKey: jose.CryptoKey; publicJwk: jose.JWK; kid: string; alg: string };

export async function makeKey(alg = 'ES256', kid: string = randomUUID()): Promise<Key> {
  const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true });
  const publicJwk = await jose.exportJWK(publicKey);
  return { privateKey, publicKey, publicJwk, kid, alg };
}

/** A JWKS / metadata server on 127.0.0.1:0 whose key set and availability tests can change. */
export class JwksServer {
  keys: jose.JWK[] = [];
  down = false;
  requests = 0;
  /** Extra routes: path -> JSON body. */
  readonly routes = new Map<string, unknown>();
  private server: Server | null = null;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      this.requests++;
      if (this.down) {
        res.writeHead(503).end();
        return;
      }
      if (req.url === '/redirect') {
        res.writeHead(302, { location: `${this.url}/jwks` }).end();
        return;
      }
      const body = req.url === '/jwks' ? { keys: this.keys } : this.routes.get(req.url ?? '');
      if (body === undefined) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(typeof body === 'string' ? body : JSON.stringify(body));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  setKeys(...keys: Key[]): void {
    this.keys = keys.map((k) => ({ ...k.publicJwk, kid: k.kid, alg: k.alg, use: 'sig' }));
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => this.server?.close(() => r()));
  }
}

export const RESOURCE = 'https://api.example.com';
export const BASE = 'https://api.example.com';

export function makeConfig(issuer: string, jwksUri: string | undefined, extra: Partial<ConfigInput> = {}): Config {
  return configSchema.parse({
    public_base_url: BASE,
    resource: RESOURCE,
    upstream: { url: 'http://127.0.0.1:3000' },
    issuers: [{ issuer, ...(jwksUri ? { jwks_uri: jwksUri } : {}), algorithms: ['ES256', 'EdDSA', 'RS256', 'PS256'] }],
    ...extra,
  });
}

export interface TokenOptions {
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  omit?: string[];
  jkt?: string | null;
}

export async function mintToken(key: Key, issuer: string, o: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    iss: issuer,
    sub: 'user-1',
    aud: RESOURCE,
    client_id: 'agent-1',
    iat: now,
    exp: now + 300,
    jti: randomUUID(),
    ...(o.jkt === null ? {} : o.jkt !== undefined ? { cnf: { jkt: o.jkt } } : {}),
    ...o.claims,
  };
  for (const k of o.omit ?? []) delete claims[k];
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: key.alg, typ: 'at+jwt', kid: key.kid, ...o.header } as jose.CompactJWSHeaderParameters)
    .sign(key.privateKey);
}

export interface ProofOptions {
  method?: string;
  htu?: string;
  token?: string | null;
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  omit?: string[];
  iat?: number;
}

export async function mintProof(key: Key, o: ProofOptions = {}): Promise<string> {
  const claims: Record<string, unknown> = {
    jti: randomUUID(),
    htm: o.method ?? 'GET',
    htu: o.htu ?? `${BASE}/invoices/1`,
    iat: o.iat ?? Math.floor(Date.now() / 1000),
    ...(o.token ? { ath: createHash('sha256').update(o.token).digest('base64url') } : {}),
    ...o.claims,
  };
  for (const k of o.omit ?? []) delete claims[k];
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: key.alg, typ: 'dpop+jwt', jwk: key.publicJwk, ...o.header } as jose.CompactJWSHeaderParameters)
    .sign(key.privateKey);
}

export async function thumbprint(key: Key): Promise<string> {
  return jose.calculateJwkThumbprint(key.publicJwk, 'sha256');
}

/** A RequestContext with the fields the auth stages read; raw headers as given. */
export function makeCtx(rawHeaders: string[], o: { method?: string; path?: string; audience?: string } = {}): RequestContext {
  const req = { rawHeaders, headers: {} } as unknown as IncomingMessage;
  return newRequestContext({
    id: randomUUID(),
    started: 0,
    req,
    res: {} as ServerResponse,
    method: o.method ?? 'GET',
    path: o.path ?? '/invoices/1',
    search: '',
    clientIp: '127.0.0.1',
    audience: o.audience ?? RESOURCE,
    stage: 'credentials',
  });
}

/** Runs `fn` and returns the Denial code it threw (sync or async), or 'ok'. */
export async function outcome(fn: () => unknown): Promise<DenialCode | 'ok'> {
  try {
    await fn();
    return 'ok';
  } catch (err) {
    if (err instanceof Denial) return err.code;
    throw err;
  }
}
