/**
 * The whole gateway (Gateway.create + listen, real stages from src/parts.ts) with MCP enabled, and
 * the servers around it: the example MCP server, the development Mission Authority, and a
 * gateway key registered with it for Mission Status (private_key_jwt).
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type * as jose from 'jose';
import * as oidc from 'openid-client';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import type { Logger } from '../../src/observability/logger.js';
// @ts-expect-error plain JS example without types
import { startExampleServer } from '../../examples/mcp-server/server.js';

export interface Example {
  readonly url: string;
  readonly calls: Record<string, unknown>[];
  close(): Promise<void>;
}

export async function example(json = false): Promise<Example> {
  const calls: Record<string, unknown>[] = [];
  const s = await startExampleServer({ jsonResponse: json, log: (e: Record<string, unknown>) => calls.push(e) });
  return { url: s.url as string, calls, close: () => s.close() as Promise<void> };
}

import { freePort } from '../../src/demo/free-port.js';

export { freePort };

export async function devAuthority(): Promise<DevAuthority> {
  return startDevAuthority({ quiet: true, heartbeatSeconds: 0, log: () => undefined });
}

/** Writes a gateway client key into `folder` and registers its public half with the authority. */
export function gatewayClientKey(dev: DevAuthority, folder: string, clientId = 'gw-mcp'): string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const file = join(folder, 'gw.jwk');
  writeFileSync(file, JSON.stringify(privateKey.export({ format: 'jwk' })));
  dev.registerClient(clientId, publicKey.export({ format: 'jwk' }) as jose.JWK);
  return file;
}

/** Starts the whole gateway from YAML (src/parts.ts builds the MCP handler). */
export async function mcpGateway(yaml: string, folder: string, logger?: Logger): Promise<TestGateway> {
  return startGateway(yaml, logger === undefined ? { folder } : { folder, logger });
}

/**
 * The stock SDK client whose requests go through openid-client 6 (a DPoP client): a token from the
 * authority's token endpoint bound to a fresh key, a proof per request, and a retry on
 * use_dpop_nonce with the nonce the gateway sent, all done by openid-client.
 */
export async function connectWithDpop(authority: string, mcpUrl: string, missionId: string): Promise<{ client: Client; statuses: number[] }> {
  const config = await oidc.discovery(new URL(authority), 'agent_1', undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
  const DPoP = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
  const token = await oidc.clientCredentialsGrant(config, { resource: mcpUrl, mission_id: missionId }, { DPoP });
  if (token.token_type.toLowerCase() !== 'dpop') throw new Error('expected a DPoP-bound token');
  const statuses: number[] = [];
  const dpopFetch = async (url: string | URL, init?: RequestInit): Promise<Response> => {
    const res = await oidc.fetchProtectedResource(config, token.access_token, new URL(url), init?.method ?? 'GET', (init?.body ?? null) as string | null, new Headers(init?.headers), { DPoP });
    statuses.push(res.status);
    return res;
  };
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { fetch: dpopFetch as typeof fetch });
  const client = new Client({ name: 'dpop-client', version: '1.0.0' });
  await client.connect(transport);
  return { client, statuses };
}
