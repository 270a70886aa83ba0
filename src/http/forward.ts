/**
 * Forwarding to the upstream over a kept-alive undici Pool. Bodies stream both ways with
 * backpressure; only the wait for response headers is bounded (`upstream.timeout_s`): a stream that
 * has started never times out. A client that goes away aborts the upstream request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { clientHeaders } from './headers.js';

export interface UpstreamOptions {
  readonly url: string;
  readonly timeoutMs: number;
  readonly connections: number;
  readonly keepAliveTimeoutMs: number;
}

export type ForwardOutcome =
  | { readonly kind: 'response'; readonly status: number }
  | { readonly kind: 'error'; readonly code: 'bad_gateway' | 'gateway_timeout'; readonly error: Error }
  | { readonly kind: 'aborted' };

export interface ForwardRequest {
  readonly method: string;
  /** Normalized path + raw query. */
  readonly path: string;
  readonly headers: string[];
  /** A buffered body, the client stream, or null when there is none. */
  readonly body: Buffer | IncomingMessage | null;
  /** Extra response headers (e.g. DPoP-Nonce). */
  readonly responseHeaders: Record<string, string> | null;
}

export class Upstream {
  readonly pool: Pool;
  readonly origin: string;
  readonly host: string;

  constructor(opts: UpstreamOptions) {
    const u = new URL(opts.url);
    this.origin = u.origin;
    this.host = u.host;
    this.basePath = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
    this.pool = new Pool(this.origin, {
      connections: opts.connections,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: 0,
      keepAliveTimeout: opts.keepAliveTimeoutMs,
      pipelining: 1,
    });
  }

  /** Upstream URL path prefix ("" when the upstream URL has no path). */
  readonly basePath: string;

  /**
   * Sends the request and streams the response to `res`. Resolves once the outcome is known: at
   * response start (status), on failure before headers, or when the client went away.
   * `onResponseStart` runs just before headers are written to the client.
   */
  forward(req: ForwardRequest, res: ServerResponse, onStart: (status: number) => void): Promise<ForwardOutcome> {
    return new Promise<ForwardOutcome>((resolve) => {
      let settled = false;
      let started = false;
      let controller: Dispatcher.DispatchController | null = null;
      const settle = (o: ForwardOutcome): void => {
        if (!settled) {
          settled = true;
          resolve(o);
        }
      };
      const onClose = (): void => {
        if (!res.writableFinished) {
          controller?.abort(new Error('client closed'));
          settle({ kind: 'aborted' });
        }
      };
      const onDrain = (): void => controller?.resume();
      res.once('close', onClose);

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(c) {
          controller = c;
          if (res.destroyed) c.abort(new Error('client closed'));
        },
        onResponseStart(c, statusCode, headers, statusMessage) {
          if (statusCode < 200) return; // 1xx informational: wait for the final response
          started = true;
          onStart(statusCode);
          const out = clientHeaders(headers as Record<string, string | string[] | undefined>);
          if (req.responseHeaders !== null) Object.assign(out, req.responseHeaders);
          try {
            res.writeHead(statusCode, statusMessage || undefined, out);
            // A response without a length may be a stream (SSE, long poll) whose first byte comes
            // much later: its headers must reach the client now. A sized one goes out with its body
            // in one write.
            if (headers['content-length'] === undefined) res.flushHeaders();
          } catch (err) {
            c.abort(err as Error);
            return;
          }
          settle({ kind: 'response', status: statusCode });
        },
        onResponseData(c, chunk) {
          if (!res.write(chunk)) {
            c.pause();
            res.once('drain', onDrain);
          }
        },
        onResponseEnd() {
          res.off('close', onClose);
          res.end();
        },
        onResponseError(_c, err) {
          res.off('close', onClose);
          if (!started) {
            const code = (err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT' ? 'gateway_timeout' : 'bad_gateway';
            settle({ kind: 'error', code, error: err });
          } else {
            // Mid-stream failure: the status is already sent; cut the client connection so it sees the break.
            res.destroy(err);
          }
          if (!settled) settle({ kind: 'aborted' });
        },
      };

      this.pool.dispatch(
        {
          origin: this.origin,
          method: req.method,
          path: this.basePath + req.path,
          headers: req.headers.length === 0 ? null : ['host', this.host, ...req.headers],
          body: req.body,
        },
        handler,
      );
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}
