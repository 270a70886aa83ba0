/**
 * The chart's `config` value is validated at `helm install` time by the gateway's own config schema
 * (src/config/schema.ts), converted to JSON Schema and kept in values.schema.json under
 * `definitions.gatewayConfig`. This builds that definition; chart-schema.test.ts checks that the
 * chart carries exactly it, and rewrites it when run with UPDATE_CHART_SCHEMA=1.
 */
import { z } from 'zod';
import { configSchema } from '../../src/config/schema.js';

type Json = Record<string, unknown>;

/** `${NAME}` or `${NAME:-default}` somewhere in a string, as config/load.ts substitutes them. */
const ENV_REFERENCE = { type: 'string', pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}' };
const STRING_CONSTRAINTS = ['pattern', 'minLength', 'maxLength', 'format', 'enum'];

/**
 * Strings are checked after `${ENV}` substitution by the gateway, but before it by helm: a
 * constrained string may also be a reference, whose value only the gateway can check.
 */
function allowEnvReferences(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(allowEnvReferences);
  if (typeof node !== 'object' || node === null) return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node)) out[k] = allowEnvReferences(v);
  if (out.type === 'string' && STRING_CONSTRAINTS.some((c) => c in out)) {
    const { default: fallback, description, ...constrained } = out;
    const wrapped: Json = { anyOf: [constrained, ENV_REFERENCE] };
    if (fallback !== undefined) wrapped.default = fallback;
    if (description !== undefined) wrapped.description = description;
    return wrapped;
  }
  return out;
}

export function chartConfigSchema(): Json {
  const schema = allowEnvReferences(z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any', target: 'draft-7' })) as Json;
  const properties = schema.properties as Record<string, Json>;
  delete schema.$schema;
  // Filled by the chart's own values (gateway.publicBaseUrl, gateway.resource, gateway.upstreamUrl).
  delete schema.required;
  // Owned by the chart (gateway.port, gateway.adminPort): with additionalProperties false, leaving
  // them out makes them errors.
  delete properties.listen;
  delete properties.admin;
  const upstream = properties.upstream as Json;
  const required = ((upstream.required as string[] | undefined) ?? []).filter((k) => k !== 'url');
  if (required.length > 0) upstream.required = required;
  else delete upstream.required;
  schema.description = 'Gateway config keys (SPEC section 2), checked by the gateway\'s own schema; listen and admin come from gateway.port and gateway.adminPort. Generated from src/config/schema.ts by test/deploy/config-schema.ts.';
  return schema;
}
