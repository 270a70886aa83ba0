/**
 * WebSocket upgrades (SPEC section 6): authorized by the same pipeline as any request, then
 * tunneled with http-proxy-3 (the maintained TypeScript successor of http-proxy, whose upstream
 * has been unmaintained since 2020). The upstream sees the same header policy as for HTTP.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import { Denial } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Pipeline } from '../pipeline/run.js';
import { upstreamHeaders } from './headers.js';

export class WebSocketTunnel {
  private readonly proxy: ProxyServer;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly target: string,
    private readonly logger: Logger,
  ) {
    this.proxy = createProxyServer({ target, ws: true, xfwd: false, changeOrigin: true });
    this.proxy.on('error', (err: Error, _req: unknown, socket: unknown) => {
      this.logger.warn({ err: err.message }, 'websocket upstream failed');
      const s = socket as Socket | undefined;
      if (s !== undefined && s.writable) {
        const body = JSON.stringify({ error: 'bad_gateway', error_description: 'the upstream could not be reached', denial_reason: null, decision_id: null });
        s.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
      } else {
        s?.destroy();
      }
    });
  }

  async handle(pipeline: Pipeline, req: IncomingMessage, res: ServerResponse, socket: Socket, head: Buffer): Promise<void> {
    const ctx = pipeline.context(req, res);
    if (ctx === null) return;
    const upgrade = req.headers['upgrade'];
    try {
      if (typeof upgrade !== 'string' || upgrade.toLowerCase() !== 'websocket') {
        throw new Denial('request_malformed', { description: 'only WebSocket upgrades are supported' });
      }
      const policy = await pipeline.admit(ctx);
      const identity = ctx.token === null ? [] : pipeline.identityHeaders(ctx);
      const flat = upstreamHeaders(req.rawHeaders, ctx.clientIp, policy, { decisionId: ctx.id, mission: identity });
      const headers: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) {
        const k = flat[i]!.toLowerCase();
        headers[k] = headers[k] === undefined ? flat[i + 1]! : `${headers[k]}, ${flat[i + 1]!}`;
      }
      headers['connection'] = 'Upgrade';
      headers['upgrade'] = upgrade;
      req.headers = headers;
      req.url = ctx.path + ctx.search;
      res.detachSocket(socket);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      ctx.upstreamStatus = 101;
      pipeline.record(ctx, 'permit', null);
      pipeline.deps.metrics.countDecision('permit', null);
      this.proxy.ws(req, socket, head);
    } catch (err) {
      pipeline.deny(ctx, err);
      res.once('finish', () => socket.end());
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.proxy.close();
  }
}
