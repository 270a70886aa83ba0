/**
 * The operator docs agree with the code they describe (adoption run r7c): defaults and bounds in
 * docs/config.md and docs/reliability.md from src/config/schema.ts, the Mission Status outcomes,
 * and the walkthroughs' commands.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';

const root = resolve(__dirname, '../..');
const doc = (name: string): string => readFileSync(join(root, name), 'utf8');
const defaults = configSchema.parse({ public_base_url: 'https://a.example', resource: 'https://a.example', upstream: { url: 'http://127.0.0.1:1' }, mission: { events: { poll: { endpoint: 'https://as.example/poll' } } } });

describe('docs match src/config/schema.ts', () => {
  it('reliability.md states the real JWKS cooldown wherever it names one', () => {
    const text = doc('docs/reliability.md');
    expect(defaults.token.jwks_cooldown_s).toBe(5);
    for (const line of text.split('\n').filter((l) => /cooldown/i.test(l))) expect(line, line).not.toMatch(/30 s/);
    expect(text).toContain('`token.jwks_cooldown_s` (default 5 s)');
  });

  it('config.md documents the defaults and bounds the schema applies', () => {
    const text = doc('docs/config.md');
    expect(text).toContain(`\`interval_s\`: \`${defaults.mission.events.poll!.interval_s}\``);
    expect(text).toMatch(/`id_jag\.token_path`, `\.audience`, `\.trusted_issuers` \*\*fixed\*\* \| `audience`: `resource`/);
    expect(text).toMatch(/`token\.jwks_refresh_s` \| `300` \| [^\n]*`0` turns it off/);
    expect(text).toMatch(/`dpop\.replay_max_entries` \| `1000000` \| [^\n]*at least `1000`/);
    expect(text).toMatch(/`mission\.cache_max_entries` \| `100000` \| [^\n]*at least `100`/);
    expect(configSchema.safeParse({ public_base_url: 'https://a.example', resource: 'x', upstream: { url: 'http://a' }, dpop: { replay_max_entries: 999 } }).success).toBe(false);
    expect(configSchema.safeParse({ public_base_url: 'https://a.example', resource: 'x', upstream: { url: 'http://a' }, mission: { cache_max_entries: 99 } }).success).toBe(false);
  });

  it('reliability.md lists every Mission Status outcome missions.md defines', () => {
    const table = doc('docs/missions.md').split('Outcomes (metric')[1]!.split('\n\n')[1]!;
    // The first column of each row names the outcomes.
    const firstColumn = table.split('\n').slice(2).map((row) => row.split('|')[1] ?? '').join(' ');
    const outcomes = [...firstColumn.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!);
    expect(outcomes).toEqual(expect.arrayContaining(['ok', 'not_found', 'error', 'no_endpoint', 'not_configured']));
    const reliability = doc('docs/reliability.md').split('mission_status_requests_total{outcome}` counts each:')[1]!.split('\n\n')[0]!;
    for (const o of [...outcomes, 'cooldown']) expect(reliability, o).toContain(`\`${o}\``);
  });
});

describe('walkthroughs', () => {
  it('docs/mcp.md "Try it" registers the gateway key and pushes revocations to the gateway (--receiver)', () => {
    const tryIt = doc('docs/mcp.md').split('## 1. Try it')[1]!.split('```')[1]!;
    expect(tryIt).toContain('--client gw-mcp=config/keys/gw-mcp.jwk');
    expect(tryIt).toContain('--receiver http://127.0.0.1:8080/.well-known/ssf/push=http://localhost:8080');
  });

  it('README verifies the evidence file config/example.yaml writes', () => {
    const example = doc('config/example.yaml').match(/evidence: \{ sink: \.\/(\S+) \}/)![1]!;
    expect(doc('README.md')).toContain(`npx mission-gateway verify-evidence config/${example}`);
  });

  it('deploy.md runs the container with config/container.yaml, and its walkthrough configs carry mission.client', () => {
    const deploy = doc('docs/deploy.md');
    expect(deploy).toContain('config/container.yaml:/etc/mission-gateway/config.yaml:ro');
    const sidecar = deploy.split('## Sidecar walkthrough')[1]!.split('How the app')[0]!;
    const embedded = deploy.split('### Sidecar from another chart')[1]!.split('# templates/deployment.yaml')[0]!;
    for (const part of [sidecar, embedded]) {
      expect(part).toMatch(/client: \{ client_id: [\w-]+, private_key_file: \/etc\/mission-gateway\/keys\/mission-client\/gw\.jwk \}/);
      expect(part).toMatch(/keys:[^\n]*\n\s*- \{ name: mission-client, secretName: [\w-]+ \}/);
    }
  });
});
