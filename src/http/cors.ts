/**
 * CORS for browser clients (`cors`), answered by the gateway for everything it serves: a browser's
 * preflight carries no token, so behind a gateway that authenticates every request the upstream
 * never sees one; and the gateway's own answers (a 401 challenge, `use_dpop_nonce`, a denial, the
 * protected-resource metadata) must be readable by the page, or a browser client cannot refresh a
 * token, fetch its first DPoP nonce or tell a revoked Mission from a network error.
 *
 * For a request from an allowed `Origin`:
 *  - a preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered 204 here, on any path,
 *    without a decision or a record (like the metadata documents): it asks whether the browser may
 *    send, and the real request is then decided as any;
 *  - every answer, the upstream's included, carries `Access-Control-Allow-Origin` (that origin) and
 *    `Access-Control-Expose-Headers` (what a client of this gateway must read).
 * With `cors` set, CORS is the gateway's: the upstream's own `Access-Control-*` response fields are
 * dropped (two `Access-Control-Allow-Origin` fields fail in every browser), and every answer carries
 * `Vary: Origin`, for any origin and for requests without one.
 * Credentials mode (cookies) is not offered: no `Access-Control-Allow-Credentials`.
 */
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http';

export interface CorsOptions {
  /** Serialized origins (`https://app.example`), or `*` for any. */
  readonly allowedOrigins: readonly string[];
  readonly maxAgeS: number;
  /** Response fields to expose beyond the gateway's own list. */
  readonly exposeHeaders: readonly string[];
}

/** What a client of the gateway reads from its answers (challenges, nonces, decisions, sessions). */
const EXPOSED = ['WWW-Authenticate', 'DPoP-Nonce', 'Mission-Decision', 'Retry-After', 'Mcp-Session-Id'];
const METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';
/** Sent when a preflight names no headers, or names them in a form not worth echoing. */
const DEFAULT_HEADERS = 'Authorization, DPoP, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID';
const HEADER_LIST = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$/;

type WriteHead = ServerResponse['writeHead'];

export class Cors {
  private readonly any: boolean;
  private readonly origins: ReadonlySet<string>;
  private readonly expose: string;
  private readonly maxAge: string;

  constructor(o: CorsOptions) {
    this.any = o.allowedOrigins.includes('*');
    this.origins = new Set(o.allowedOrigins);
    this.expose = [...EXPOSED, ...o.exposeHeaders].join(', ');
    this.maxAge = String(o.maxAgeS);
  }

  /**
   * Applies the policy to a request on the proxy port: true when it was answered here (a
   * preflight from an allowed origin), else false, with the answer's fields set to come.
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const origin = req.headers.origin;
    // A request without Origin gets the policy too: its answer may be cached and served to a page
    // (Fetch, "CORS protocol and HTTP caches"): no upstream `Access-Control-*`, and `Vary: Origin`
    // (r21a 1).
    const allowed = origin !== undefined && (this.any ? origin !== 'null' : this.origins.has(origin));
    if (allowed && req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      const asked = req.headers['access-control-request-headers'];
      res.writeHead(204, {
        'access-control-allow-origin': origin,
        'access-control-allow-methods': METHODS,
        'access-control-allow-headers': asked !== undefined && HEADER_LIST.test(asked) ? asked : DEFAULT_HEADERS,
        'access-control-max-age': this.maxAge,
        vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
      });
      res.end();
      return true;
    }
    const own: [string, string][] = allowed
      ? [
          ['access-control-allow-origin', origin],
          ['access-control-expose-headers', this.expose],
        ]
      : [];
    const writeHead = res.writeHead as (...args: unknown[]) => ServerResponse;
    res.writeHead = function (this: ServerResponse, status: number, a?: unknown, b?: unknown): ServerResponse {
      // writeHead(status, headers) or writeHead(status, reason, headers), reason possibly undefined.
      const withReason = typeof a === 'string' || (a === undefined && b !== undefined);
      const headers = withCors((withReason ? b : a) as OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined, own);
      return withReason ? writeHead.call(this, status, a, headers) : writeHead.call(this, status, headers);
    } as WriteHead;
    return false;
  }
}

/**
 * `headers` without `Access-Control-*` fields, with `own` added and `Origin` in `Vary`, one entry per
 * name (repeated fields as an array: Node keeps only the last of a repeated name in a flat list when
 * any field was set with setHeader before).
 */
function withCors(headers: OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined, own: readonly [string, string][]): OutgoingHttpHeader[] {
  const fields = new Map<string, { name: string; values: (string | number)[] }>();
  const add = (name: string, value: OutgoingHttpHeader, ours = false): void => {
    const lower = name.toLowerCase();
    if (!ours && lower.startsWith('access-control-')) return;
    let f = fields.get(lower);
    if (f === undefined) fields.set(lower, (f = { name, values: [] }));
    if (Array.isArray(value)) f.values.push(...value);
    else f.values.push(value);
  };
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) add(String(headers[i]), headers[i + 1]!);
  } else if (headers !== undefined) {
    for (const name in headers) {
      const v = headers[name];
      if (v !== undefined) add(name, v);
    }
  }
  for (const [k, v] of own) add(k, v, true);
  const vary = fields.get('vary');
  if (vary === undefined) fields.set('vary', { name: 'vary', values: ['Origin'] });
  else vary.values = [[...vary.values, 'Origin'].join(', ')];
  const out: OutgoingHttpHeader[] = [];
  for (const { name, values } of fields.values()) out.push(name, values.length === 1 ? values[0]! : values.map(String));
  return out;
}
