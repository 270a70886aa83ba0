/**
 * docs/mcp.md section 1 is true: config/mcp.yaml (only its ports, upstream and authority
 * substituted) in front of the example server, with the Mission the docs show and a DPoP client.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as jose from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, startGateway } from '../helpers/gateway.js';
import { connectWithDpop, devAuthority, example, freePort } from './gateway.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/**
 * config/mcp.yaml (only its ports, upstream and authority substituted) in front of the example
 * server, with the dev authority pushing lifecycle SETs to it.
 */
async function exampleStack() {
  const dev = await devAuthority();
  cleanups.push(() => dev.close());
  const upstream = await example();
  cleanups.push(() => upstream.close());
  const folder = mkdtempSync(join(tmpdir(), 'mgw-mcp-example-'));
  mkdirSync(join(folder, 'keys'));
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileSync(join(folder, 'keys', 'gw-mcp.jwk'), JSON.stringify(privateKey.export({ format: 'jwk' })));
  dev.registerClient('gw-mcp', publicKey.export({ format: 'jwk' }) as jose.JWK);
  const port = await freePort();
  const yaml = readFileSync('config/mcp.yaml', 'utf8').replaceAll('localhost:8080', `127.0.0.1:${port}`).replace('port: 8080', `port: ${port}`).replace('port: 9090', 'port: 0');
  const gw = await startGateway(yaml, { folder, env: { MCP_UPSTREAM_URL: new URL(upstream.url).origin, AUTHORITY_URL: dev.url } });
  cleanups.push(() => gw.close());
  dev.addReceiver({ endpoint: `http://127.0.0.1:${port}/.well-known/ssf/push`, audience: `http://127.0.0.1:${port}` });
  return { dev, upstream, folder, gw, mcpUrl: `http://127.0.0.1:${port}/mcp` };
}

describe('docs/mcp.md: config/mcp.yaml protecting the example server', () => {
  it('list filtered, allowed call, call over its amount bound denied, send_email denied, revocation denies the next call', async () => {
    const { dev, upstream, folder, mcpUrl } = await exampleStack();

    const m = await dev.missions.create({
      subject: 'agent_1',
      client_id: 'agent_1',
      purpose: 'pay vendor invoices',
      authorization_details: [
        { type: 'mission_resource_access', resource: mcpUrl, actions: ['invoices.read'] },
        { type: 'mission_resource_access', resource: mcpUrl, actions: ['payments.create'], constraints: { max_amount: { amount: '1000.00', currency: 'USD' } } },
      ],
    });
    const { client } = await connectWithDpop(dev.url, mcpUrl, m.id);
    cleanups.push(() => client.close());

    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['get_invoice', 'pay_invoice']);
    expect((await client.callTool({ name: 'get_invoice', arguments: { invoice_id: 'inv_1002' } })).structuredContent).toMatchObject({ amount: '12500.00' });
    const over = await client.callTool({ name: 'pay_invoice', arguments: { invoice_id: 'inv_1002', amount: '12500.00', currency: 'USD' } });
    expect(over).toMatchObject({ isError: true, structuredContent: { denial_reason: 'parameter_violation' } });
    const mail = await client.callTool({ name: 'send_email', arguments: { to: 'x@example.com', subject: 's', body: 'b' } });
    expect(mail).toMatchObject({ isError: true, structuredContent: { denial_reason: 'out_of_authority' } });
    expect((await client.callTool({ name: 'pay_invoice', arguments: { invoice_id: 'inv_1001', amount: '420.00', currency: 'USD' } })).structuredContent).toMatchObject({ status: 'paid' });

    await dev.missions.revoke(m.id);
    await expect(client.callTool({ name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } })).rejects.toThrow(/mission_terminated/);
    expect(upstream.calls.map((c) => c['tool'])).toEqual(['get_invoice', 'pay_invoice']);
    const records = (await eventually(() => {
      const r = readFileSync(join(folder, 'evidence-mcp.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      return r.some((x) => x['denial_reason'] === 'mission_inactive') ? r : null;
    }))!;
    expect(records.filter((r) => r['tool'] !== undefined).map((r) => [r['action'], r['decision'], r['denial_reason']])).toEqual([
      ['invoices.read', 'permit', null],
      ['payments.create', 'deny', 'parameter_violation'],
      ['email.send', 'deny', 'out_of_authority'],
      ['payments.create', 'permit', null],
    ]);
  });

  it('a long tool call whose Mission is suspended mid-way: the stock SDK client gets the tool error at once, not its timeout (r21c)', async () => {
    const { dev, gw, mcpUrl } = await exampleStack();
    const m = await dev.missions.create({
      subject: 'agent_1',
      client_id: 'agent_1',
      purpose: 'export the quarter',
      authorization_details: [{ type: 'mission_resource_access', resource: mcpUrl, actions: ['reports.export'] }],
    });
    const { client } = await connectWithDpop(dev.url, mcpUrl, m.id);
    cleanups.push(() => client.close());

    let progress = 0;
    const started = performance.now();
    // 40 steps of 100 ms: four seconds of work, suspended after the second progress notification.
    const call = client.callTool({ name: 'export_report', arguments: { steps: 40, delay_ms: 100 } }, undefined, {
      timeout: 10_000,
      onprogress: () => {
        progress += 1;
        if (progress === 2) void dev.missions.suspend(m.id, {});
      },
    });
    const result = await call;
    expect(result).toMatchObject({ isError: true, structuredContent: { ok: false, error: 'mission_suspended', denial_reason: 'mission_inactive', mission_status: 'suspended' } });
    expect(performance.now() - started).toBeLessThan(3000);
    expect(progress).toBeLessThan(40);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    // The call's stream, and the client's GET stream when it had opened it.
    expect(metrics).toMatch(/^mission_gateway_exchanges_cut_total\{cause="state_change"\} [12]$/m);
  });
});
