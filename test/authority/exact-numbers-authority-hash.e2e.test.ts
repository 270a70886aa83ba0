/**
 * End to end on real sockets, the dev Mission Authority issuing the tokens, for the two authority
 * differences a conformance run found (.perf/fuzz/r7b F2, F3):
 * - SPEC §4: a JSON-number `amount` a double cannot hold is compared as the exact decimal the
 *   client wrote (403 parameter_violation over max_amount, a permit within it), never refused as
 *   400 parameter_unparseable, which SPEC §5 keeps for bad JSON;
 * - mission-contracts §7: a token's `authority_hash` (over the Mission's FULL set) is not compared
 *   with a Mission Status set filtered to this audience that declares no hash, while a Status that
 *   declares another hash is still denied out_of_authority.
 */
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parameterDigest } from '../../src/authority/params.js';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { gatewayClientKey, newAgent, type Agent } from '../helpers/agent.js';
import { closeServer, listen, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

const API = 'https://api.example.com';
const PAY = { type: 'mission_resource_access', resource: API, actions: ['payments.create'], constraints: { max_amount: { amount: '100.00', currency: 'USD' } } };
const READ = { type: 'mission_resource_access', resource: API, actions: ['invoices.read'] };
const OTHER = { type: 'mission_resource_access', resource: 'https://other.example', actions: ['x.read'] };

const ROUTES = `
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
  - match: { method: POST, path: /payments }
    action: payments.create
    params:
      amount: { body: /amount }
      currency: { body: /currency }
`;

describe('end to end: exact amounts (SPEC §4) and authority_hash against a filtered Status (mission-contracts §7)', () => {
  let dev: DevAuthority;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let agent: Agent;
  /** Mission Status from the dev authority itself. */
  let gw: TestGateway;
  /** Mission Status from `status` below: the dev authority's answer with `mission.authority_hash` as a test sets it. */
  let gwFiltered: TestGateway;
  const status = createServer();
  /** Per Mission: the `mission.authority_hash` the Status declares (undefined: none). */
  const declared = new Map<string, string | undefined>();

  const send = async (target: TestGateway, token: string, method: string, path: string, body?: string) =>
    raw(target.url, {
      method,
      path,
      headers: {
        authorization: `DPoP ${token}`,
        dpop: await agent.proof(method, `${API}${path}`, token),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body }),
    });

  const mission = async (entries: unknown[]): Promise<string> =>
    ((await dev.missions.create({ subject: 'user_1', client_id: 'agent-1', purpose: 'pay', authorization_details: entries })) as unknown as { id: string }).id;

  beforeAll(async () => {
    dev = await startDevAuthority({ port: 0, quiet: true });
    echo = await startEcho();
    agent = await newAgent();

    // A Status endpoint answering like the reference implementation: this audience's entries only,
    // and `mission.authority_hash` only where a test declares one. Signed with the authority's key.
    status.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          const form = new URLSearchParams(Buffer.concat(chunks).toString());
          const m = dev.missions.get(form.get('mission_id') ?? '');
          if (m === undefined) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}');
          const audience = form.get('audience')!;
          const hash = declared.get(m.id);
          const iat = Math.floor(Date.now() / 1000);
          const jwt = await dev.signJwt(
            {
              iss: dev.url,
              aud: audience,
              sub: 'gw-api',
              nonce: form.get('nonce'),
              iat,
              exp: iat + 60,
              mission: {
                id: m.id,
                issuer: m.issuer,
                ...(hash === undefined ? {} : { authority_hash: hash }),
                state: m.state,
                version: m.version,
                expires_at: m.expires_at,
                fresh_until: new Date((iat + 30) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
              },
              authorization_details: m.authorization_details.filter((e) => e.resource === audience),
            },
            'mission-status-response+jwt',
          );
          res.writeHead(200, { 'content-type': 'application/mission-status-response+jwt', 'cache-control': 'no-store' }).end(jwt);
        })();
      });
    });
    const statusUrl = await listen(status);

    const folder = mkdtempSync(join(tmpdir(), 'mgw-exact-'));
    const keyFile = await gatewayClientKey(dev, folder);
    const base = `
public_base_url: ${API}
resource: ${API}
upstream: { url: ${echo.url} }
issuers: [{ issuer: ${dev.url} }]
`;
    gw = await startGateway(`${base}mission:\n  client: { client_id: gw-api, private_key_file: ${keyFile} }\n${ROUTES}`, { folder });
    gwFiltered = await startGateway(
      `${base}mission:\n  client: { client_id: gw-api, private_key_file: ${keyFile} }\n  authorities: [{ issuer: ${dev.url}, status_endpoint: ${statusUrl}/mission/status }]\n${ROUTES}`,
      { folder: mkdtempSync(join(tmpdir(), 'mgw-exact-f-')) },
    );
  });

  afterAll(async () => {
    await gw?.close();
    await gwFiltered?.close();
    await closeServer(status);
    await echo?.close();
    await dev?.close();
  });

  describe('SPEC §4 max_amount 100.00 against JSON-number amounts a double cannot hold (r7b F2)', () => {
    let token: string;
    beforeAll(async () => {
      token = await agent.token(dev, await mission([PAY]), API);
    });

    for (const amount of ['100.0000000000000001', '100.0000000000000000001', '1e400', '12345678901234567890']) {
      it(`{"amount":${amount}} is over the maximum: 403 parameter_violation with the authority challenge`, async () => {
        const r = await send(gw, token, 'POST', '/payments', `{"amount":${amount},"currency":"USD"}`);
        expect(r.status).toBe(403);
        expect(r.json()).toMatchObject({ error: 'insufficient_scope', denial_reason: 'parameter_violation' });
        expect(String(r.headers['www-authenticate'])).toContain('mission_denial="insufficient_authority"');
      });
    }

    for (const amount of ['-0', '99.99999999999999999999', '1e-400']) {
      it(`{"amount":${amount}} is within it: permitted, the body forwarded byte-identical`, async () => {
        const body = `{"amount":${amount},"currency":"USD"}`;
        const r = await send(gw, token, 'POST', '/payments', body);
        expect(r.status).toBe(200);
        expect(echo.requests.at(-1)!.body.toString()).toBe(body);
        // The evidence's digest is RFC 8785's: the number as the double it parses to.
        const record = gw.evidence().findLast((e) => e['path'] === '/payments');
        expect(record).toMatchObject({ decision: 'permit', parameter_digest: parameterDigest({ amount: Number(amount), currency: 'USD' }) });
      });
    }

    it('bad JSON and a duplicate amount are still 400 parameter_unparseable', async () => {
      for (const body of ['{"amount":1e400,', '{"amount":1,"amount":1e400,"currency":"USD"}', '{"amount":NaN,"currency":"USD"}']) {
        const r = await send(gw, token, 'POST', '/payments', body);
        expect(r.status, body).toBe(400);
        expect(r.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
      }
    });
  });

  describe("mission-contracts §7: the token's authority_hash and a Status set filtered to this audience (r7b F3)", () => {
    it('a filtered Status set that declares no authority_hash is not compared: permitted', async () => {
      const id = await mission([READ, OTHER]);
      declared.set(id, undefined);
      const r = await send(gwFiltered, await agent.token(dev, id, API), 'GET', '/invoices/1');
      expect(r.status).toBe(200);
    });

    it("a Status declaring the token's hash: permitted", async () => {
      const id = await mission([READ, OTHER]);
      declared.set(id, dev.missions.get(id)!.authority_hash);
      const r = await send(gwFiltered, await agent.token(dev, id, API), 'GET', '/invoices/1');
      expect(r.status).toBe(200);
    });

    it("a Status declaring another hash than the token's: 403 out_of_authority", async () => {
      const id = await mission([READ, OTHER]);
      declared.set(id, 'sha-256:vUCCfjGulit9u0qJ0Z6pQSNerZtXMqRlfJNCr4PzLro');
      const r = await send(gwFiltered, await agent.token(dev, id, API), 'GET', '/invoices/1');
      expect(r.status).toBe(403);
      expect(r.json()).toMatchObject({ error: 'insufficient_scope', denial_reason: 'out_of_authority' });
    });
  });
});
