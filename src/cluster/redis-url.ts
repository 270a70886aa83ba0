/**
 * Redis connection URLs (config `replay_store.url`) mapped to ioredis options:
 *
 *   redis://[user:pass@]host[:6379][/db]                      one server (rediss:// for TLS)
 *   redis+sentinel://[user:pass@]host[:26379],host/master[/db] Sentinel; user:pass authenticate to the master,
 *                                                             `?sentinel_username=&sentinel_password=` to the Sentinels
 *   redis+cluster://[user:pass@]host[:6379],host              Redis Cluster seed nodes
 *
 * The `+sentinel` and `+cluster` forms list several hosts, which WHATWG URL cannot parse, so this is
 * a small hand-written parser. Errors never repeat the URL: it may carry a password.
 */
import type { ClusterOptions, RedisOptions } from 'ioredis';

export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

export type RedisTarget =
  | { readonly kind: 'standalone'; readonly options: RedisOptions }
  | { readonly kind: 'sentinel'; readonly options: RedisOptions }
  | { readonly kind: 'cluster'; readonly nodes: readonly RedisNode[]; readonly options: ClusterOptions };

export class RedisUrlError extends Error {
  constructor(detail: string) {
    super(`invalid Redis URL: ${detail}`);
    this.name = 'RedisUrlError';
  }
}

const SCHEME = /^(rediss?)(\+sentinel|\+cluster)?:\/\/(.*)$/s;
const QUERY_KEYS = new Set(['sentinel_username', 'sentinel_password']);

function decode(part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new RedisUrlError(`${what} is not valid percent-encoding`);
  }
}

function parsePort(text: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new RedisUrlError('port must be a number');
  const port = Number(text);
  if (port < 1 || port > 65535) throw new RedisUrlError('port must be 1-65535');
  return port;
}

/** `host`, `host:port`, `[v6]`, `[v6]:port`. */
function parseNode(text: string, defaultPort: number): RedisNode {
  if (text === '') throw new RedisUrlError('empty host');
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end < 2) throw new RedisUrlError('malformed IPv6 host');
    const host = text.slice(1, end);
    const rest = text.slice(end + 1);
    if (rest === '') return { host, port: defaultPort };
    if (!rest.startsWith(':')) throw new RedisUrlError('malformed IPv6 host');
    return { host, port: parsePort(rest.slice(1)) };
  }
  const colon = text.lastIndexOf(':');
  if (colon === -1) return { host: text, port: defaultPort };
  const host = text.slice(0, colon);
  if (host === '' || host.includes(':')) throw new RedisUrlError('malformed host');
  return { host, port: parsePort(text.slice(colon + 1)) };
}

function parseDb(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^\d{1,2}$/.test(text)) throw new RedisUrlError('database must be a number');
  return Number(text);
}

export function parseRedisUrl(url: string): RedisTarget {
  const m = SCHEME.exec(url);
  if (m === null) throw new RedisUrlError('must start with redis://, rediss://, redis+sentinel:// or redis+cluster://');
  const tls = m[1] === 'rediss';
  const mode = m[2] === '+sentinel' ? 'sentinel' : m[2] === '+cluster' ? 'cluster' : 'standalone';
  let rest = m[3] ?? '';

  const hash = rest.indexOf('#');
  if (hash !== -1) throw new RedisUrlError('must not have a fragment');
  let query = new URLSearchParams();
  const q = rest.indexOf('?');
  if (q !== -1) {
    query = new URLSearchParams(rest.slice(q + 1));
    rest = rest.slice(0, q);
  }
  for (const key of query.keys()) {
    // Not quoted: with a raw "?" in the password, what follows it reads as a query.
    if (!QUERY_KEYS.has(key) || mode !== 'sentinel') {
      throw new RedisUrlError(`unsupported query parameter: ${mode === 'sentinel' ? 'redis+sentinel:// takes only sentinel_username and sentinel_password' : 'only redis+sentinel:// takes any'}; a "?" in a password must be written %3F`);
    }
  }

  // userinfo ends at the last "@" before the path: passwords may contain "/" only percent-encoded.
  const slash = rest.indexOf('/');
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? [] : rest.slice(slash + 1).split('/');
  const at = authority.lastIndexOf('@');
  const userinfo = at === -1 ? null : authority.slice(0, at);
  const hostlist = at === -1 ? authority : authority.slice(at + 1);

  const auth: { username?: string; password?: string } = {};
  if (userinfo !== null) {
    const colon = userinfo.indexOf(':');
    const user = colon === -1 ? userinfo : userinfo.slice(0, colon);
    if (user !== '') auth.username = decode(user, 'username');
    if (colon !== -1) auth.password = decode(userinfo.slice(colon + 1), 'password');
  }

  const hosts = hostlist.split(',');
  if (mode === 'standalone') {
    if (hosts.length !== 1) throw new RedisUrlError('redis:// takes one host; use redis+sentinel:// or redis+cluster:// for several');
    if (path.length > 1) throw new RedisUrlError('path must be /<db>');
    const node = parseNode(hosts[0] ?? '', 6379);
    const db = parseDb(path[0]);
    const options: RedisOptions = { host: node.host, port: node.port, ...auth };
    if (db !== undefined) options.db = db;
    if (tls) options.tls = { servername: node.host };
    return { kind: 'standalone', options };
  }

  if (mode === 'sentinel') {
    const sentinels = hosts.map((h) => parseNode(h, 26379));
    const name = path[0] === undefined || path[0] === '' ? null : decode(path[0], 'master name');
    if (name === null) throw new RedisUrlError('redis+sentinel:// needs the master name as its path');
    if (path.length > 2) throw new RedisUrlError('path must be /<master>[/<db>]');
    const db = parseDb(path[1]);
    const options: RedisOptions = { sentinels: sentinels.map((n) => ({ host: n.host, port: n.port })), name, ...auth };
    if (db !== undefined) options.db = db;
    const su = query.get('sentinel_username');
    const sp = query.get('sentinel_password');
    if (su !== null) options.sentinelUsername = su;
    if (sp !== null) options.sentinelPassword = sp;
    if (tls) {
      options.tls = {};
      options.enableTLSForSentinelMode = true;
      options.sentinelTLS = {};
    }
    return { kind: 'sentinel', options };
  }

  if (path.length > 1 || (path.length === 1 && path[0] !== '')) throw new RedisUrlError('redis+cluster:// takes no database path');
  const nodes = hosts.map((h) => parseNode(h, 6379));
  const redisOptions: NonNullable<ClusterOptions['redisOptions']> = { ...auth };
  if (tls) redisOptions.tls = {};
  return { kind: 'cluster', nodes, options: { redisOptions } };
}
