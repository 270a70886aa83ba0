/**
 * mission-gateway (compiled dist/) in its own process. The config text arrives over IPC so that the
 * runner can point it at upstreams and authorities started on port 0.
 */
import { Gateway } from '../../dist/gateway.js';
import { parseConfigText } from '../../dist/config/load.js';
import { serveStats } from '../lib/proc.js';

process.once('message', async (m) => {
  try {
    const config = parseConfigText(m.config, m.folder);
    const gw = await Gateway.create({ config }, { defaultMetrics: false });
    const { url, adminUrl } = await gw.listen();
    serveStats();
    process.on('SIGTERM', () => void gw.close(500).then(() => process.exit(0)));
    process.send({ type: 'ready', url, adminUrl });
  } catch (err) {
    process.stderr.write(`gateway failed to start: ${err?.problems?.join('; ') ?? err?.stack ?? err}\n`);
    process.exit(1);
  }
});
