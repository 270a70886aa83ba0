/**
 * Credentials stage: reads `Authorization` (RFC 6750 section 2.1 / RFC 9449 section 7.1) and the
 * `DPoP` header into `ctx.credentials`.
 *
 * Node keeps only the first of several `Authorization` headers and joins several `DPoP` headers,
 * so both are counted on `req.rawHeaders`: more than one of either is a denial (RFC 9449 section
 * 4.3 step 1; RFC 6750 section 2 allows one method per request). Tokens in a query string or form
 * body (RFC 6750 sections 2.2 and 2.3) are not accepted (metadata says `bearer_methods_supported:
 * ["header"]`).
 */
import { Denial } from '../errors.js';
import type { Credentials, RequestContext, Stage } from '../pipeline/context.js';
import { MAX_JWS_BYTES } from './jws.js';

const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*$/;

/**
 * Both header values, each null when absent; throws when one is repeated. One pass for the two
 * (http/headers.ts soleField reads one name), on every request that needs auth.
 */
function readHeaders(raw: readonly string[]): { authorization: string | null; dpop: string | null } {
  let authorization: string | null = null;
  let dpop: string | null = null;
  let authCount = 0;
  let dpopCount = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 13 && name.toLowerCase() === 'authorization') {
      authCount++;
      authorization = raw[i + 1]!;
    } else if (name.length === 4 && name.toLowerCase() === 'dpop') {
      dpopCount++;
      dpop = raw[i + 1]!;
    }
  }
  if (authCount > 1) throw new Denial('token_invalid', { description: 'more than one Authorization header' });
  if (dpopCount > 1) throw new Denial('dpop_invalid', { description: 'more than one DPoP header' });
  return { authorization, dpop };
}

/**
 * Parses credentials from raw headers (exported for tests). The token68
 * syntax check (RFC 9110 section 11.4) is a single linear regex; the proof is only length-checked
 * here, the DPoP stage parses it strictly.
 */
export function parseCredentials(rawHeaders: readonly string[]): Credentials {
  const { authorization, dpop } = readHeaders(rawHeaders);
  if (authorization === null) throw new Denial('token_missing');
  if (authorization.length > MAX_JWS_BYTES + 16) throw new Denial('token_invalid', { description: 'the access token is too large' });
  const value = authorization.trim();
  const sp = value.indexOf(' ');
  const scheme = (sp === -1 ? value : value.slice(0, sp)).toLowerCase();
  // An unknown scheme (or none) is "no usable credentials": no error code (RFC 6750 section 3.1).
  if (scheme !== 'dpop' && scheme !== 'bearer') throw new Denial('token_missing');
  const token = sp === -1 ? '' : value.slice(sp + 1).trimStart();
  if (!TOKEN68.test(token)) throw new Denial('token_invalid', { description: 'the Authorization header is malformed' });
  let proof: string | null = null;
  if (dpop !== null) {
    const v = dpop.trim();
    if (v.length === 0 || v.length > MAX_JWS_BYTES) throw new Denial('dpop_invalid', { description: 'the DPoP header is not a JWT' });
    proof = v;
  }
  return { scheme: scheme === 'dpop' ? 'DPoP' : 'Bearer', token, proof };
}

export function createCredentialsStage(): Stage {
  return function credentials(ctx: RequestContext): void {
    ctx.credentials = parseCredentials(ctx.req.rawHeaders);
  };
}
