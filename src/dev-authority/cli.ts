/**
 * `mission-gateway dev-authority …`: run the development authority until SIGINT/SIGTERM, or
 * manage Missions of a running one through its admin API. Exit codes: 0 ok, 1 the call failed,
 * 2 usage error.
 */
import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { JSONWebKeySet, JWK } from 'jose';
import { adminFetch } from './admin-client.js';
import { CALL_USAGE, CallUsageError, callVerb } from './call.js';

export const DEV_AUTHORITY_USAGE = `Usage:
  mission-gateway dev-authority [--port n] [--host h] [--issuer url]
      [--client <client_id>=<JWK, JWKS or PEM file>]... [--receiver <endpoint>=<audience>]...
      [--poll-audience <audience>]... [--seed <missions json file>] [--admin-token t] [--poll-token t]
      [--keys-dir dir] [--max-stale s] [--token-ttl s] [--allow-bearer] [--quiet]
  mission-gateway dev-authority mission create --url <authority> --subject s --client-id c
      --purpose p --authority <json | @file> [--expires-at t] [--admin-token t]
  mission-gateway dev-authority mission get|suspend|resume|revoke|complete|expire <id> --url <authority>
      [--suspend-until t] [--on-expiry resume|revoke] [--admin-token t]
  mission-gateway dev-authority mission authority <id> --url <authority> --authority <json | @file>
${CALL_USAGE}`;

class UsageError extends Error {
  override readonly name = 'UsageError';
}

export async function devAuthorityCli(argv: string[]): Promise<number> {
  const args = argv[0] === 'dev-authority' ? argv.slice(1) : argv;
  try {
    if (args[0] === 'mission') return await missionVerb(args.slice(1));
    if (args[0] === 'call') return await callVerb(args.slice(1));
    if (args[0] === '--help' || args[0] === '-h' || args[0] === 'help') {
      process.stdout.write(DEV_AUTHORITY_USAGE);
      return 0;
    }
    return await serve(args);
  } catch (e) {
    if (e instanceof UsageError || e instanceof CallUsageError || (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`dev-authority: ${e.message}\n${DEV_AUTHORITY_USAGE}`);
      return 2;
    }
    process.stderr.write(`dev-authority: ${e instanceof Error ? e.message : 'failed'}\n`);
    return 1;
  }
}

const int = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${name} must be a non-negative integer`);
  return n;
};

/** Splits `left=right` where `right` may itself contain "=" (URLs with queries). */
function pair(v: string, name: string, rightIsUrl = false): [string, string] {
  const at = rightIsUrl ? v.search(/=https?:/) : v.indexOf('=');
  if (at <= 0 || at === v.length - 1) throw new UsageError(`${name} must be <left>=<right>`);
  return [v.slice(0, at), v.slice(at + 1)];
}

async function readJsonFile(path: string): Promise<unknown> {
  return JSON.parse(await readFile(path, 'utf8')) as unknown;
}

/** A client's key file: JWK or JWKS JSON, or a PEM (public, or PKCS#8 private: its public half). */
async function readKeyFile(path: string): Promise<JWK | JSONWebKeySet> {
  const text = await readFile(path, 'utf8');
  if (text.trimStart().startsWith('-----BEGIN')) return createPublicKey(text).export({ format: 'jwk' }) as JWK;
  return JSON.parse(text) as JWK | JSONWebKeySet;
}

async function serve(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      issuer: { type: 'string' },
      client: { type: 'string', multiple: true },
      receiver: { type: 'string', multiple: true },
      'poll-audience': { type: 'string', multiple: true },
      seed: { type: 'string' },
      'admin-token': { type: 'string' },
      'poll-token': { type: 'string' },
      'keys-dir': { type: 'string' },
      'max-stale': { type: 'string' },
      'token-ttl': { type: 'string' },
      'allow-bearer': { type: 'boolean' },
      quiet: { type: 'boolean' },
    },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
  const clients = (values.client ?? []).map((c) => pair(c, '--client'));
  const receivers = (values.receiver ?? []).map((r) => pair(r, '--receiver', true));
  const port = int(values.port, '--port');
  const maxStale = int(values['max-stale'], '--max-stale');
  const ttl = int(values['token-ttl'], '--token-ttl');

  const { startDevAuthority } = await import('./index.js');
  const dev = await startDevAuthority({
    ...(port === undefined ? {} : { port }),
    ...(values.host === undefined ? {} : { host: values.host }),
    ...(values.issuer === undefined ? {} : { issuer: values.issuer }),
    ...(maxStale === undefined ? {} : { maxStaleSeconds: maxStale }),
    ...(ttl === undefined ? {} : { tokenTtlSeconds: ttl }),
    ...(values['admin-token'] === undefined ? {} : { adminToken: values['admin-token'] }),
    ...(values['poll-token'] === undefined ? {} : { pollToken: values['poll-token'] }),
    ...(values['keys-dir'] === undefined ? {} : { keysDir: values['keys-dir'] }),
    allowBearer: values['allow-bearer'] === true,
    quiet: values.quiet === true,
  });
  try {
    for (const [id, file] of clients) dev.registerClient(id, await readKeyFile(file));
    for (const [endpoint, audience] of receivers) dev.addReceiver({ endpoint, audience });
    const polls = (values['poll-audience'] ?? []).map((a) => dev.addPollAudience(a));
    const created = [];
    if (values.seed !== undefined) {
      const seed = (await readJsonFile(values.seed)) as unknown;
      const list = Array.isArray(seed) ? seed : (seed as { missions?: unknown[] }).missions ?? [];
      for (const m of list) created.push((await dev.missions.create(m as Parameters<typeof dev.missions.create>[0])).id);
    }
    // One JSON line on stdout, for scripts; the warning and logs go to stderr.
    process.stdout.write(`${JSON.stringify({ issuer: dev.url, endpoints: dev.endpoints, poll_endpoints: polls, missions: created })}\n`);
  } catch (e) {
    await dev.close();
    throw e;
  }
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await dev.close();
  return 0;
}

const VERBS = new Set(['create', 'get', 'suspend', 'resume', 'revoke', 'complete', 'expire', 'authority']);

async function missionVerb(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      subject: { type: 'string' },
      'client-id': { type: 'string' },
      purpose: { type: 'string' },
      authority: { type: 'string' },
      'expires-at': { type: 'string' },
      'suspend-until': { type: 'string' },
      'on-expiry': { type: 'string' },
      'admin-token': { type: 'string' },
    },
  });
  const [verb, id, ...rest] = positionals;
  if (verb === undefined || !VERBS.has(verb)) throw new UsageError('mission needs a verb: create, get, suspend, resume, revoke, complete, expire or authority');
  if (values.url === undefined || !URL.canParse(values.url)) throw new UsageError('--url <authority url> is required');
  if (rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`);
  const authority = async (): Promise<unknown> => {
    const a = values.authority;
    if (a === undefined) throw new UsageError('--authority <json | @file> is required');
    try {
      return a.startsWith('@') ? await readJsonFile(a.slice(1)) : JSON.parse(a);
    } catch {
      throw new UsageError('--authority is not valid JSON');
    }
  };

  let path: string;
  let body: Record<string, unknown> | undefined = {};
  if (verb === 'create') {
    if (id !== undefined) throw new UsageError(`unexpected argument ${id}`);
    const { subject, purpose } = values;
    const clientId = values['client-id'];
    if (subject === undefined || clientId === undefined || purpose === undefined) throw new UsageError('create needs --subject, --client-id and --purpose');
    path = '/missions';
    body = { subject, client_id: clientId, purpose, authorization_details: await authority(), ...(values['expires-at'] === undefined ? {} : { expires_at: values['expires-at'] }) };
  } else {
    if (id === undefined) throw new UsageError(`${verb} needs a Mission id`);
    path = `/missions/${encodeURIComponent(id)}`;
    if (verb === 'get') {
      body = undefined;
    } else if (verb === 'authority') {
      path += '/authority';
      body = { authorization_details: await authority() };
    } else {
      path += `/${verb}`;
      if (verb === 'suspend') {
        const onExpiry = values['on-expiry'];
        if (onExpiry !== undefined && onExpiry !== 'resume' && onExpiry !== 'revoke') throw new UsageError('--on-expiry must be resume or revoke');
        body = { ...(values['suspend-until'] === undefined ? {} : { suspend_until: values['suspend-until'] }), ...(onExpiry === undefined ? {} : { on_expiry: onExpiry }) };
      }
    }
  }

  const res = await adminFetch(values.url, path, values['admin-token'], body);
  const text = await res.text();
  (res.ok ? process.stdout : process.stderr).write(`${text}\n`);
  return res.ok ? 0 : 1;
}
