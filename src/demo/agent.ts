/**
 * The demo's scripted agent: its own ES256 DPoP key, a token from the authority's token endpoint
 * (client_credentials + DPoP), and requests that each carry a fresh proof (RFC 9449).
 */
import { createHash, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

export interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The parsed JSON body (the last `data:` event of an SSE answer), or null. */
  readonly json: Record<string, unknown> | null;
}

export interface TokenInfo {
  readonly token: string;
  readonly claims: Record<string, unknown>;
  readonly expiresIn: number | null;
}

export class DemoAgent {
  readonly clientId: string;
  readonly jkt: string;
  private readonly key: KeyObject;
  private readonly header: string;

  constructor(clientId: string) {
    this.clientId = clientId;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const pub = { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
    this.key = privateKey;
    this.jkt = createHash('sha256').update(JSON.stringify(pub)).digest('base64url');
    this.header = b64({ typ: 'dpop+jwt', alg: 'ES256', jwk: pub });
  }

  /** A fresh DPoP proof for one request (its own jti), bound to `accessToken` when given, carrying a server `nonce` when given. */
  proof(htm: string, htu: string, accessToken?: string, nonce?: string): string {
    const payload: Record<string, unknown> = { jti: randomUUID(), htm, htu, iat: Math.floor(Date.now() / 1000) };
    if (accessToken !== undefined) payload['ath'] = createHash('sha256').update(accessToken).digest('base64url');
    if (nonce !== undefined) payload['nonce'] = nonce;
    const input = `${this.header}.${b64(payload)}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key: this.key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  }

  /** client_credentials + DPoP at the authority's token endpoint, for one Mission and one resource. */
  async token(tokenEndpoint: string, missionId: string, resource: string): Promise<TokenInfo> {
    const res = await fetch(tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: this.proof('POST', tokenEndpoint) },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: this.clientId, mission_id: missionId, resource }),
    });
    const body = (await res.json()) as { access_token?: unknown; expires_in?: unknown; error?: unknown };
    if (typeof body.access_token !== 'string') throw new Error(`token request failed: ${res.status} ${String(body.error ?? '')}`);
    const claims = JSON.parse(Buffer.from(body.access_token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
    return { token: body.access_token, claims, expiresIn: typeof body.expires_in === 'number' ? body.expires_in : null };
  }

  /**
   * One request to `base + path`. The DPoP `htu` is the gateway's public URL of the path, which in
   * the demo is where the agent sends it.
   */
  /**
   * Opens a server-sent event stream (GET): `events` counts what arrives, `ended` resolves with
   * 'end' when the server ends it, 'cut' when the connection breaks.
   */
  async stream(base: string, path: string, token: string): Promise<{ status: number; events: () => number; ended: Promise<'end' | 'cut'>; close: () => void }> {
    const abort = new AbortController();
    const res = await fetch(`${base}${path}`, {
      headers: { authorization: `DPoP ${token}`, dpop: this.proof('GET', `${base}${path}`, token), accept: 'text/event-stream' },
      signal: abort.signal,
    });
    let count = 0;
    const reader = res.body!.getReader();
    const ended = (async (): Promise<'end' | 'cut'> => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return 'end';
          count += Buffer.from(value).toString().split('\n\n').length - 1;
        }
      } catch {
        return 'cut';
      }
    })();
    return { status: res.status, events: () => count, ended, close: () => abort.abort() };
  }

  async call(base: string, method: string, path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token !== undefined) {
      headers['authorization'] = `DPoP ${opts.token}`;
      headers['dpop'] = this.proof(method, `${base}${path.split('?')[0]}`, opts.token);
    }
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${base}${path}`, { method, headers, ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }) });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, json: parseBody(text, res.headers.get('content-type')) };
  }
}

function parseBody(text: string, contentType: string | null): Record<string, unknown> | null {
  let candidate = text;
  if (contentType?.startsWith('text/event-stream') === true) {
    const data = text.split('\n').filter((l) => l.startsWith('data:'));
    candidate = data.at(-1)?.slice(5).trim() ?? '';
  }
  try {
    const v: unknown = JSON.parse(candidate);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
