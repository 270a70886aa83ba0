/**
 * A route parameter read from a header (`params: { tenant: { header: x-tenant } }`) given in two
 * fields is two values, not Node's joined `a, b`: refused 400 parameter_unparseable, since the
 * upstream may read either one (Go's Header.Get the first) and the digest would carry neither
 * (r21k D2). Through the gateway, with a real token and proof.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { API, startTarget, type Target } from './fixture.js';

let t: Target;
beforeAll(async () => {
  t = await startTarget(`  - match: { method: GET, path: /tenants/* }
    action: reports.view
    params: { tenant: { header: x-tenant } }
`);
});
afterAll(() => t.close());

const get = async (tenant: string | string[]) => {
  const path = '/tenants/1';
  return t.send({ path, method: 'GET', authorization: `DPoP ${t.token}`, dpop: await t.agent.proof('GET', `${API}${path}`, t.token), headers: { 'x-tenant': tenant } });
};

it('one X-Tenant field is a parameter; two are refused, and nothing reaches the upstream', async () => {
  expect((await get('acme')).status).toBe(200);
  const before = t.echo.requests.length;
  const two = await get(['acme', 'victim']);
  expect(two.status).toBe(400);
  expect(two.json()).toMatchObject({ denial_reason: 'parameter_unparseable' });
  expect(t.echo.requests.length).toBe(before);
});
