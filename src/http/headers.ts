/**
 * Header handling for forwarding (SPEC section 6): hop-by-hop headers removed (RFC 9110 section
 * 7.6.1), credentials and Mission reference headers stripped, identity headers set by the gateway
 * only (client copies dropped, whatever their case or count), X-Forwarded-* replaced unless a
 * trusted proxy sent them: For/Proto/Host are set by the gateway, and any other X-Forwarded-*
 * (Port, Prefix, Ssl, ...) or X-Real-IP from a client that is not a trusted proxy is dropped, since
 * upstreams trust these as the proxy's word.
 */
import { validateHeaderName, validateHeaderValue, type IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { targetAuthority } from './path.js';

/**
 * The first field line of `name` (lower case) in Node's raw header list, or undefined. The hot path
 * reads headers this way: touching `req.headers` makes Node build a header object for every request.
 */
export function rawHeader(raw: readonly string[], name: string): string | undefined {
  const n = name.length;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === n && (k === name || k.toLowerCase() === name)) return raw[i + 1];
  }
  return undefined;
}

/**
 * The media type of a Content-Type value (the first, given several), lower-cased, without
 * parameters; '' when there is none.
 */
export function mediaTypeOf(value: string | readonly string[] | undefined): string {
  const v = typeof value === 'string' ? value : (value?.[0] ?? '');
  const semi = v.indexOf(';');
  return (semi === -1 ? v : v.slice(0, semi)).trim().toLowerCase();
}

/** Every field line of `name` (lower case), in order; empty when absent. */
export function rawHeaderLines(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  const n = name.length;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === n && (k === name || k.toLowerCase() === name)) out.push(raw[i + 1]!);
  }
  return out;
}

/**
 * Always removed towards the upstream. `expect`: Node's server has already answered a client's
 * `100-continue` itself, and the body follows; forwarded, undici refuses the request (a 502).
 */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization', 'http2-settings', 'host', 'expect'];

/** Set by the gateway only; a client's copy never reaches the upstream. */
export const GATEWAY_SET = [
  'mission-decision',
  'x-mission-id',
  'x-mission-issuer',
  'x-mission-subject',
  'x-mission-client-id',
  'x-mission-action',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
];

/**
 * Credentials: consumed by the gateway, never forwarded (SPEC section 6), except to the token
 * endpoint the ID-JAG guard fronts, whose AS authenticates the client and binds its token to the
 * proof (SPEC section 8).
 */
const CREDENTIALS = ['authorization', 'dpop'];

/** Mission references: consumed by the gateway, never forwarded, to a token endpoint neither. */
const MISSION_REFERENCES = ['aauth-mission', 'mission-reference'];

export class TrustedProxies {
  private readonly list = new BlockList();
  readonly empty: boolean;

  constructor(entries: readonly string[]) {
    this.empty = entries.length === 0;
    for (const e of entries) {
      const [addr = '', bits] = e.split('/');
      const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.list.addAddress(addr, family);
      else this.list.addSubnet(addr, Number(bits), family);
    }
  }

  has(address: string): boolean {
    if (this.empty || address === '') return false;
    const plain = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    return this.list.check(plain, isIP(plain) === 6 ? 'ipv6' : 'ipv4');
  }
}

export interface ForwardIdentity {
  readonly decisionId: string;
  /** [header name, value] pairs for X-Mission-*; empty on `auth: none` routes. */
  readonly mission: readonly (readonly [string, string])[];
}

export interface HeaderPolicy {
  /** Lower-case names never forwarded for this kind of request. */
  readonly drop: ReadonlySet<string>;
  readonly trusted: TrustedProxies;
  readonly proto: string;
  /**
   * The Host the upstream gets: its own host[:port], or with `upstream.preserve_host` the public one
   * (public_base_url's), never a client's value, which could name another virtual host upstream.
   */
  readonly upstreamHost: string;
}

export function makeDropSet(stripCredentials: boolean): ReadonlySet<string> {
  return new Set([...HOP_BY_HOP, ...GATEWAY_SET, ...MISSION_REFERENCES, ...(stripCredentials ? CREDENTIALS : [])]);
}

/**
 * Builds the flat [name, value, …] header list for the upstream from the client's raw headers, Host
 * last. Names listed in the client's `Connection` header are dropped too. X-Forwarded-Host is the host the
 * client asked for: an absolute-form target's authority, else Host (RFC 9112 section 3.2.2).
 */
export function upstreamHeaders(
  req: { readonly rawHeaders: readonly string[]; readonly url?: string | undefined; readonly httpVersion?: string },
  clientIp: string,
  policy: HeaderPolicy,
  identity: ForwardIdentity,
): string[] {
  const rawHeaders = req.rawHeaders;
  const out: string[] = [];
  const trusted = policy.trusted.has(clientIp);
  let connection: string | null = null;
  let priorFor: string | null = null;
  let priorProto: string | null = null;
  let priorHost: string | null = null;
  let host: string | null = null;
  let priorVia: string | null = null;
  let trailers = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    const value = rawHeaders[i + 1]!;
    if (lower.length === 3 && lower === 'via') {
      priorVia = priorVia === null ? value : `${priorVia}, ${value}`;
      continue;
    }
    if (policy.drop.has(lower)) {
      if (lower === 'connection') {
        connection = connection === null ? value : `${connection},${value}`;
      } else if (lower === 'host') {
        host ??= value;
      } else if (lower === 'x-forwarded-for') {
        priorFor = priorFor === null ? value : `${priorFor}, ${value}`;
      } else if (lower === 'x-forwarded-proto') {
        priorProto ??= value;
      } else if (lower === 'x-forwarded-host') {
        priorHost ??= value;
      } else if (lower === 'te') {
        trailers ||= acceptsTrailers(value);
      }
      continue;
    }
    if (lower.charCodeAt(0) === 120 /* x */ && droppedX(lower, trusted)) continue;
    // CGI, WSGI, PHP and Rack read `X_Mission_Id` as `X-Mission-Id` (both HTTP_X_MISSION_ID): an
    // underscore spelling of a name the gateway sets or strips is that name, and dropped with it.
    if (lower.includes('_') && underscoreAlias(lower, policy.drop)) continue;
    out.push(name, value);
  }
  if (connection !== null) dropNamed(out, connection);
  out.push('x-forwarded-for', trusted && priorFor !== null ? `${priorFor}, ${clientIp}` : clientIp);
  out.push('x-forwarded-proto', trusted && priorProto !== null ? priorProto : policy.proto);
  const fwdHost = trusted && priorHost !== null ? priorHost : (targetAuthority(req.url ?? '/') ?? host);
  if (fwdHost !== null) out.push('x-forwarded-host', fwdHost);
  // RFC 9110 section 7.6.3: a gateway MUST add itself to Via in each inbound request, after the
  // entries of the hops before it, with the protocol it received the request in.
  const via = req.httpVersion === '1.0' ? VIA_10 : VIA_11;
  out.push('via', priorVia === null ? via : `${priorVia}, ${via}`);
  // TE is hop-by-hop, but a client that takes trailers says so for the whole chain: some servers
  // (gRPC-style ones) send trailers only then, and the gateway relays them (Exchange.onComplete).
  if (trailers) out.push('te', 'trailers');
  out.push('mission-decision', identity.decisionId);
  for (const [k, v] of identity.mission) out.push(k, v);
  out.push('host', policy.upstreamHost);
  return out;
}

/** Whether a TE value lists `trailers` (RFC 9110 section 10.1.4; `trailers` takes no weight). */
function acceptsTrailers(te: string): boolean {
  for (const t of te.split(',')) if (t.trim().toLowerCase() === 'trailers') return true;
  return false;
}

/** This gateway's Via entry (a pseudonym, no host or port: RFC 9110 section 7.6.3 allows it). */
const VIA_11 = '1.1 mission-gateway';
const VIA_10 = '1.0 mission-gateway';

/**
 * Whether a header name with underscores folds (`_` read as `-`, as CGI-style servers do) onto one
 * the gateway drops, or onto the proxy's word on the client (`x-forwarded-*`, `x-real-ip`, which
 * no proxy spells with underscores).
 */
function underscoreAlias(lower: string, drop: ReadonlySet<string>): boolean {
  const folded = lower.replaceAll('_', '-');
  return drop.has(folded) || droppedX(folded, false);
}

/**
 * An `x-` name (lower-case) a client's request never carries upstream:
 *  - the proxy's word on the client (X-Forwarded-Port, -Prefix, X-Real-IP, ...), unless a trusted
 *    proxy sent it;
 *  - any `X-Mission-*`: the gateway's identity headers are its word, and an upstream that reads the
 *    family as such must not take a client's `X-Mission-Tenant` for it (r19d 5);
 *  - `X-Original-URL`, `X-Rewrite-URL`: read as the request path by some frameworks (Symfony and
 *    Zend before CVE-2018-14773, IIS URL Rewrite setups), they would serve another path than the
 *    one the gateway authorized (SPEC section 4), from any client;
 *  - `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`: read as the method by Symfony
 *    and Laravel, Rack, ASP.NET Core and Express's method-override, they would run another method
 *    than the one the route matched (a permitted POST as a DELETE; r19e 2).
 */
const OVERRIDES: ReadonlySet<string> = new Set(['x-original-url', 'x-rewrite-url', 'x-http-method-override', 'x-http-method', 'x-method-override']);

function droppedX(lower: string, trusted: boolean): boolean {
  if (lower.startsWith('x-mission-') || OVERRIDES.has(lower)) return true;
  return !trusted && (lower.startsWith('x-forwarded-') || lower === 'x-real-ip');
}

/**
 * The header names a `Connection` value lists (lower-case), or null when it is just `keep-alive`
 * (nearly every message), which names nothing beyond the hop-by-hop headers dropped anyway.
 */
function connectionNames(value: string): Set<string> | null {
  if (value === 'keep-alive' || value === 'Keep-Alive' || (value.length === 10 && value.toLowerCase() === 'keep-alive')) return null;
  return new Set(value.split(',').map((t) => t.trim().toLowerCase()));
}

/** Removes from a flat [name, value, …] list the fields a `Connection` value names. */
function dropNamed(out: string[], connection: string): void {
  const named = connectionNames(connection);
  if (named === null) return;
  for (let i = out.length - 2; i >= 0; i -= 2) if (named.has(out[i]!.toLowerCase())) out.splice(i, 2);
}

/**
 * Response fields never relayed: the hop-by-hop ones, and `Mission-Decision`, which names the
 * gateway's own record (set by the gateway only, SPEC section 6): an upstream's copy would point a
 * client at another decision, or none (r21d 2).
 */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'http2-settings', 'mission-decision']);

/**
 * Response headers from undici's raw list minus hop-by-hop ones (and those the response's own
 * `Connection` header names), as a flat [name, value, …] list for writeHead, plus `extra`.
 * `sized` tells whether the response declared a Content-Length; `dpopNonce` whether it carried a
 * DPoP-Nonce (an AS asking for a nonce, RFC 9449 section 8); `session` its `Mcp-Session-Id` (an
 * MCP server creating a session); `trailer` the `Trailer` value, which is written only on a chunked
 * answer (Node refuses it on any other).
 */
export function relayHeaders(
  raw: readonly Buffer[],
  extra: Record<string, string> | null,
): { headers: string[]; sized: boolean; dpopNonce: boolean; session: string | null; coded: boolean; trailer: string | null } {
  const out: string[] = [];
  let sized = false;
  let dpopNonce = false;
  let session: string | null = null;
  let coded = false;
  let connection: string | null = null;
  let trailer: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const lower = name.toLowerCase();
    if (RESPONSE_DROP.has(lower)) {
      if (lower === 'connection') connection = connection === null ? raw[i + 1]!.toString('latin1') : `${connection},${raw[i + 1]!.toString('latin1')}`;
      else if (lower === 'trailer') trailer = trailer === null ? raw[i + 1]!.toString('latin1') : `${trailer}, ${raw[i + 1]!.toString('latin1')}`;
      // Anything but one plain `chunked` (a coding under it, `chunked,`, tabs around it): undici does not
      // read every such value as chunked, and the client would get the framing, or the coding, as body.
      else if (lower === 'transfer-encoding' && raw[i + 1]!.toString('latin1').toLowerCase() !== 'chunked') coded = true;
      continue;
    }
    const value = raw[i + 1]!.toString('latin1');
    if (lower === 'content-length') sized = true;
    else if (lower === 'dpop-nonce') dpopNonce = true;
    else if (lower === 'mcp-session-id') session = value;
    // A field the gateway sets replaces the upstream's: two DPoP-Nonce fields read as one joined
    // value, which is no nonce (r21d 1).
    if (extra !== null && extra[lower] !== undefined) continue;
    out.push(name, value);
  }
  if (connection !== null) dropNamed(out, connection);
  if (extra !== null) for (const k in extra) out.push(k, extra[k]!);
  return { headers: out, sized, dpopNonce, session, coded, trailer };
}

/**
 * Not trailers to pass on (RFC 9110 section 6.5.1): the hop-by-hop fields, framing, routing,
 * authentication, response controls and content description, cookies, and the fields the gateway
 * answers with (a client that merges trailers into the header section would take them as the
 * gateway's; r21d 2).
 */
const TRAILER_DROP: ReadonlySet<string> = new Set([
  ...RESPONSE_DROP,
  'content-length', 'host',
  'www-authenticate', 'authentication-info', 'set-cookie',
  'cache-control', 'expires', 'age', 'vary', 'location', 'retry-after', 'date',
  'content-type', 'content-encoding', 'content-range',
  'dpop-nonce', 'mcp-session-id',
]);

/**
 * The trailer fields of undici's raw list to relay, as [name, value] pairs for addTrailers: the
 * same policy as relayHeaders, minus framing and routing fields, and minus one Node will not write
 * (a control byte in it). undici gives them as Buffers (its types say strings).
 */
export function relayTrailerFields(raw: readonly (Buffer | string)[]): [string, string][] {
  const fields: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = latin1(raw[i]!);
    const value = latin1(raw[i + 1]!);
    if (TRAILER_DROP.has(name.toLowerCase())) continue;
    try {
      validateHeaderName(name);
      validateHeaderValue(name, value);
    } catch {
      continue;
    }
    fields.push([name, value]);
  }
  return fields;
}

const latin1 = (b: Buffer | string): string => (typeof b === 'string' ? b : b.toString('latin1'));

/** The same policy for a parsed header object (lower-case keys), as a Node header object. */
export function clientHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const conn = headers['connection'];
  const named = conn === undefined ? null : connectionNames(Array.isArray(conn) ? conn.join(',') : conn);
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined || RESPONSE_DROP.has(name) || named?.has(name) === true) continue;
    out[name] = v;
  }
  return out;
}

/** Whether the request must carry Host: from HTTP/1.1 on it must (RFC 9112 section 3.2), HTTP/1.0 may omit it. */
export function hostRequired(req: IncomingMessage): boolean {
  return req.httpVersionMajor > 1 || req.httpVersionMinor >= 1;
}

/**
 * The raw headers' one `name` field (lower case): null when there is none, TWO_FIELDS when there are
 * two or more (a Host, an Mcp-Session-Id: a second one would let two readers see two values).
 */
export function soleField(raw: readonly string[], name: string): string | null | typeof TWO_FIELDS {
  const n = name.length;
  let value: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === n && (k === name || k.toLowerCase() === name)) {
      if (value !== null) return TWO_FIELDS;
      value = raw[i + 1]!;
    }
  }
  return value;
}

export const TWO_FIELDS: unique symbol = Symbol('two fields of one name');

/** Sets `name` (lower case) in a flat [name, value, …] list: the first field of that name, else a new one. */
export function setHeader(headers: string[], name: string, value: string): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === name) {
      headers[i + 1] = value;
      return;
    }
  }
  headers.push(name, value);
}

/** Removes every `name` (lower case) field from a flat [name, value, …] list. */
export function dropHeader(headers: string[], name: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() === name) headers.splice(i, 2);
  }
}
