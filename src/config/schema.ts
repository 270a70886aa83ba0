/**
 * The configuration schema (SPEC section 2). Every object is strict: an unknown key is an error with
 * its key path. Defaults live here and nowhere else. The runtime never reads this raw shape: see
 * compile.ts for the frozen plan built from it.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseRedisUrl } from '../cluster/redis-url.js';
import { compilePattern, normalizePath } from '../http/path.js';

const LOOPBACK_HOSTS = new Set(['localhost', '[::1]', '::1']);

export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  if (LOOPBACK_HOSTS.has(h)) return true;
  return isIP(h) === 4 && h.startsWith('127.');
}

function parseUrl(value: string): URL | null {
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

/** An absolute http(s) URL. */
const httpUrl = z.string().refine((v) => {
  const u = parseUrl(v);
  return u !== null && (u.protocol === 'http:' || u.protocol === 'https:');
}, 'must be an absolute http(s) URL');

/**
 * The rule below as a JSON Schema pattern, for the Helm chart's values.schema.json (generated from
 * this schema): https anywhere, http only on localhost, 127.0.0.0/8 or [::1]. The gateway itself
 * checks with the URL parser below; this only lets `helm install` refuse the same values.
 */
export const TRUSTED_URL_PATTERN = '^(https://[^/?#@]+([/?][^#]*)?|http://(localhost|127(\\.[0-9]{1,3}){3}|\\[::1\\])(:[0-9]*)?([/?][^#]*)?)$';

/** An issuer or authority URL: https, or http on a loopback host only (SPEC section 2). */
const trustedUrl = z.string().meta({ pattern: TRUSTED_URL_PATTERN }).superRefine((v, ctx) => {
  const u = parseUrl(v);
  if (u === null || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
    ctx.addIssue({ code: 'custom', message: 'must be an absolute https URL' });
  } else if (u.protocol === 'http:' && !isLoopbackHost(u.hostname)) {
    ctx.addIssue({ code: 'custom', message: 'must use https (http is accepted only on loopback hosts)' });
  } else if (u.hash !== '') {
    ctx.addIssue({ code: 'custom', message: 'must not have a fragment' });
  } else if (u.username !== '' || u.password !== '') {
    ctx.addIssue({ code: 'custom', message: 'must not carry credentials (user:password@): they are never sent, and would be logged' });
  }
});

const MAX_TIMER_S = 2_147_483;

/** Matched against normalized request paths: a path that normalizes to something else never matches. */
const normalizedPath = z
  .string()
  .startsWith('/', 'must start with "/"')
  .superRefine((p, ctx) => {
    const problem = pathProblem(p);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
    else if (normalizePath(p) !== p) ctx.addIssue({ code: 'custom', message: `must be written normalized, as ${normalizePath(p)} (requests are matched after normalization)` });
  });

/** Why `p` cannot be normalized (a request never could be either), or null. */
function pathProblem(p: string): string | null {
  try {
    normalizePath(p);
    return null;
  } catch (err) {
    return `cannot be normalized: ${(err as Error).message}`;
  }
}

const port = z.number().int().min(0).max(65535);
/**
 * Seconds, at most what a Node timer holds (2^31 - 1 ms, about 24.8 days): past it setTimeout fires
 * after 1 ms, so a poll interval of a month polled the authority every millisecond (r13a).
 */
const seconds = z.number().positive().max(MAX_TIMER_S, 'must be at most 2147483 (24.8 days, the longest timer Node keeps)');

/** Where the listeners bind by default (also what the listen/admin clash check assumes). */
const LISTEN_DEFAULT = { host: '0.0.0.0', port: 8080 } as const;
const ADMIN_DEFAULT = { host: '127.0.0.1', port: 9090 } as const;

const listen = z.strictObject({
  host: z.string().min(1).default(LISTEN_DEFAULT.host),
  port: port.default(LISTEN_DEFAULT.port),
});

const admin = z.strictObject({
  host: z.string().min(1).default(ADMIN_DEFAULT.host),
  port: port.default(ADMIN_DEFAULT.port),
});

const upstream = z.strictObject({
  url: httpUrl
    .refine((v) => {
      const u = parseUrl(v);
      return u === null || (u.search === '' && u.hash === '');
    }, 'must not carry a query or fragment')
    .refine((v) => {
      const u = parseUrl(v);
      return u === null || (u.username === '' && u.password === '');
    }, 'must not carry credentials (user:password@): they are not sent upstream, and would be logged'),
  /** Time to wait for response headers. Streams, once started, never time out. */
  timeout_s: seconds.default(30),
  /** Upper bound on concurrent connections to the upstream. */
  connections: z.number().int().min(1).max(10_000).default(128),
  keep_alive_timeout_s: seconds.default(4),
  /** Upper bound on open WebSocket tunnels (each holds a client and an upstream socket, outside the pool). */
  websocket_tunnels: z.number().int().min(0).max(100_000).default(1024),
  /** true: the upstream gets the public Host (public_base_url's); false: the upstream's own host[:port]. */
  preserve_host: z.boolean().default(false),
});

/** Limits that protect the process from slow or oversized clients. */
const limits = z.strictObject({
  max_header_bytes: z.number().int().min(1024).max(1_048_576).default(16_384),
  headers_timeout_s: seconds.default(10),
  /** Whole-request receive timeout (slowloris on bodies). 0 disables. */
  request_timeout_s: z.number().min(0).max(86_400).default(300),
  keep_alive_timeout_s: seconds.default(5),
  max_requests_per_socket: z.number().int().min(0).default(0),
  /** Open client connections on the proxy listener; 0: no cap. Not set: from the open-file limit (http/connections.ts). */
  max_connections: z.number().int().min(0).optional(),
});

export const ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519'] as const;
const algorithm = z.enum(ALGORITHMS, { message: `must be one of ${ALGORITHMS.join(', ')} (never none or HS*)` });

const issuer = z.strictObject({
  issuer: trustedUrl,
  jwks_uri: trustedUrl.optional(),
  algorithms: z.array(algorithm).min(1).default(['ES256', 'EdDSA', 'RS256', 'PS256']),
});

const token = z.strictObject({
  clock_skew_s: z.number().min(0).max(300).default(30),
  /** Minimum time between two JWKS fetches caused by an unknown `kid` (key rotation latency vs fetch flooding). */
  jwks_cooldown_s: z.number().min(0).max(3600).default(5),
  /** Background refresh of every issuer's keys. */
  jwks_refresh_s: z.number().min(0).max(86_400).default(300),
  /** Cache of verified tokens (by the exact compact string), bounded. */
  cache_max_entries: z.number().int().min(0).default(10_000),
});

const dpop = z.strictObject({
  required: z.boolean().default(true),
  max_age_s: seconds.default(60),
  clock_skew_s: z.number().min(0).max(300).default(5),
  nonce: z.boolean().default(false),
  algorithms: z.array(algorithm).min(1).default(['ES256', 'EdDSA', 'RS256', 'PS256']),
  /** Rotation period of the stateless nonce key. */
  nonce_window_s: seconds.default(60),
  nonce_secret: z.string().min(32).optional(),
  replay_max_entries: z.number().int().min(1000).default(1_000_000),
});

const authority = z.strictObject({
  issuer: trustedUrl,
  status_endpoint: trustedUrl.optional(),
  jwks_uri: trustedUrl.optional(),
  /** Accept seed 002's plain JSON Status response (unsigned) from this authority. Off by default. */
  accept_json_status: z.boolean().default(false),
});

/** RFC 8935 receiver path on the proxy port (`mission.events.push_path`). */
const DEFAULT_PUSH_PATH = '/.well-known/ssf/push';

const events = z.strictObject({
  push_path: normalizedPath.default(DEFAULT_PUSH_PATH),
  poll: z
    .strictObject({
      endpoint: trustedUrl,
      interval_s: seconds.default(5),
      max_events: z.number().int().min(1).max(1000).default(100),
      /** Bearer token the transmitter requires on poll requests (RFC 8936 section 2.4); use ${ENV}. */
      token: z.string().min(1).optional(),
    })
    .optional(),
  audience: z.string().min(1).optional(),
});

const mission = z.strictObject({
  required: z.boolean().default(true),
  accept_header_references: z.boolean().default(false),
  max_stale_s: seconds.default(60),
  status_timeout_s: seconds.default(2),
  client: z
    .strictObject({
      client_id: z.string().min(1),
      private_key_file: z.string().min(1),
    })
    .optional(),
  authorities: z.array(authority).default([]),
  events: events.prefault({}),
  cache_max_entries: z.number().int().min(100).default(100_000),
});

const METHOD = /^[A-Z][A-Z0-9-]*$/;
const method = z.string().regex(METHOD, 'must be an upper-case HTTP method');

const paramSource = z.union(
  [
    z.strictObject({ body: z.string().refine((p) => p === '' || p.startsWith('/'), 'must be a JSON Pointer ("" or starting with "/")') }),
    z.strictObject({ query: z.string().min(1) }),
    z.strictObject({ path: z.number().int().min(0) }),
    z.strictObject({ header: z.string().min(1).regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a header name') }),
  ],
  { message: 'must be exactly one of { body: <JSON Pointer> }, { query: <name> }, { path: <segment index> }, { header: <name> }' },
);

export const ACTION_CLASSES = [
  'non_consequential',
  'consequential_read',
  'consequential_write',
  'irreversible_action',
  'external_commitment',
  'privileged_administration',
] as const;

const route = z
  .strictObject({
    match: z.strictObject({
      method: z.union([method, z.array(method).min(1)]).optional(),
      path: z
        .string()
        .startsWith('/', 'must start with "/"')
        .refine((p) => !p.includes('**') || p === '/**' || (p.endsWith('/**') && !p.slice(0, -3).includes('**')), '"**" is allowed only as the last segment')
        .superRefine((p, ctx) => {
          const problem = pathProblem(p.endsWith('/**') ? p.slice(0, -3) || '/' : p);
          if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
        }),
    }),
    auth: z.enum(['none', 'required']).default('required'),
    action: z.string().regex(/^[A-Za-z0-9_.:-]+$/, 'must match [A-Za-z0-9_.:-]+').optional(),
    action_class: z.enum(ACTION_CLASSES).optional(),
    params: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'parameter names must match [A-Za-z0-9_.-]+'), paramSource).optional(),
  });

const mcp = z.strictObject({
  path: normalizedPath,
  resource: z.string().min(1).optional(),
  /** tool name -> action name (default: the tool name is the action). */
  tool_actions: z.record(z.string(), z.string().regex(/^[A-Za-z0-9_.:-]+$/)).default({}),
  /** tool name -> { parameter name: JSON Pointer into `arguments` } (e.g. send_email: { recipient: /to }). */
  tool_params: z.record(z.string(), z.record(z.string(), z.string().regex(/^(\/.*)?$/, 'must be a JSON Pointer ("" or starting with "/")'))).default({}),
  /** tool name -> pinned source_digest ("sha-256:…"). */
  tool_digests: z.record(z.string(), z.string().regex(/^sha-256:[A-Za-z0-9_-]{43}$/, 'must be "sha-256:" + 43 base64url characters')).default({}),
});

const idJagPolicy = z.strictObject({
  issuer: trustedUrl,
  purposes: z.array(z.string().min(1)).optional(),
  purpose_kinds: z.array(z.string().min(1)).optional(),
  act_profiles: z.array(z.string().min(1)).optional(),
});

const idJag = z.strictObject({
  token_path: normalizedPath,
  audience: z.string().min(1).optional(),
  trusted_issuers: z.array(trustedUrl).min(1),
  max_lifetime_s: seconds.default(300),
  forbidden_claims: z.array(z.string().min(1)).default([]),
  policy: z.array(idJagPolicy).default([]),
});

const evidence = z.strictObject({
  sink: z.string().min(1).default('stdout'),
  sign: z
    .strictObject({
      private_key_file: z.string().min(1),
      kid: z.string().min(1).optional(),
    })
    .optional(),
});

const replayStore = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('memory') }),
  z.strictObject({
    type: z.literal('redis'),
    url: z.string().superRefine((url, ctx) => {
      // Parsed as start parses it (its messages never repeat the URL, which may hold a password).
      try {
        parseRedisUrl(url);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }),
    key_prefix: z.string().default('mgw:'),
    connect_timeout_ms: z.number().int().positive().default(1000),
  }),
]);

/** A serialized origin (`https://app.example`, `http://localhost:5173`) as a browser sends it, or `*`. */
const corsOrigin = z.string().refine((v) => {
  if (v === '*') return true;
  const u = parseUrl(v);
  return u !== null && (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === v;
}, 'must be `*` or an origin as browsers send it: scheme://host[:port], lower case, no default port, no path or trailing slash')
  // The URL parser takes `*` in a host label: `https://*.app.example` would be compared as written
  // and match nothing (r21a 3).
  .refine((v) => v === '*' || !v.includes('*'), 'patterns are not supported (no browser sends `*` in an origin): list each origin, or `*` alone');

const cors = z.strictObject({
  allowed_origins: z.array(corsOrigin).min(1),
  max_age_s: z.number().int().min(0).max(86_400).default(600),
  expose_headers: z.array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a header name')).default([]),
});

const log = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export const configSchema = z
  .strictObject({
    listen: listen.prefault({}),
    admin: admin.prefault({}),
    public_base_url: httpUrl.refine((v) => {
      const u = parseUrl(v);
      return u !== null && (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '' && u.username === '' && u.password === '';
    }, 'must be scheme://host[:port] with no credentials, path, query or fragment'),
    resource: z.string().min(1),
    upstream,
    max_body_bytes: z.number().int().min(1).max(1_073_741_824).default(1_048_576),
    shutdown_grace_s: z.number().min(0).max(3600).default(10),
    trusted_proxies: z.array(z.string().min(1)).default([]),
    limits: limits.prefault({}),
    issuers: z.array(issuer).default([]),
    token: token.prefault({}),
    dpop: dpop.prefault({}),
    mission: mission.prefault({}),
    routes: z.array(route).default([]),
    mcp: mcp.optional(),
    id_jag: idJag.optional(),
    cors: cors.optional(),
    evidence: evidence.prefault({}),
    replay_store: replayStore.prefault({ type: 'memory' }),
    log: log.prefault({}),
  })
  // Cross-field checks run even when other keys failed, so `check` reports every problem at once.
  .superRefine((value, ctx) => crossChecks(value as unknown, ctx), { when: () => true });

type Ctx = { addIssue(issue: { code: 'custom'; path: PropertyKey[]; message: string }): void };

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function field(v: unknown, k: string): unknown {
  return v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
}

function crossChecks(c: unknown, ctx: Ctx): void {
  const routes = asArray(field(c, 'routes'));
  const seen = new Map<string, number>();
  routes.forEach((r, i) => {
    const m = field(r, 'match');
    const method = field(m, 'method');
    const path = field(m, 'path');
    if (typeof path === 'string') {
      const listed = method === undefined ? ['*'] : Array.isArray(method) ? [...method].map(String) : [String(method)];
      const methods = [...new Set(listed)].sort();
      if (methods.length < listed.length) ctx.addIssue({ code: 'custom', path: ['routes', i, 'match', 'method'], message: 'lists a method twice' });
      // Compared as matched: after normalization (`/a//b`, `/a/./b` and `/%61/b` are `/a/b`).
      const pattern = comparablePattern(path);
      if (pattern !== null) {
        const key = `${methods.join(',')} ${pattern}`;
        const first = seen.get(key);
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['routes', i, 'match'], message: `duplicates routes[${first}].match` });
        else seen.set(key, i);
      }
    }
    if (field(r, 'auth') !== 'none' && field(r, 'action') === undefined) {
      ctx.addIssue({ code: 'custom', path: ['routes', i, 'action'], message: 'is required on a route that needs auth' });
    }
  });
  const issuers = asArray(field(c, 'issuers'));
  const needsAuth = routes.some((r) => field(r, 'auth') !== 'none') || field(c, 'mcp') !== undefined;
  if (needsAuth && issuers.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['issuers'], message: 'at least one issuer is required when a route needs auth' });
  }
  const ids = new Set<unknown>();
  issuers.forEach((iss, i) => {
    const id = field(iss, 'issuer');
    if (ids.has(id)) ctx.addIssue({ code: 'custom', path: ['issuers', i, 'issuer'], message: 'duplicate issuer' });
    ids.add(id);
  });
  // The SET receiver is answered before routing: on mcp.path or the ID-JAG token path it would take their POSTs.
  const push = field(field(field(c, 'mission'), 'events'), 'push_path') ?? DEFAULT_PUSH_PATH;
  const taken: [string, unknown][] = [['mcp.path', field(field(c, 'mcp'), 'path')], ['id_jag.token_path', field(field(c, 'id_jag'), 'token_path')]];
  for (const [name, path] of taken) {
    if (path === push) ctx.addIssue({ code: 'custom', path: ['mission', 'events', 'push_path'], message: `is also ${name}; the SET receiver would take its requests` });
  }
  const clash = listenerClash(field(c, 'listen'), field(c, 'admin'));
  if (clash !== null) ctx.addIssue({ code: 'custom', path: ['admin', 'port'], message: clash });
  // Node's server refuses a headers timeout longer than a (non-zero) request timeout at start.
  const limits = field(c, 'limits');
  const headersTimeout = field(limits, 'headers_timeout_s');
  const requestTimeout = field(limits, 'request_timeout_s');
  if (typeof headersTimeout === 'number' && typeof requestTimeout === 'number' && requestTimeout > 0 && requestTimeout < headersTimeout) {
    ctx.addIssue({
      code: 'custom',
      path: ['limits', 'request_timeout_s'],
      message: `${requestTimeout} is below limits.headers_timeout_s (${headersTimeout}); it must be at least that, or 0 to disable it`,
    });
  }
  asArray(field(c, 'trusted_proxies')).forEach((cidr, i) => {
    if (typeof cidr !== 'string') return;
    const [addr, bits, extra] = cidr.split('/');
    const family = isIP(addr ?? '');
    const max = family === 4 ? 32 : 128;
    const ok = family !== 0 && extra === undefined && (bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= max));
    if (!ok) ctx.addIssue({ code: 'custom', path: ['trusted_proxies', i], message: 'must be an IP address or CIDR' });
  });
}

/** A route's path as it matches (normalized, `*` for a wildcard segment), or null when it cannot be normalized (reported on the path). */
function comparablePattern(path: string): string | null {
  try {
    const compiled = compilePattern(path);
    return compiled.segments.map((seg) => seg ?? '*').join('/') + (compiled.rest ? '/**' : '');
  } catch {
    return null;
  }
}

/**
 * A listener host as written, compared: lower case, an IPv6 address canonical and without brackets,
 * an IPv4-mapped one (::ffff:127.0.0.1) as the IPv4 address it binds.
 */
function canonicalHost(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (isIP(h) !== 6 || h.includes('%')) return h;
  h = new URL(`http://[${h}]/`).hostname.slice(1, -1);
  const mapped = V4_MAPPED.exec(h);
  if (mapped === null) return h;
  const hi = parseInt(mapped[1]!, 16);
  const lo = parseInt(mapped[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** An IPv4-mapped IPv6 address as the URL parser writes it (::ffff:7f00:1). */
const V4_MAPPED = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);

/**
 * The addresses a listener's host binds, as far as the config tells without a DNS lookup: every
 * address for a wildcard (0.0.0.0, ::), both loopback addresses for `localhost`, else the host
 * itself (another name is not resolved).
 */
function boundHosts(canonical: string): '*' | readonly string[] {
  if (WILDCARD_HOSTS.has(canonical)) return '*';
  return canonical === 'localhost' ? ['127.0.0.1', '::1'] : [canonical];
}

/** A listener address as host:port, an IPv6 host in brackets (`[::1]:9090`). */
export function formatListener(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The proxy and admin listeners on one port of one address: the second bind fails at start
 * (EADDRINUSE). An address that is a wildcard (0.0.0.0, ::) overlaps every address of the host;
 * `localhost` is 127.0.0.1 and ::1. Port 0 (a free port chosen at start) never clashes. A value
 * left out is its default (the check also runs on a config that fails elsewhere, before defaults
 * are filled in).
 */
function listenerClash(listenValue: unknown, adminValue: unknown): string | null {
  const lp = field(listenValue, 'port') ?? LISTEN_DEFAULT.port;
  const ap = field(adminValue, 'port') ?? ADMIN_DEFAULT.port;
  if (typeof lp !== 'number' || lp === 0 || lp !== ap) return null;
  const lh = String(field(listenValue, 'host') ?? LISTEN_DEFAULT.host);
  const ah = String(field(adminValue, 'host') ?? ADMIN_DEFAULT.host);
  const lc = canonicalHost(lh);
  const ac = canonicalHost(ah);
  const l = boundHosts(lc);
  const a = boundHosts(ac);
  let why: string;
  if (lc === ac) why = 'the same address';
  else if (l === '*' || a === '*') why = `${l === '*' ? lh : ah} is every address of this host`;
  else if (l.some((h) => a.includes(h))) why = `${lc === 'localhost' ? lh : ah} is 127.0.0.1 and ::1`;
  else return null;
  return `admin (${formatListener(ah, ap)}) and listen (${formatListener(lh, lp)}) overlap on port ${lp}: ${why}; the admin listener needs its own port`;
}

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type ParamSource = z.output<typeof paramSource>;
export type ActionClass = (typeof ACTION_CLASSES)[number];
