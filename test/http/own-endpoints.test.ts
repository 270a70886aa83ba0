/**
 * The gateway's own endpoints (mcp.path, id_jag.token_path) are matched as configured; any other
 * spelling with the same segments (`/mcp/`, `/mcp/.`, `/mcp//`, `/mcp/x/..`, `/%6dcp/`) is refused
 * no_route, even behind a catch-all route: routes match segments, and an upstream that reads
 * `/mcp/` as `/mcp` (Express's default) would otherwise run a tools/call past the MCP gate, or
 * a grant past the ID-JAG guard (r21k 1). Real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { raw } from '../helpers/http.js';

let echo: Awaited<ReturnType<typeof startEcho>>;
let gw: TestGateway;

beforeAll(async () => {
  echo = await startEcho();
  gw = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url} }
issuers: [{ issuer: https://as.example.com }]
routes:
  - match: { path: /** }
    auth: none
mcp: { path: /mcp, resource: https://api.example.com/mcp }
id_jag: { token_path: /oauth2/token, trusted_issuers: [https://idp.example.com] }
`);
});

afterAll(async () => {
  await gw.close();
  await echo.close();
});

const call = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'delete_everything', arguments: {} } });

describe("other spellings of the gateway's own endpoints behind a catch-all route", () => {
  it.each(['/mcp/', '/mcp/.', '/mcp//', '/mcp/x/..', '/%6dcp/', '//mcp/', '/oauth2/token/', '/oauth2//token/', '/oauth2/token/.', '/MCP', '/Mcp/', '/%4Dcp', '/OAuth2/Token'])('POST %s: 403 no_route, never the upstream', async (path) => {
    const r = await raw(gw.url, { method: 'POST', path, headers: { 'content-type': 'application/json' }, body: call });
    expect(r.status, path).toBe(403);
    expect(r.json()).toMatchObject({ error: 'forbidden', denial_reason: 'no_route' });
    // No POST ever reaches the upstream (the last test's GETs do, in whatever order the tests run).
    expect(echo.requests.filter((q) => q.method === 'POST')).toHaveLength(0);
  });

  it('the endpoints as configured are the gateway\'s (a token is asked for), and other paths under the catch-all go through', async () => {
    const r = await raw(gw.url, { method: 'POST', path: '/mcp', headers: { 'content-type': 'application/json' }, body: call });
    expect(r.status).toBe(401);
    expect((await raw(gw.url, { path: '/mcp/health' })).status).toBe(200);
    expect((await raw(gw.url, { path: '/mcpx/' })).status).toBe(200);
    expect(echo.requests.map((q) => q.url)).toEqual(['/mcp/health', '/mcpx/']);
  });
});
