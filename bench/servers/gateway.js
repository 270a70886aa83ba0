/**
 * mission-gateway (compiled dist/) in its own process. The config file (JSON, written by the
 * runner so that it can point at upstreams and authorities started on port 0) is argv[2].
 */
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Gateway } from '../../dist/gateway.js';
import { parseConfigText } from '../../dist/config/load.js';
import { serveStats } from '../lib/proc.js';

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
