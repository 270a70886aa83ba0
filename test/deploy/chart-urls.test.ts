/**
 * SPEC section 2 at `helm install` time: an issuer or authority URL must be https, except on a
 * loopback host; and the proxy and admin listeners need their own ports. With the real helm binary.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { TRUSTED_URL_PATTERN } from '../../src/config/schema.js';
import { CHART, helm } from './helm.js';
import { valuesFile } from './k8s.js';

const template = (...args: string[]) => helm(['template', 'gw', CHART, '-f', valuesFile('standalone-minimal'), ...args]);

describe('values.schema.json: issuer and authority URLs (SPEC section 2)', () => {
  it.each([
    ['an http issuer on a non-loopback host', ['--set', 'config.issuers[0].issuer=http://as.example.com'], /issuer/],
    ['an http jwks_uri', ['--set', 'config.issuers[0].issuer=https://as.example.com', '--set', 'config.issuers[0].jwks_uri=http://as.example.com/jwks'], /jwks_uri/],
    ['an http authority', ['--set', 'config.mission.authorities[0].issuer=http://mas.example.com'], /authorities/],
    ['an http poll endpoint', ['--set', 'config.mission.events.poll.endpoint=http://as.example.com/poll'], /endpoint/],
    ['an http ID-JAG trusted issuer', ['--set', 'config.id_jag.token_path=/token', '--set', 'config.id_jag.trusted_issuers[0]=http://idp.example.com'], /trusted_issuers/],
    ['an http host that only starts like a loopback one', ['--set', 'config.issuers[0].issuer=http://127.0.0.1.example.com'], /issuer/],
    ['credentials in a jwks_uri (r20b 6)', ['--set', 'config.issuers[0].issuer=https://as.example.com', '--set', 'config.issuers[0].jwks_uri=https://user:pw@as.example.com/jwks'], /jwks_uri/],
  ])('helm refuses %s', async (_what, args, message) => {
    const r = await template(...args);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });

  it.each([
    ['https anywhere', 'https://as.example.com'],
    ['http on 127.0.0.1 with a port', 'http://127.0.0.1:9400'],
    ['http on localhost', 'http://localhost:9400/realms/x'],
    ['http on [::1]', 'http://[::1]:9400'],
    ['a ${ENV} reference', '${ISSUER_URL}'],
  ])('helm accepts %s', async (_what, url) => {
    const r = await template('--set', `config.issuers[0].issuer=${url}`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('the pattern agrees with the gateway on every URL tried', () => {
    const pattern = new RegExp(TRUSTED_URL_PATTERN);
    const urls = ['https://as.example.com', 'https://as.example.com/x?y=1', 'http://as.example.com', 'http://127.0.0.1', 'http://127.0.0.1:9400/a', 'http://127.1.2.3', 'http://localhost', 'http://localhost:1/', 'http://[::1]:9', 'http://127.0.0.1.example.com', 'http://localhost.example.com', 'http://10.0.0.1', 'https://as.example.com#frag', 'ftp://as.example.com', 'https://user:pw@as.example.com/jwks', 'https://user@as.example.com', 'http://user:pw@127.0.0.1:9400', 'http://localhost:pw@as.example.com/', 'https://as.example.com/a@b'];
    for (const url of urls) {
      let gateway = true;
      try {
        parseConfigText(`public_base_url: https://a\nresource: x\nupstream: { url: http://a }\nissuers: [{ issuer: ${JSON.stringify(url)} }]\n`, '/tmp', {});
      } catch {
        gateway = false;
      }
      expect(pattern.test(url), url).toBe(gateway);
    }
  });
});

it('helm refuses gateway.port equal to gateway.adminPort', async () => {
  const r = await template('--set', 'gateway.port=8080', '--set', 'gateway.adminPort=8080');
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain('gateway.port and gateway.adminPort are both 8080');
});
