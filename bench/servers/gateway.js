/**
 * mission-gateway (compiled dist/) in its own process. The config file (JSON, written by the
 * runner so that it can point at upstreams and authorities started on port 0) is argv[2].
 * BENCH_GATEWAY_DIST=/path/to/other/dist benchmarks another build (e.g. a branch) instead.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { serveStats } from '../lib/proc.js';

const dist = resolve(process.env.BENCH_GATEWAY_DIST ?? resolve(dirname(fileURLToPath(import.meta.url)), '../../dist'));
const { Gateway } = await import(pathToFileURL(`${dist}/gateway.js`).href);
const { parseConfigText } = await import(pathToFileURL(`${dist}/config/load.js`).href);

const file = process.argv[2];
try {
  const config = parseConfigText(readFileSync(file, 'utf8'), dirname(file));
  const gw = await Gateway.create({ config }, { defaultMetrics: false });
  const { url, adminUrl } = await gw.listen();
  serveStats();
  process.on('SIGTERM', () => void gw.close(500).then(() => process.exit(0)));
  process.send({ type: 'ready', url, adminUrl });
} catch (err) {
  process.stderr.write(`gateway failed to start: ${err?.problems?.join('; ') ?? err?.stack ?? err}\n`);
  process.exit(1);
}
