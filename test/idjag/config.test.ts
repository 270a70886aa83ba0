import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.js';
import { ASYMMETRIC_ALGS } from '../../src/auth/jws.js';
import { compileRules } from '../../src/idjag/projection.js';
import { extraIssuers } from '../../src/parts.js';

const folder = join(import.meta.dirname, '../../config');

describe('config/id-jag.yaml', () => {
  it('is a valid config whose id_jag section compiles to the documented rules', () => {
    const config = parseConfigText(readFileSync(join(folder, 'id-jag.yaml'), 'utf8'), folder, {});
    const rules = compileRules(config.id_jag!, config.resource, config.token.clock_skew_s);
    expect(rules.audience).toBe('https://crm-as.example.com');
    expect(rules.maxLifetimeS).toBe(300);
    expect(rules.forbidden.has('email')).toBe(true);
    expect(rules.forbidden.has('client_context')).toBe(true);
    const policy = rules.policy?.get('https://idp.example.com');
    expect(policy).toHaveLength(1);
    expect([...policy![0]!.purposes!]).toEqual(['https://example.com/purposes/schedule-meeting']);
    expect([...policy![0]!.actProfiles!]).toEqual(['ai_agent']);
  });
});

describe('issuers trusted for ID-JAGs (or as Mission authorities) but not for access tokens', () => {
  it('verify with any asymmetric algorithm (ES512, PS384, RS512, Ed25519 too), as docs/id-jag.md says', () => {
    const config = parseConfigText(readFileSync(join(folder, 'id-jag.yaml'), 'utf8'), folder, {});
    const extra = extraIssuers(config);
    const idp = extra.find((i) => i.issuer === 'https://idp.example.com');
    expect([...(idp?.algorithms ?? [])].sort()).toEqual([...ASYMMETRIC_ALGS].sort());
  });
});
