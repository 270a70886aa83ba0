/**
 * A loopback port for a listener whose URL must be known before it listens (a gateway's public
 * URL goes into its own config: DPoP `htu`, protected-resource metadata, an AS issuer).
 *
 * The port is picked below the kernel's ephemeral range and checked free. A port taken with
 * `listen(0)` and closed again comes from that range, so any outgoing connection in the meantime
 * (another test, another process) may be given it as its local port before the caller listens on
 * it again: EADDRINUSE, now and then. Ports below the range are never handed out implicitly.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const FLOOR = 20_000;

function ephemeralStart(): number {
  try {
    const [lo] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo !== undefined && Number.isInteger(lo) && lo > FLOOR + 1000) return lo;
  } catch {
    // not Linux: the IANA dynamic range starts at 49152; Linux's default at 32768
  }
  return 32_768;
}

const CEILING = ephemeralStart();

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/** A free port on `host` (default 127.0.0.1), outside the ephemeral range. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = FLOOR + Math.floor(Math.random() * (CEILING - FLOOR));
    if (await bindable(port, host)) return port;
  }
  throw new Error('no free port below the ephemeral range');
}
