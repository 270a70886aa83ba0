import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { authorityHash, type AuthorityEntry, type DevAuthority } from '../../src/dev-authority/index.js';
import { OAuthMetadataSchema } from '@modelcontextprotocol/sdk/shared/auth.js';
import { start } from './helpers.js';

let dev: DevAuthority | undefined;
afterEach(async () => {
  await dev?.close();
  dev = undefined;
});

describe('dev-authority metadata and keys', () => {
  it('RFC 8414 / OIDC discovery / MAS metadata publish the same document with the Mission Status members', async () => {
    dev = await start({ maxStaleSeconds: 45 });
    const docs = await Promise.all(
      ['oauth-authorization-server', 'openid-configuration', 'mission-authority-server'].map(async (n) => {
        const res = await fetch(`${dev!.url}/.well-known/${n}`);
        expect(res.status).toBe(200);
        return (await res.json()) as Record<string, unknown>;
      }),
    );
    expect(docs[1]).toEqual(docs[0]);
    expect(docs[2]).toEqual(docs[0]);
    const m = docs[0]!;
    expect(m['issuer']).toBe(dev.url);
    expect(m['token_endpoint']).toBe(`${dev.url}/token`);
    // Clients that require RFC 8414's authorization_endpoint (the MCP SDK's) accept the document;
    // there is no code flow behind it.
    expect(OAuthMetadataSchema.safeParse(m).success).toBe(true);
    const authorize = await fetch(m['authorization_endpoint'] as string);
    expect([authorize.status, ((await authorize.json()) as Record<string, unknown>)['error']]).toEqual([400, 'unsupported_response_type']);
    expect(m['jwks_uri']).toBe(`${dev.url}/jwks`);
    expect(m['mission_status_endpoint']).toBe(`${dev.url}/mission/status`);
    expect(m['mission_status_endpoint_auth_methods_supported']).toEqual(['private_key_jwt']);
    expect(m['mission_status_signing_alg_values_supported']).toEqual(['ES256']);
    expect(m['mission_max_stale_seconds']).toBe(45);
    expect(m['grant_types_supported']).toEqual(['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange']);
    expect(m['dpop_signing_alg_values_supported']).toContain('ES256');
    expect(m['ssf_poll_endpoint']).toBe(`${dev.url}/ssf/poll`);
    const ssf = (await (await fetch(m['mission_event_stream_endpoint'] as string)).json()) as Record<string, unknown>;
    expect(ssf['delivery_methods_supported']).toEqual(['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936']);
  });

  it('JWKS publishes public ES256 keys with kid; rotation signs with the new key and keeps the old one published', async () => {
    let now = Date.now();
    dev = await start({ keyRetentionSeconds: 600, now: () => now });
    const first = (await (await fetch(`${dev.url}/jwks`)).json()) as { keys: Record<string, unknown>[] };
    expect(first.keys).toHaveLength(1);
    const k = first.keys[0]!;
    expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    expect(typeof k['kid']).toBe('string');
    expect(k).not.toHaveProperty('d');
    const before = await dev.signJwt({ a: 1 }, 'test+jwt');

    const rotated = await fetch(`${dev.url}/admin/keys/rotate`, { method: 'POST' });
    expect(rotated.status).toBe(200);
    const after = await dev.signJwt({ a: 2 }, 'test+jwt');
    expect(decodeProtectedHeader(after).kid).not.toBe(k['kid']);
    const second = (await (await fetch(`${dev.url}/jwks`)).json()) as { keys: { kid: string }[] };
    expect(second.keys.map((x) => x.kid)).toEqual([decodeProtectedHeader(after).kid, k['kid']]);
    const set = createLocalJWKSet(second as never);
    await expect(jwtVerify(before, set)).resolves.toBeTruthy();
    await expect(jwtVerify(after, set)).resolves.toBeTruthy();

    now += 601_000;
    const third = (await (await fetch(`${dev.url}/jwks`)).json()) as { keys: { kid: string }[] };
    expect(third.keys.map((x) => x.kid)).toEqual([decodeProtectedHeader(after).kid]);
  });

  it('draft-mcguinness-oauth-mission test vector authority_hash-1 (JCS + SHA-256)', () => {
    const vectors = JSON.parse(readFileSync(new URL('../fixtures/vectors.json', import.meta.url), 'utf8')) as {
      vectors: { id: string; inputs: { iss: string; value: AuthorityEntry[] }; expected: string }[];
    };
    const v = vectors.vectors.find((x) => x.id === 'authority_hash-1')!;
    expect(authorityHash(v.inputs.iss, v.inputs.value)).toBe(v.expected);
    expect(v.expected).toBe('sha-256:vUCCfjGulit9u0qJ0Z6pQSNerZtXMqRlfJNCr4PzLro');
  });

  it('prints a DEVELOPMENT ONLY warning at start unless quiet', async () => {
    const lines: string[] = [];
    dev = await start({ quiet: false, log: (l) => lines.push(l) });
    expect(lines.join('\n')).toMatch(/DEVELOPMENT ONLY - never use in production/);
    await dev.close();
    const silent: string[] = [];
    dev = await start({ quiet: true, log: (l) => silent.push(l) });
    expect(silent).toEqual([]);
  });

  it('keys loaded from a folder survive a restart', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'devauth-keys-'));
    dev = await start({ keysDir: dir });
    const kid1 = ((await (await fetch(`${dev.url}/jwks`)).json()) as { keys: { kid: string }[] }).keys[0]!.kid;
    await dev.close();
    dev = await start({ keysDir: dir });
    const kid2 = ((await (await fetch(`${dev.url}/jwks`)).json()) as { keys: { kid: string }[] }).keys[0]!.kid;
    expect(kid2).toBe(kid1);
  });
});
