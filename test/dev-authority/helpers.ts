/** Client-side helpers for dev-authority tests: real DPoP proofs and private_key_jwt assertions. */
import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { vi } from 'vitest';
import { devAuthorityCli, startDevAuthority, type DevAuthority, type DevAuthorityOptions } from '../../src/dev-authority/index.js';

export interface ClientKey {
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  readonly jkt: string;
}

export async function clientKey(): Promise<ClientKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const publicJwk = await exportJWK(publicKey);
  return { privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk, 'sha256') };
}

export function dpopProof(key: ClientKey, htu: string, opts: { htm?: string; iat?: number; jti?: string; jwk?: JWK; typ?: string } = {}): Promise<string> {
  return new SignJWT({ htm: opts.htm ?? 'POST', htu, jti: opts.jti ?? randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: opts.typ ?? 'dpop+jwt', jwk: opts.jwk ?? key.publicJwk })
    .setIssuedAt(opts.iat ?? Math.floor(Date.now() / 1000))
    .sign(key.privateKey);
}

export function clientAssertion(key: ClientKey, clientId: string, aud: string, opts: { jti?: string; exp?: number; sub?: string } = {}): Promise<string> {
  return new SignJWT({ jti: opts.jti ?? randomUUID() })
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuer(clientId)
    .setSubject(opts.sub ?? clientId)
    .setAudience(aud)
    .setIssuedAt()
    .setExpirationTime(opts.exp ?? Math.floor(Date.now() / 1000) + 60)
    .sign(key.privateKey);
}

export function postForm(url: string, params: Record<string, string | string[]>, headers: Record<string, string> = {}): Promise<Response> {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const one of [v].flat()) body.append(k, one);
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body });
}

export function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

export const API = 'https://api.example.com';
export const MAIL = 'https://mail.example.com/mcp';

export const ENTRIES = [
  { type: 'mission_resource_access', resource: API, actions: ['invoices.read'] },
  { type: 'mission_resource_access', resource: API, actions: ['payments.create'], constraints: { max_amount: { amount: '500.00', currency: 'USD' } } },
  { type: 'mission_resource_access', resource: MAIL, actions: ['send_message'], constraints: { recipient_domain: 'example.com' } },
];

export function start(opts: DevAuthorityOptions = {}): Promise<DevAuthority> {
  return startDevAuthority({ quiet: true, ...opts });
}

export async function newMission(dev: DevAuthority, extra: Record<string, unknown> = {}): Promise<string> {
  const m = await dev.missions.create({ subject: 'user_3p2q8mN1a0kV7tR', client_id: 'agent-1', purpose: 'https://example.com/purposes/reconcile', authorization_details: ENTRIES, ...extra });
  return m.id;
}

/** Runs the dev-authority CLI in process, capturing what it writes. */
export async function runCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true));
  try {
    return { code: await devAuthorityCli(argv), out, err };
  } finally {
    vi.restoreAllMocks();
  }
}
