/**
 * OAuth 2.0 Protected Resource Metadata (RFC 9728) for each resource identifier this gateway
 * serves (`resource`, and `mcp.resource` when it differs). The bodies are built once at start; the
 * server answers them on the proxy port. The challenge's `resource_metadata` is `urlFor(resource)`.
 */
import type { Config } from '../config/schema.js';
import { SUPPORTED_CONSTRAINTS } from '../authority/constraints.js';

export const PRM_WELL_KNOWN = '/.well-known/oauth-protected-resource';


export interface ProtectedResourceMetadata {
  /** Request path on the proxy port -> JSON body. */
  readonly paths: ReadonlyMap<string, string>;
  /** The metadata URL of a resource identifier (public_base_url + well-known path). */
  urlFor(resourceId: string): string;
}

/** RFC 9728 section 3.1: the well-known segment goes between host and the identifier's path. */
export function prmPath(resourceId: string): string {
  let path = '';
  try {
    const u = new URL(resourceId);
    if (u.protocol === 'https:' || u.protocol === 'http:') path = u.pathname;
  } catch {
    // Not a URL (an opaque identifier): only the root document describes it.
  }
  if (path === '/') path = '';
  return PRM_WELL_KNOWN + path.replace(/\/$/, '');
}

export function createProtectedResourceMetadata(config: Config): ProtectedResourceMetadata {
  const base = config.public_base_url.replace(/\/$/, '');
  const ids = [config.resource];
  if (config.mcp?.resource !== undefined && config.mcp.resource !== config.resource) ids.push(config.mcp.resource);
  const paths = new Map<string, string>();
  const urls = new Map<string, string>();
  for (const resource of ids) {
    const path = prmPath(resource);
    paths.set(
      path,
      JSON.stringify({
        resource,
        authorization_servers: config.issuers.map((i) => i.issuer),
        bearer_methods_supported: ['header'],
        dpop_signing_alg_values_supported: [...config.dpop.algorithms],
        dpop_bound_access_tokens_required: config.dpop.required,
        mission_bound_authorization_required: config.mission.required,
        mission_constraints_supported: [...SUPPORTED_CONSTRAINTS],
      }),
    );
    urls.set(resource, base + path);
  }
  return {
    paths,
    urlFor(resourceId: string): string {
      return urls.get(resourceId) ?? base + prmPath(resourceId);
    },
  };
}
