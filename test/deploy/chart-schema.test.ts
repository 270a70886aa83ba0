import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chartConfigSchema } from './config-schema.js';
import { CHART, helm } from './helm.js';
import { valuesFile } from './k8s.js';

const SCHEMA_FILE = join(CHART, 'values.schema.json');

describe('values.schema.json carries the gateway config schema (SPEC section 2)', () => {
  it('definitions.gatewayConfig equals the schema generated from src/config/schema.ts', () => {
    const chart = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as { definitions: Record<string, unknown>; properties: Record<string, unknown> };
    const expected = chartConfigSchema();
    if (process.env.UPDATE_CHART_SCHEMA === '1') {
      chart.definitions.gatewayConfig = expected;
      writeFileSync(SCHEMA_FILE, `${JSON.stringify(chart, null, 2)}\n`);
    }
    expect(chart.properties.config, 'config must point at the generated definition').toEqual({ $ref: '#/definitions/gatewayConfig' });
    expect(chart.definitions.gatewayConfig, 'out of date: run UPDATE_CHART_SCHEMA=1 npx vitest run test/deploy/chart-schema.test.ts').toEqual(expected);
    expect(JSON.stringify(expected)).not.toContain('"$ref"');
  });

  it.each([
    ['an unknown config key', ['--set', 'config.replay_store_type=redis'], /replay_store_type/],
    ['a misspelled nested key', ['--set', 'config.dpop.max_age=60'], /max_age/],
    ['a wrong type', ['--set-string', 'config.max_body_bytes=big'], /max_body_bytes/],
    ['an algorithm the gateway refuses', ['--set', 'config.issuers[0].issuer=https://as.example.com', '--set', 'config.issuers[0].algorithms[0]=HS256'], /algorithms/],
    ['listen inside config', ['--set', 'config.listen.port=1'], /listen/],
    ['admin inside config', ['--set', 'config.admin.port=1'], /admin/],
    ['an unknown replay store type', ['--set', 'config.replay_store.type=memcached'], /replay_store/],
    ['a nonce secret that is too short', ['--set', 'config.dpop.nonce_secret=short'], /nonce_secret/],
  ])('helm refuses %s', async (_what, args, message) => {
    const r = await helm(['template', 'gw', CHART, '-f', valuesFile('standalone-minimal'), ...args]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });
});

it('constrained strings also accept a ${ENV} reference, which the gateway substitutes before its own checks', async () => {
  const r = await helm(['template', 'gw', CHART, '-f', valuesFile('standalone-minimal'), '--set', 'config.dpop.nonce_secret=${DPOP_NONCE_SECRET}', '--set', 'config.issuers[0].issuer=${ISSUER_URL:-https://as.example.com}']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
});
