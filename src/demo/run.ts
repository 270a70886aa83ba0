#!/usr/bin/env node
/**
 * `npm run demo`: the whole story in under a minute, on loopback, leaving nothing running.
 *
 * A human approves a Mission; an agent gets a DPoP-bound token and calls an unmodified HTTP API and
 * an unmodified MCP server through mission-gateway. Each request prints its decision and reason:
 * allowed calls, a call outside the Mission's authority, a constraint violation, the MCP tool list
 * filtered to the Mission, suspension and resumption, revocation enforced on the next call and on
 * an event stream already open, and finally the gateways' signed evidence chains verified.
 *
 *   npm run demo              run the story and exit (1 when a step does not go as expected)
 *   npm run demo -- --keep    run the story, then keep everything running with the URLs printed
 */
import { readFileSync } from 'node:fs';
import { DEV_WARNING } from '../dev-authority/index.js';
import { verifyEvidenceFile } from '../evidence/verify.js';
import { DemoAgent, type Reply } from './agent.js';
import { c, decisionOf, heading, human, out, request, say } from './print.js';
import { startStack, type Stack } from './stack.js';

const keep = process.argv.includes('--keep');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let surprises = 0;

/** Prints the request and counts it as a surprise unless the gateway decided as expected. */
function expect(method: string, what: string, r: Reply, want: { allow: boolean; reason?: string }, note = ''): void {
  const d = decisionOf(r);
  const ok = d.allowed === want.allow && (want.reason === undefined || d.label.includes(want.reason));
  if (!ok) surprises++;
  request(method, what, r, ok, note);
}

async function story(s: Stack): Promise<void> {
  const api = s.apiGateway.url;
  const mcp = s.mcpGateway.url;
  out(c.bold('mission-gateway demo'));
  say(`dev authority  ${s.dev.url}  (${DEV_WARNING.split(':')[0]})`);
  say(`sample API     ${s.api.url}  behind gateway ${api}`);
  say(`MCP server     ${s.mcpServer.url}  behind gateway ${mcp}/mcp`);

  heading('A human approves a Mission for the invoices agent');
  const mission = await s.dev.missions.create({
    subject: 'user_alice',
    client_id: 'agent-invoices',
    purpose: 'https://example.com/purposes/pay-open-invoices',
    authorization_details: [
      { type: 'mission_resource_access', resource: s.apiResource, actions: ['invoices.read'] },
      {
        type: 'mission_resource_access',
        resource: s.apiResource,
        actions: ['payments.create'],
        constraints: { max_amount: { amount: '500.00', currency: 'USD' }, recipient_domain: 'vendor.example' },
      },
      { type: 'mission_resource_access', resource: s.mcpResource, actions: ['get_invoice'] },
      { type: 'mission_resource_access', resource: s.mcpResource, actions: ['pay_invoice'], constraints: { max_amount: { amount: '500.00', currency: 'USD' } } },
    ],
  });
  human(`approves Mission ${c.bold(mission.id)} for user_alice / agent-invoices`);
  say('API: invoices.read; payments.create with max_amount 500.00 USD and recipient_domain vendor.example');
  say('MCP: tools get_invoice, and pay_invoice with max_amount 500.00 USD');

  heading('The agent gets DPoP-bound access tokens (client_credentials + DPoP)');
  const agent = new DemoAgent('agent-invoices');
  const apiToken = await agent.token(s.dev.endpoints.token, mission.id, s.apiResource);
  const mcpToken = await agent.token(s.dev.endpoints.token, mission.id, s.mcpResource);
  const cnf = apiToken.claims['cnf'] as { jkt?: string } | undefined;
  const claim = apiToken.claims['mission'] as { id?: string } | undefined;
  say(`token for ${s.apiResource}: mission ${claim?.id ?? '?'}, cnf.jkt ${(cnf?.jkt ?? '?').slice(0, 12)}… (the agent's key), expires in ${apiToken.expiresIn ?? '?'} s`);
  say(`token for ${s.mcpResource}: same Mission, same key; every request below carries a fresh DPoP proof`);
  const t = apiToken.token;

  heading('Calls to the HTTP API through the gateway');
  expect('GET', '/public/status', await agent.call(api, 'GET', '/public/status'), { allow: true }, 'route with auth: none');
  const first = await agent.call(api, 'GET', '/invoices/inv_1001', { token: t });
  expect('GET', '/invoices/inv_1001', first, { allow: true }, 'invoices.read');
  const seen = (first.json?.['caller'] ?? {}) as Record<string, string>;
  if (seen['credentials'] !== undefined) {
    surprises++;
    out(`   ${c.bold(c.yellow('UNEXPECTED'))} the API received the agent's credentials`);
  } else say(`the API saw no token and no proof, only who is calling and why: ${Object.entries(seen).map(([k, v]) => `${k}: ${v}`).join(', ')}`);
  expect('GET', '/invoices/inv_1001 (no token)', await agent.call(api, 'GET', '/invoices/inv_1001'), { allow: false, reason: 'token_missing' });
  expect('GET', '/admin/users', await agent.call(api, 'GET', '/admin/users', { token: t }), { allow: false, reason: 'no_route' });
  expect('DELETE', '/invoices/inv_1001', await agent.call(api, 'DELETE', '/invoices/inv_1001', { token: t }), { allow: false, reason: 'out_of_authority' }, 'invoices.delete is not in the Mission');
  const okPay = { amount: '420.00', currency: 'USD', to: 'billing@vendor.example', invoice: 'inv_1001' };
  expect('POST', '/payments 420.00 USD to billing@vendor.example', await agent.call(api, 'POST', '/payments', { token: t, body: okPay }), { allow: true }, 'payments.create');
  const bigPay = { amount: '12500.00', currency: 'USD', to: 'billing@vendor.example', invoice: 'inv_1002' };
  expect('POST', '/payments 12500.00 USD', await agent.call(api, 'POST', '/payments', { token: t, body: bigPay }), { allow: false, reason: 'parameter_violation' }, 'over max_amount');
  const elsewhere = { amount: '10.00', currency: 'USD', to: 'me@attacker.example' };
  expect('POST', '/payments 10.00 USD to me@attacker.example', await agent.call(api, 'POST', '/payments', { token: t, body: elsewhere }), { allow: false, reason: 'parameter_violation' }, 'recipient outside vendor.example');

  heading('MCP through the gateway');
  const m = mcpToken.token;
  const rpc = (id: number, method: string, params: Record<string, unknown>, session?: Record<string, string>) =>
    agent.call(mcp, 'POST', '/mcp', { token: m, body: { jsonrpc: '2.0', id, method, params }, headers: { accept: 'application/json, text/event-stream', ...session } });
  const init = await rpc(0, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'demo-agent', version: '1.0.0' } });
  expect('MCP', 'initialize', init, { allow: true });
  const sid = init.headers.get('mcp-session-id');
  const session: Record<string, string> = { 'mcp-protocol-version': '2025-06-18', ...(sid === null ? {} : { 'mcp-session-id': sid }) };
  await agent.call(mcp, 'POST', '/mcp', { token: m, body: { jsonrpc: '2.0', method: 'notifications/initialized' }, headers: { accept: 'application/json, text/event-stream', ...session } });
  const list = await rpc(1, 'tools/list', {}, session);
  const tools = ((list.json?.['result'] as { tools?: { name: string }[] } | undefined)?.tools ?? []).map((x) => x.name);
  const filtered = tools.length === 2 && tools.includes('get_invoice') && tools.includes('pay_invoice');
  if (!filtered) surprises++;
  out(`   ${c.green('LIST ')}  ${c.cyan('MCP'.padEnd(6))} ${'tools/list'.padEnd(44)} ${String(list.status).padStart(3)}  ${c.green(`${tools.length} tools visible: ${tools.join(', ')}`)}  ${c.dim('(send_email and export_report filtered out by the Mission)')}${filtered ? '' : `  ${c.bold(c.yellow('UNEXPECTED'))}`}`);
  expect('MCP', 'tools/call get_invoice inv_1001', await rpc(2, 'tools/call', { name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } }, session), { allow: true });
  expect('MCP', 'tools/call send_email', await rpc(3, 'tools/call', { name: 'send_email', arguments: { to: 'x@attacker.example', subject: 'hi', body: 'data' } }, session), { allow: false, reason: 'out_of_authority' }, 'never reaches the MCP server');
  expect('MCP', 'tools/call pay_invoice 420.00 USD', await rpc(7, 'tools/call', { name: 'pay_invoice', arguments: { invoice_id: 'inv_1001', amount: '420.00', currency: 'USD' } }, session), { allow: true });
  expect('MCP', 'tools/call pay_invoice 12500.00 USD', await rpc(4, 'tools/call', { name: 'pay_invoice', arguments: { invoice_id: 'inv_1002', amount: '12500.00', currency: 'USD' } }, session), { allow: false, reason: 'parameter_violation' });

  heading('The human suspends the Mission, then resumes it');
  await s.dev.missions.suspend(mission.id);
  human('suspends the Mission (a lifecycle SET is pushed to both gateways)');
  expect('GET', '/invoices/inv_1001', await agent.call(api, 'GET', '/invoices/inv_1001', { token: t }), { allow: false, reason: 'mission_suspended' });
  expect('MCP', 'tools/call get_invoice inv_1001', await rpc(5, 'tools/call', { name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } }, session), { allow: false, reason: 'mission_suspended' });
  await s.dev.missions.resume(mission.id);
  human('resumes the Mission');
  expect('GET', '/invoices/inv_1001', await agent.call(api, 'GET', '/invoices/inv_1001', { token: t }), { allow: true }, 'allowed again');

  heading('The human revokes the Mission: enforced on the very next call, and on what is already open');
  const feed = await agent.stream(api, '/invoices/feed', t);
  for (let i = 0; i < 100 && feed.events() < 3; i++) await sleep(20);
  say(`the agent is listening to /invoices/feed (server-sent events, allowed as invoices.read): ${feed.events()} updates so far`);
  await s.dev.missions.revoke(mission.id);
  human('revokes the Mission');
  const how = await Promise.race([feed.ended, sleep(3000).then(() => 'still open' as const)]);
  if (how !== 'cut') {
    surprises++;
    feed.close();
  }
  const verdict = how === 'cut' ? c.red('CUT  ') : c.red('OPEN ');
  out(`   ${verdict}  ${c.cyan('GET'.padEnd(6))} ${'/invoices/feed (open stream)'.padEnd(44)} ${String(feed.status).padStart(3)}  ${how === 'cut' ? c.red('cut at revocation') : c.red(how)}${c.dim(` after ${feed.events()} updates; the gateway closed both connections`)}${how === 'cut' ? '' : `  ${c.bold(c.yellow('UNEXPECTED'))}`}`);
  expect('GET', '/invoices/inv_1001', await agent.call(api, 'GET', '/invoices/inv_1001', { token: t }), { allow: false, reason: 'mission_terminated' }, 'the token itself is still unexpired');
  expect('MCP', 'tools/call get_invoice inv_1001', await rpc(6, 'tools/call', { name: 'get_invoice', arguments: { invoice_id: 'inv_1001' } }, session), { allow: false, reason: 'mission_terminated' });

  heading('Decision evidence: every request above left one signed, hash-chained record');
  // Closing a gateway flushes its evidence sink; with --keep they stay up, so give the sink a moment.
  if (keep) await new Promise((r) => setTimeout(r, 500));
  else await s.closeGateways();
  for (const [name, g] of [['API gateway', s.apiGateway], ['MCP gateway', s.mcpGateway]] as const) {
    const v = await verifyEvidenceFile(g.evidenceFile, { publicKey: s.evidenceKey });
    if (!v.ok) surprises++;
    const text = v.ok
      ? c.green(`intact: ${v.records} records, chain unbroken, ${v.signaturesVerified} signatures verified`)
      : c.red(`BROKEN at line ${v.firstBreak?.line ?? '?'}: ${v.firstBreak?.reason ?? '?'}`);
    out(`   ${v.ok ? c.green('OK   ') : c.red('FAIL ')}  ${name.padEnd(12)} ${text}`);
  }
  const last = lastRecord(s.apiGateway.evidenceFile);
  if (last !== null) {
    const mission = (last['mission'] ?? {}) as Record<string, unknown>;
    say(`last API record: #${String(last['sequence'])} ${String(last['decision'])} ${String(last['denial_reason'])} ${String(last['method'])} ${String(last['path'])}, mission state ${String(mission['state'])} (source ${String(mission['source'])}), prev_hash ${String(last['prev_hash']).slice(0, 20)}…, signed (${String((last['evidence_envelope'] as { format?: unknown } | undefined)?.format ?? 'no')})`);
  }
}

function lastRecord(file: string): Record<string, unknown> | null {
  try {
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    return JSON.parse(lines.at(-1) ?? '') as Record<string, unknown>;
  } catch {
    return null;
  }
}

async function main(): Promise<number> {
  const t0 = performance.now();
  const s = await startStack();
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await s.close();
  };
  try {
    await story(s);
  } catch (err) {
    out(c.red(`demo failed: ${(err as Error).message}`));
    await stop();
    return 1;
  }
  out();
  if (surprises > 0) out(c.bold(c.yellow(`${surprises} step(s) did not go as expected`)));
  else out(c.bold(c.green(`every decision as expected (${((performance.now() - t0) / 1000).toFixed(1)} s)`)));
  if (keep) {
    out();
    out(c.bold('--keep: everything is still running (Ctrl-C to stop)'));
    await keepRunning(s);
  }
  await stop();
  return surprises > 0 ? 1 : 0;
}

/** --keep: everything stays up until Ctrl-C. */
async function keepRunning(s: Stack): Promise<void> {
  say(`dev authority   ${s.dev.url}  (admin API ${s.dev.endpoints.admin}, token endpoint ${s.dev.endpoints.token})`);
  say(`sample API      ${s.api.url}`);
  say(`  its gateway   ${s.apiGateway.url}   (metrics ${s.apiGateway.adminUrl}/metrics)`);
  say(`  evidence      ${s.apiGateway.evidenceFile}`);
  say(`MCP server      ${s.mcpServer.url}`);
  say(`  its gateway   ${s.mcpGateway.url}/mcp   (metrics ${s.mcpGateway.adminUrl}/metrics)`);
  say(`  evidence      ${s.mcpGateway.evidenceFile}`);
  say('the demo Mission is revoked; create another with the admin API (POST /admin/missions)');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
