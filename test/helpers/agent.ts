/** An agent as a real client would be: its own DPoP key, tokens from the authority's token endpoint. */
import { createHash, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { DevAuthority } from '../../src/dev-authority/index.js';

export interface Agent {
  readonly jkt: string;
  readonly publicJwk: JWK;
  proof(method: string, htu: string, accessToken?: string, extra?: Record<string, unknown>): Promise<string>;
  token(dev: DevAuthority, missionId: string, resource: string, params?: Record<string, string>): Promise<string>;
}

export async function newAgent(): Promise<Agent> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const publicJwk = await exportJWK(publicKey);
  const jkt = await calculateJwkThumbprint(publicJwk, 'sha256');
  const proof = (method: string, htu: string, accessToken?: string, extra: Record<string, unknown> = {}): Promise<string> =>
    signProof(privateKey, publicJwk, method, htu, accessToken, extra);
  return {
    jkt,
    publicJwk,
    proof,
    async token(dev, missionId, resource, params = {}) {
      const res = await fetch(dev.endpoints.token, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await proof('POST', dev.endpoints.token) },
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'agent-1', mission_id: missionId, resource, ...params }),
      });
      const body = (await res.json()) as { access_token?: string; error?: string };
      if (body.access_token === undefined) throw new Error(`token request failed: ${JSON.stringify(body)}`);
      return body.access_token;
    },
  };
}

function signProof(key: CryptoKey, jwk: JWK, htm: string, htu: string, accessToken: string | undefined, extra: Record<string, unknown>): Promise<string> {
  const payload: Record<string, unknown> = { htm, htu, jti: randomUUID(), ...extra };
  if (accessToken !== undefined) payload['ath'] = createHash('sha256').update(accessToken).digest('base64url');
  const jwt = new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk });
  return (payload['iat'] === undefined ? jwt.setIssuedAt() : jwt).sign(key);
}

/** Writes a fresh private JWK for the gateway's Mission Status client and registers it at the authority. */
export async function gatewayClientKey(dev: DevAuthority, folder: string, clientId = 'gw-api'): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const file = join(folder, `${clientId}.jwk`);
  writeFileSync(file, JSON.stringify({ ...(await exportJWK(privateKey)), alg: 'ES256', kid: clientId }));
  dev.registerClient(clientId, { ...(await exportJWK(publicKey)), alg: 'ES256', kid: clientId });
  return file;
}
