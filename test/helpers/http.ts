/** A raw HTTP client: sends the path exactly as given (fetch would normalize it). */
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  json<T = Record<string, unknown>>(): T;
  text(): string;
}

export function raw(base: string, opts: { method?: string; path: string; headers?: OutgoingHttpHeaders; body?: Buffer | string }): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers ?? {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          json: <T>() => JSON.parse(body.toString('utf8')) as T,
          text: () => body.toString('utf8'),
        });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** Sends raw bytes on a TCP socket and returns everything received until close or `waitMs`. */
export function rawSocket(base: string, bytes: string | Buffer, waitMs = 1000): Promise<string> {
  const u = new URL(base);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = connect(Number(u.port), u.hostname, () => s.write(bytes));
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const t = setTimeout(done, waitMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('close', done);
    s.on('error', done);
  });
}

/** A TCP connection to `base`, once connected: for tests that write a request piece by piece. */
export function openSocket(base: string): Promise<Socket> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => resolve(s));
    s.once('error', reject);
  });
}
