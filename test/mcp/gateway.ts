/**
 * The whole gateway (Gateway.create + listen, real stages from src/parts.ts) with MCP enabled, and
 * the servers around it: the example MCP server, the development Mission Authority, and a
 * gateway key registered with it for Mission Status (private_key_jwt).
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type * as jose from 'jose';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
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

/** A free port on 127.0.0.1 (the gateway's public URL must be known before it listens: DPoP htu, PRM). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

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
export async function mcpGateway(yaml: string, folder: string): Promise<TestGateway> {
  return startGateway(yaml, { folder });
}
