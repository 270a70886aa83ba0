/** Small node:http helpers shared by the dev authority's handlers. */
import type { IncomingMessage, ServerResponse } from 'node:http';

const MAX_BODY = 256 * 1024;

export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof body['error'] === 'string' ? body['error'] : 'error');
  }
}

/** An OAuth-style `{error, error_description}` failure. */
export const oauthError = (status: number, error: string, description: string, extra: Record<string, unknown> = {}): HttpError =>
  new HttpError(status, { error, error_description: description, ...extra });

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw oauthError(413, 'invalid_request', 'request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Form parameters; a repeated parameter is an error unless listed in `multi`. */
export async function readForm(req: IncomingMessage, multi: readonly string[] = []): Promise<Map<string, string[]>> {
  if (mediaType(req) !== 'application/x-www-form-urlencoded') {
    throw oauthError(400, 'invalid_request', 'expected application/x-www-form-urlencoded');
  }
  const params = new URLSearchParams(await readBody(req));
  const out = new Map<string, string[]>();
  for (const [k, v] of params) {
    const list = out.get(k);
    if (list === undefined) out.set(k, [v]);
    else if (multi.includes(k)) list.push(v);
    else throw oauthError(400, 'invalid_request', `repeated parameter ${k}`);
  }
  return out;
}

export const param = (form: Map<string, string[]>, name: string): string | undefined => form.get(name)?.[0];

export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const text = await readBody(req);
  if (text.trim() === '') return {};
  if (mediaType(req) !== 'application/json') throw oauthError(415, 'invalid_request', 'expected application/json');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw oauthError(400, 'invalid_request', 'body is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw oauthError(400, 'invalid_request', 'body must be a JSON object');
  return value as Record<string, unknown>;
}

export function send(res: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  send(res, status, 'application/json', JSON.stringify(body), headers);
}

export const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' } as const;
