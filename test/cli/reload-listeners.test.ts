/**
 * SIGHUP keeps the open listeners; its "needs a restart" warning compares the new file with the
 * addresses actually listening (host and port), not with the last file loaded. And the start-up
 * line names the address bound (0.0.0.0, not the 127.0.0.1 it is reached at). Real sockets.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';

const gateways: Gateway[] = [];
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.close(100);
});

function yaml(listen: string, admin: string): string {
  return `listen: ${listen}
admin: ${admin}
public_base_url: http://localhost:8080
resource: http://localhost:8080
upstream: { url: http://127.0.0.1:9 }
routes: [{ match: { path: /public/** }, auth: none }]
evidence: { sink: stdout }
`;
}

async function start(text: string): Promise<{ gateway: Gateway; file: string; lines: Record<string, unknown>[]; url: string }> {
  const file = join(mkdtempSync(join(tmpdir(), 'mgw-reload-')), 'gw.yaml');
  writeFileSync(file, text);
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const gateway = await Gateway.create(loadConfigFile(file), { logger: pino({ level: 'info' }, sink), defaultMetrics: false });
  gateways.push(gateway);
  const { url } = await gateway.listen();
  return { gateway, file, lines, url };
}

const warnings = (lines: Record<string, unknown>[]) => lines.filter((l) => l['msg'] === 'listen/admin address changes need a restart; kept the current listeners');

describe('SIGHUP: listener changes are compared with the open listeners', () => {
  it('warns on a port change, not again when the original file comes back; warns on a host change', async () => {
    const original = yaml('{ host: 127.0.0.1, port: 0 }', '{ host: 127.0.0.1, port: 0 }');
    const gw = await start(original);
    const port = Number(new URL(gw.url).port);

    writeFileSync(gw.file, original); // unchanged: no warning
    expect(await gw.gateway.reload()).toBe(true);
    expect(warnings(gw.lines)).toHaveLength(0);

    writeFileSync(gw.file, yaml(`{ host: 127.0.0.1, port: ${port} }`, '{ host: 127.0.0.1, port: 0 }')); // the port bound: same listener
    expect(await gw.gateway.reload()).toBe(true);
    expect(warnings(gw.lines)).toHaveLength(0);

    writeFileSync(gw.file, yaml(`{ host: 127.0.0.1, port: ${port === 65535 ? port - 1 : port + 1} }`, '{ host: 127.0.0.1, port: 0 }'));
    expect(await gw.gateway.reload()).toBe(true);
    expect(warnings(gw.lines)).toHaveLength(1);
    expect(warnings(gw.lines)[0]!['changed']).toEqual([{ listener: 'listen', listening: `127.0.0.1:${port}`, configured: expect.stringMatching(/^127\.0\.0\.1:\d+$/) }]);

    writeFileSync(gw.file, original); // back to what is listening: no second warning
    expect(await gw.gateway.reload()).toBe(true);
    expect(warnings(gw.lines)).toHaveLength(1);

    writeFileSync(gw.file, yaml('{ host: 127.0.0.1, port: 0 }', '{ host: 0.0.0.0, port: 0 }')); // host only
    expect(await gw.gateway.reload()).toBe(true);
    expect(warnings(gw.lines)).toHaveLength(2);
    expect(warnings(gw.lines)[1]!['changed']).toEqual([{ listener: 'admin', listening: expect.stringMatching(/^127\.0\.0\.1:\d+$/), configured: '0.0.0.0:0' }]);
  });

  it('the start-up line names the address bound: 0.0.0.0 when listening on every interface', async () => {
    const gw = await start(yaml('{ host: 0.0.0.0, port: 0 }', '{ host: 127.0.0.1, port: 0 }'));
    const line = gw.lines.find((l) => l['msg'] === 'mission-gateway listening')!;
    expect(line['listen']).toMatch(/^0\.0\.0\.0:\d+$/);
    expect(line['admin']).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(line['url']).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/); // where to reach it from this host
  });
});
