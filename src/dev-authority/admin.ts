/**
 * Admin API (JSON, under `/admin`, optionally guarded by a bearer token): Missions and their
 * lifecycle, Status clients, SET receivers, poll streams, key rotation. Illegal transitions are 409.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { JSONWebKeySet, JWK } from 'jose';
import { HttpError, NO_STORE, oauthError, readJson, sendJson } from './http.js';
import type { MissionCreate, MissionsApi, SuspendInput } from './lifecycle.js';
import { MissionError } from './missions.js';
import { ProofError } from './proofs.js';
import type { Receiver } from './ssf.js';

export interface AdminDeps {
  readonly token: string | undefined;
  readonly missions: MissionsApi;
  registerClient(clientId: string, keys: JWK | JSONWebKeySet, opts?: { audiences?: readonly string[] }): void;
  addReceiver(r: Receiver): void;
  addPollAudience(audience: string): string;
  rotateKey(): Promise<void>;
  kid(): string;
}

const EVENTS = new Set(['suspend', 'resume', 'revoke', 'complete', 'expire', 'supersede', 'cascade']);
const STATUS: Readonly<Record<MissionError['code'], number>> = { not_found: 404, conflict: 409, invalid_request: 400 };

function authorized(req: IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true;
  const given = Buffer.from(req.headers.authorization ?? '');
  const want = Buffer.from(`Bearer ${token}`);
  return given.length === want.length && timingSafeEqual(given, want);
}

const str = (body: Record<string, unknown>, name: string): string => {
  const v = body[name];
  if (typeof v !== 'string' || v.length === 0) throw oauthError(400, 'invalid_request', `${name} must be a non-empty string`);
  return v;
};

export function adminHandler(deps: AdminDeps): (req: IncomingMessage, res: ServerResponse, path: string) => Promise<void> {
  return async (req, res, path) => {
    if (!authorized(req, deps.token)) throw new HttpError(401, { error: 'unauthorized', error_description: 'admin authentication is required' }, { 'www-authenticate': 'Bearer' });
    try {
      const [status, body] = await route(deps, req, path.split('/').filter((s) => s !== ''));
      sendJson(res, status, body, NO_STORE);
    } catch (e) {
      if (e instanceof MissionError) throw oauthError(STATUS[e.code], e.code, e.message);
      if (e instanceof ProofError) throw oauthError(400, 'invalid_request', e.message);
      throw e;
    }
  };
}

async function route(deps: AdminDeps, req: IncomingMessage, seg: string[]): Promise<[number, unknown]> {
  const method = req.method ?? 'GET';
  const [collection, id, verb, extra] = seg;
  if (extra !== undefined) throw oauthError(404, 'not_found', 'no such admin resource');

  if (collection === 'missions') {
    if (id === undefined) {
      if (method === 'GET') return [200, { missions: deps.missions.list() }];
      if (method === 'POST') return [201, await deps.missions.create((await readJson(req)) as unknown as MissionCreate)];
    } else if (verb === undefined && method === 'GET') {
      const m = deps.missions.get(id);
      if (m === undefined) throw oauthError(404, 'not_found', 'unknown Mission');
      return [200, m];
    } else if (method === 'POST' && verb === 'authority') {
      return [200, await deps.missions.changeAuthority(id, (await readJson(req))['authorization_details'] as unknown[])];
    } else if (method === 'POST' && verb !== undefined && EVENTS.has(verb)) {
      const body = await readJson(req);
      if (verb === 'suspend') return [200, await deps.missions.suspend(id, body as SuspendInput)];
      if (verb === 'supersede') return [200, await deps.missions.supersede(id, typeof body['successor'] === 'string' ? body['successor'] : undefined)];
      return [200, await deps.missions[verb as 'resume' | 'revoke' | 'complete' | 'expire' | 'cascade'](id)];
    }
  } else if (collection === 'clients' && id === undefined && method === 'POST') {
    const body = await readJson(req);
    const keys = (body['jwks'] ?? body['jwk']) as JWK | JSONWebKeySet | undefined;
    if (typeof keys !== 'object' || keys === null) throw oauthError(400, 'invalid_request', 'jwk or jwks is required');
    const audiences = body['audiences'];
    if (audiences !== undefined && !(Array.isArray(audiences) && audiences.every((a) => typeof a === 'string'))) {
      throw oauthError(400, 'invalid_request', 'audiences must be an array of strings');
    }
    const clientId = str(body, 'client_id');
    deps.registerClient(clientId, keys, audiences === undefined ? {} : { audiences: audiences as string[] });
    return [201, { client_id: clientId }];
  } else if (collection === 'receivers' && id === undefined && method === 'POST') {
    const body = await readJson(req);
    const auth = body['authorization'];
    const r: Receiver = { endpoint: str(body, 'endpoint'), audience: str(body, 'audience'), ...(typeof auth === 'string' ? { authorizationHeader: auth } : {}) };
    try {
      deps.addReceiver(r);
    } catch {
      throw oauthError(400, 'invalid_request', 'endpoint must be an absolute URL');
    }
    return [201, { endpoint: r.endpoint, audience: r.audience }];
  } else if (collection === 'poll-audiences' && id === undefined && method === 'POST') {
    const audience = str(await readJson(req), 'audience');
    return [201, { audience, endpoint: deps.addPollAudience(audience) }];
  } else if (collection === 'keys' && id === 'rotate' && verb === undefined && method === 'POST') {
    await deps.rotateKey();
    return [200, { kid: deps.kid() }];
  }
  throw oauthError(404, 'not_found', 'no such admin resource');
}
