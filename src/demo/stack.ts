/**
 * Everything the demo runs, in this process: the development Mission Authority, the sample API and
 * the example MCP server, each behind its own gateway, with evidence written (and signed) to files
 * in a temporary folder. close() stops all of it, so the demo leaves nothing running.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseConfigText } from '../config/load.js';
import { startDevAuthority, type DevAuthority } from '../dev-authority/index.js';
import { Gateway } from '../gateway.js';
import { createLogger } from '../observability/logger.js';
import { freePort } from './free-port.js';

interface Closeable {
  readonly url: string;
  close(): Promise<void>;
}

interface ExampleModule {
  startSampleApi(opts: { port?: number; host?: string }): Promise<Closeable>;
}

interface McpModule {
  startExampleServer(opts: { port?: number; host?: string; jsonResponse?: boolean }): Promise<Closeable>;
}

export interface DemoGateway {
  readonly gateway: Gateway;
  /** public_base_url: where the agent sends requests, and the DPoP htu base. */
  readonly url: string;
  readonly adminUrl: string;
  readonly evidenceFile: string;
}

export interface Stack {
  readonly dev: DevAuthority;
  readonly api: Closeable;
  readonly mcpServer: Closeable;
  readonly apiGateway: DemoGateway;
  readonly mcpGateway: DemoGateway;
  /** The resource identifiers tokens are minted for. */
  readonly apiResource: string;
  readonly mcpResource: string;
  readonly folder: string;
  readonly evidenceKey: KeyObject;
  /** Stops the gateways (flushing evidence), then the servers and the authority. */
  closeGateways(): Promise<void>;
  close(): Promise<void>;
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const importExample = async <T>(rel: string): Promise<T> => (await import(pathToFileURL(join(root, rel)).href)) as T;

function writeKey(folder: string, name: string): { file: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const file = join(folder, `${name}.jwk`);
  writeFileSync(file, JSON.stringify({ ...privateKey.export({ format: 'jwk' }), alg: 'ES256', kid: name }), { mode: 0o600 });
  return { file, publicKey };
}

async function startGateway(yaml: string, folder: string, evidenceFile: string): Promise<DemoGateway> {
  const config = parseConfigText(yaml, folder);
  // Gateway logs (warnings only) go to stderr; the demo's story is on stdout.
  const gateway = await Gateway.create({ config }, { defaultMetrics: false, logger: createLogger('warn', process.stderr) });
  const { adminUrl } = await gateway.listen();
  return { gateway, url: config.public_base_url.replace(/\/$/, ''), adminUrl, evidenceFile };
}

export async function startStack(host = '127.0.0.1'): Promise<Stack> {
  const folder = mkdtempSync(join(tmpdir(), 'mission-gateway-demo-'));
  const started: Closeable[] = [];
  try {
    const dev = await startDevAuthority({ host, quiet: true });
    started.push({ url: dev.url, close: () => dev.close() });
    const { startSampleApi } = await importExample<ExampleModule>('examples/sample-api/server.js');
    const { startExampleServer } = await importExample<McpModule>('examples/mcp-server/server.js');
    const api = await startSampleApi({ host });
    started.push(api);
    const mcpServer = await startExampleServer({ host, jsonResponse: true });
    started.push(mcpServer);

    const gwKey = writeKey(folder, 'gw-demo');
    dev.registerClient('gw-demo', { ...gwKey.publicKey.export({ format: 'jwk' }), alg: 'ES256', kid: 'gw-demo' });
    const evidence = writeKey(folder, 'evidence');

    const apiPort = await freePort();
    const apiBase = `http://${host}:${apiPort}`;
    const apiEvidence = join(folder, 'api-evidence.jsonl');
    const common = (evidenceFile: string): string => `
issuers:
  - issuer: ${dev.url}
    algorithms: [ES256]
mission:
  client: { client_id: gw-demo, private_key_file: ${gwKey.file} }
evidence:
  sink: ${evidenceFile}
  sign: { private_key_file: ${evidence.file} }
log: { level: warn }
`;
    const apiGateway = await startGateway(
      `
listen: { host: ${host}, port: ${apiPort} }
admin: { host: ${host}, port: 0 }
public_base_url: ${apiBase}
resource: ${apiBase}
upstream: { url: ${api.url} }
routes:
  - match: { path: /public/** }
    auth: none
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
  - match: { method: DELETE, path: /invoices/* }
    action: invoices.delete
  - match: { method: POST, path: /payments }
    action: payments.create
    params:
      amount: { body: /amount }
      currency: { body: /currency }
      recipient: { body: /to }
${common(apiEvidence)}`,
      folder,
      apiEvidence,
    );
    started.push({ url: apiGateway.url, close: () => apiGateway.gateway.close(1000) });

    const mcpPort = await freePort();
    const mcpBase = `http://${host}:${mcpPort}`;
    const mcpEvidence = join(folder, 'mcp-evidence.jsonl');
    const mcpGateway = await startGateway(
      `
listen: { host: ${host}, port: ${mcpPort} }
admin: { host: ${host}, port: 0 }
public_base_url: ${mcpBase}
resource: ${mcpBase}
upstream: { url: ${new URL(mcpServer.url).origin} }
routes: []
mcp: { path: /mcp, resource: ${mcpBase}/mcp }
${common(mcpEvidence)}`,
      folder,
      mcpEvidence,
    );
    started.push({ url: mcpGateway.url, close: () => mcpGateway.gateway.close(1000) });

    // Lifecycle events reach both gateways by RFC 8935 push.
    dev.addReceiver({ endpoint: `${apiBase}/.well-known/ssf/push`, audience: apiBase });
    dev.addReceiver({ endpoint: `${mcpBase}/.well-known/ssf/push`, audience: mcpBase });

    let gatewaysClosed = false;
    const closeGateways = async (): Promise<void> => {
      if (gatewaysClosed) return;
      gatewaysClosed = true;
      await Promise.allSettled([apiGateway.gateway.close(1000), mcpGateway.gateway.close(1000)]);
    };
    return {
      dev,
      api,
      mcpServer,
      apiGateway,
      mcpGateway,
      apiResource: apiBase,
      mcpResource: `${mcpBase}/mcp`,
      folder,
      evidenceKey: evidence.publicKey,
      closeGateways,
      async close() {
        await closeGateways();
        await Promise.allSettled([api.close(), mcpServer.close()]);
        await dev.close();
        rmSync(folder, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    rmSync(folder, { recursive: true, force: true });
    throw err;
  }
}
