/**
 * SPEC section 2: `/readyz` is 200 only when every issuer's keys have loaded. An ID-JAG guard's
 * trusted issuers count (every grant needs their keys), as token issuers do (r21e 3); a Mission
 * authority's do not (cached Mission states still serve without them).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startDevAuthority, type DevAuthority } from '../../src/dev-authority/index.js';
import { eventually, startEcho, startGateway, type TestGateway } from '../helpers/gateway.js';
import { freePort } from './harness.js';

let gw: TestGateway | undefined;
let echo: Awaited<ReturnType<typeof startEcho>> | undefined;
let dev: DevAuthority | undefined;

afterEach(async () => {
  await gw?.close();
  await echo?.close();
  await dev?.close();
  gw = echo = dev = undefined;
});

const readyz = async (g: TestGateway): Promise<{ status: number; checks: Record<string, boolean> }> => {
  const r = await fetch(`${g.adminUrl}/readyz`);
  return { status: r.status, checks: ((await r.json()) as { checks: Record<string, boolean> }).checks };
};

describe('readiness and the keys of issuers that are not token issuers', () => {
  it('an ID-JAG trusted issuer whose keys are not loaded: not ready; ready once they load', async () => {
    const port = await freePort();
    const idp = `http://127.0.0.1:${port}`;
    echo = await startEcho();
    gw = await startGateway(`
public_base_url: https://crm-as.example.com
resource: https://crm-as.example.com
upstream: { url: ${echo.url} }
token: { jwks_cooldown_s: 1 }
id_jag: { token_path: /oauth2/token, trusted_issuers: [${idp}] }
`);
    await eventually(async () => (await readyz(gw!)).status === 503, 5000);
    expect((await readyz(gw)).checks['issuer_keys']).toBe(false);
    dev = await startDevAuthority({ port, quiet: true });
    await eventually(async () => (await readyz(gw!)).status === 200, 10_000);
    expect((await readyz(gw)).checks['issuer_keys']).toBe(true);
  });

  it('a Mission authority whose keys are not loaded does not hold readiness back', async () => {
    const port = await freePort();
    echo = await startEcho();
    gw = await startGateway(`
public_base_url: https://api.example.com
resource: https://api.example.com
upstream: { url: ${echo.url} }
routes: [{ match: { path: /public/** }, auth: none }]
mission:
  authorities: [{ issuer: http://127.0.0.1:${port} }]
`);
    expect(await readyz(gw)).toMatchObject({ status: 200, checks: { issuer_keys: true } });
  });
});
