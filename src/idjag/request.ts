/**
 * Reading a token request (RFC 6749 section 3.2) as far as the guard needs it: is it a JWT bearer
 * grant (RFC 7523 section 2.1), and which assertion does it carry?
 *
 * The guard must see exactly what the AS will see, or an attacker could show it one grant and the
 * AS another. So the parameters it decides on (`grant_type`, `assertion`) are refused when they
 * appear more than once (RFC 6749 section 3.2 forbids it; parsers differ on which copy wins), the
 * query string counts as well as the body, and a body the guard cannot read as a form (another
 * media type, a content coding) is refused rather than passed on unseen. Names and values are
 * recognized as leniently as any AS might read them (`GRANT_TYPE`, `grant_type[]`, a grant type with
 * `ſ` for `s`; a `typ` with parameters, spaces or in any case), then checked strictly.
 */
import { foldName, scanJson } from '../authority/json.js';
import { declaredCharsets, queryFold } from '../authority/params.js';
import { MAX_JWS_BYTES } from '../auth/jws.js';
import { mediaTypeOf, rawHeaderLines } from '../http/headers.js';
import { IdJagRejection, ID_JAG_TYP } from './projection.js';

export const GRANT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export type TokenRequest =
  /** Not a JWT bearer grant (or no grant at all): the guard has no say. */
  | { readonly kind: 'other' }
  /** A JWT bearer grant whose assertion is not an ID-JAG (its `typ` differs). */
  | { readonly kind: 'jwt_bearer' }
  | { readonly kind: 'id_jag'; readonly assertion: string };

const FORM = 'application/x-www-form-urlencoded';

/** Charsets that read the bytes of a form's ASCII as the same ASCII (its percent-escapes aside). */
const ASCII_CHARSETS: ReadonlySet<string> = new Set(['utf-8', 'utf8', 'us-ascii', 'ascii', 'iso-8859-1', 'latin1']);

/** Control characters but the white space `trim()` takes off around a value. */
const CONTROL = /[\x00-\x08\x0e-\x1f\x7f]/;

function malformed(description: string): never {
  throw new IdJagRejection('request_malformed', description);
}

/** The `grant_type` and `assertion` parameters of a form, by their folded names (queryFold). */
function decisive(form: string): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, v] of new URLSearchParams(form)) {
    const k = queryFold(name);
    if (k === 'grant_type' || k === 'assertion') out.push([k, v]);
  }
  return out;
}

function collect(into: Map<string, string[]>, form: string): void {
  const found = decisive(form);
  // Some form parsers (older Python, Perl CGI) also split on ';': refused when that reading would
  // give the AS other grant parameters than the guard reads.
  if (form.includes(';') && JSON.stringify(decisive(form.replaceAll(';', '&'))) !== JSON.stringify(found)) {
    malformed("a token request form whose ';' some servers read as a separator");
  }
  for (const [k, v] of found) {
    const list = into.get(k);
    if (list === undefined) into.set(k, [v]);
    else list.push(v);
  }
}

const UNREADABLE_ASSERTION = 'an encrypted, nested or JSON-serialized assertion, which the guard cannot check';

/**
 * True when the compact JWS `value` declares `typ: oauth-id-jag+jwt` in its protected header,
 * read leniently (any case, with `application/`, parameters or spaces): the guard's verification
 * then refuses any `typ` but the exact one. Only the header is decoded; one that does not decode is
 * not an ID-JAG (the AS rejects it on its own). A header the guard cannot read as every reader
 * would (larger than a JWS the verifier takes, a member named twice) is refused, and so is a JWE
 * header (`enc`: the claims are encrypted) or a nested JWT's (`cty: JWT`).
 */
export function declaresIdJag(value: string): boolean {
  const dot = value.indexOf('.');
  if (dot <= 0) return false;
  if (dot > MAX_JWS_BYTES) malformed('the assertion is larger than a JWS the guard verifies');
  let text: string;
  let header: unknown;
  try {
    text = Buffer.from(value.slice(0, dot), 'base64url').toString('utf8');
    header = JSON.parse(text);
  } catch {
    return false;
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) return false;
  if (Object.hasOwn(header, 'enc')) malformed(UNREADABLE_ASSERTION);
  // A nested JWT (RFC 7519 section 5.2: `cty: JWT`): its claims are another JWT the guard would
  // not read, and an AS that trusts the outer signer may unwrap an ID-JAG from it (r17f).
  const cty = (header as Record<string, unknown>)['cty'];
  if (typeof cty === 'string' && /^(?:application\/)?jwt$/.test(foldName(cty.trim()))) malformed(UNREADABLE_ASSERTION);
  try {
    scanJson(text, 'all');
  } catch {
    malformed('the assertion header names a member twice');
  }
  const typ = (header as Record<string, unknown>)['typ'];
  if (typeof typ !== 'string') return false;
  const semi = typ.indexOf(';');
  const t = foldName((semi === -1 ? typ : typ.slice(0, semi)).trim());
  return t === ID_JAG_TYP || t === 'application/' + ID_JAG_TYP;
}

export interface RequestParts {
  /** Raw query with its "?", or "". */
  readonly search: string;
  readonly contentType: string | undefined;
  readonly contentEncoding: string | undefined;
  /** The buffered body, or null when the request has none. */
  readonly body: Buffer | null;
}

/** The request's Content-Type; refused when it has two (servers differ on which one counts). */
export function tokenRequestContentType(raw: readonly string[]): string | undefined {
  const fields = rawHeaderLines(raw, 'content-type');
  if (fields.length > 1) malformed('a token request with two Content-Type fields');
  return fields[0];
}

/** Classifies a token request; throws IdJagRejection('request_malformed') when it cannot be read safely. */
export function classifyTokenRequest(r: RequestParts): TokenRequest {
  const params = new Map<string, string[]>();
  if (r.search.length > 1) collect(params, r.search.slice(1));
  if (r.body !== null && r.body.length > 0) {
    if (r.contentEncoding !== undefined && r.contentEncoding.trim().toLowerCase() !== 'identity') {
      malformed('a token request body must not be content-encoded');
    }
    if (mediaTypeOf(r.contentType) !== FORM) malformed('a token request body must be application/x-www-form-urlencoded');
    // Read as UTF-8 (RFC 6749 appendix B). A charset in which ASCII is not ASCII (utf-16, utf-7)
    // would let an AS that honours it read a grant the guard never saw.
    for (const charset of declaredCharsets(r.contentType!)) {
      if (!ASCII_CHARSETS.has(charset)) malformed(`a token request body in ${charset === '' ? 'an empty charset' : charset === '*' ? 'an RFC 2231 charset' : charset}, not UTF-8`);
    }
    collect(params, r.body.toString('utf8'));
  }
  const grants = params.get('grant_type') ?? [];
  const assertions = params.get('assertion') ?? [];
  if (grants.length > 1 || assertions.length > 1) malformed('a token request parameter is repeated');
  const grant = grants[0];
  // A NUL or another control character: an AS in C may stop reading at it, or drop it, and read
  // a grant the guard did not recognize.
  if ((grant !== undefined && CONTROL.test(grant)) || (assertions[0] !== undefined && CONTROL.test(assertions[0]))) {
    malformed('a token request parameter with a control character');
  }
  // Compared leniently (case, surrounding space): an AS that is lenient too must never be handed a
  // JWT bearer grant the guard took for something else.
  if (grant === undefined || foldName(grant.trim()) !== GRANT_JWT_BEARER) return { kind: 'other' };
  const assertion = assertions[0]?.trim();
  if (assertion === undefined) return { kind: 'jwt_bearer' };
  // An encrypted JWT (RFC 7516 compact form: five parts) or one in JSON form hides its claims from
  // the guard; an AS that decrypts or reads it would issue on an ID-JAG nobody checked (r17c 1).
  if (assertion.startsWith('{') || assertion.split('.', 6).length === 5) malformed(UNREADABLE_ASSERTION);
  if (!declaresIdJag(assertion)) return { kind: 'jwt_bearer' };
  return { kind: 'id_jag', assertion };
}
