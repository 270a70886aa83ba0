/**
 * `mission-gateway dev-authority call <mission id> --url <authority> <request url>`: one request as
 * an agent of that Mission makes it, for trying a gateway by hand without writing a DPoP client. It
 * makes a fresh ES256 key, gets a DPoP-bound token for the Mission from the authority's token
 * endpoint (client_credentials, `mission_id`, `resource`), sends the request with a fresh proof
 * (retried once with the server's nonce after `use_dpop_nonce`), and prints the answer as `curl -i`
 * does. Exit 0 when an answer came (whatever its status, as curl), 1 when none did.
 */
import { parseArgs } from 'node:util';
import { DemoAgent } from '../demo/agent.js';
import { adminFetch } from './admin-client.js';

export const CALL_USAGE = `  mission-gateway dev-authority call <mission id> --url <authority> <request url>
      [-X method] [-d body] [-H 'name: value']... [--client-id c] [--resource r] [--public-url u]
      [--admin-token t]
`;

/** A problem with the command line (exit 2). */
export class CallUsageError extends Error {
  override readonly name = 'CallUsageError';
}

export async function callVerb(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      request: { type: 'string', short: 'X' },
      data: { type: 'string', short: 'd' },
      header: { type: 'string', short: 'H', multiple: true },
      'client-id': { type: 'string' },
      resource: { type: 'string' },
      'public-url': { type: 'string' },
      'admin-token': { type: 'string' },
    },
  });
  const [missionId, target, ...rest] = positionals;
  if (missionId === undefined || target === undefined) throw new CallUsageError('call needs a Mission id and a request URL');
  if (rest.length > 0) throw new CallUsageError(`unexpected argument ${rest[0]}`);
  if (values.url === undefined || !URL.canParse(values.url)) throw new CallUsageError('--url <authority url> is required');
  if (!URL.canParse(target) || !/^https?:$/.test(new URL(target).protocol)) throw new CallUsageError('the request URL must be an absolute http(s) URL');
  if (values['public-url'] !== undefined && !URL.canParse(values['public-url'])) throw new CallUsageError('--public-url must be an absolute URL');
  const url = new URL(target);
  const method = (values.request ?? (values.data === undefined ? 'GET' : 'POST')).toUpperCase();
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const colon = h.indexOf(':');
    if (colon <= 0) throw new CallUsageError(`-H must be 'name: value' (got ${JSON.stringify(h)})`);
    headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  if (values.data !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
  // The proof's htu is the URL the gateway sees as public (its public_base_url), without the query.
  const publicBase = values['public-url'] === undefined ? url.origin : new URL(values['public-url']).origin;
  const htu = `${publicBase}${url.pathname}`;
  const authority = values.url.replace(/\/$/, '');

  const clientId = values['client-id'] ?? (await missionClient(authority, missionId, values['admin-token']));
  const agent = new DemoAgent(clientId);
  const { token } = await agent.token(`${authority}/token`, missionId, values.resource ?? publicBase);

  const send = (nonce?: string): Promise<Response> =>
    fetch(url, {
      method,
      headers: { ...headers, authorization: `DPoP ${token}`, dpop: agent.proof(method, htu, token, nonce) },
      ...(values.data === undefined ? {} : { body: values.data }),
      redirect: 'manual',
    });
  let res = await send();
  const nonce = res.headers.get('dpop-nonce');
  if (res.status === 401 && nonce !== null && (res.headers.get('www-authenticate') ?? '').includes('use_dpop_nonce')) {
    await res.arrayBuffer();
    res = await send(nonce);
  }
  out.write(`HTTP/1.1 ${res.status} ${res.statusText}\n`);
  res.headers.forEach((value, name) => out.write(`${name}: ${value}\n`));
  out.write(`\n${await res.text()}\n`);
  return 0;
}

/** The Mission's client_id, from the authority's admin API. */
async function missionClient(authority: string, missionId: string, adminToken: string | undefined): Promise<string> {
  const res = await adminFetch(authority, `/missions/${encodeURIComponent(missionId)}`, adminToken);
  const body = (await res.json().catch(() => null)) as { client_id?: unknown } | null;
  if (!res.ok || typeof body?.client_id !== 'string') throw new Error(`Mission ${missionId} not found at ${authority} (${res.status}); give --client-id to skip the lookup`);
  return body.client_id;
}
