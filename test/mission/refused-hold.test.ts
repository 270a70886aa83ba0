/**
 * r18a 1: a hold refused at dispatch is acted on. A Mission cut after a request was admitted (its
 * ticket's `admittedAt`) and before the request reached the upstream makes MissionHolds.hold return
 * false; each caller must then end the exchange itself, not send the request:
 *  - Upstream.send (src/http/forward.ts): nothing is sent upstream, the outcome is the cut;
 *  - relay() (src/mcp/relay.ts): the MCP upstream gets no POST, the client connection is cut;
 *  - McpSessions.use (src/mcp/sessions.ts): the session is ended (the upstream sent its DELETE).
 * The cut lands deterministically between admission and dispatch (called in between, no timers);
 * the upstreams are real servers on 127.0.0.1:0, and each case has a control admitted after the cut.
 */
import { EventEmitter, once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { Upstream, type ForwardOutcome } from '../../src/http/forward.js';
import { makeDropSet, TrustedProxies } from '../../src/http/headers.js';
import { relay } from '../../src/mcp/relay.js';
import { McpSessions, upstreamEnder } from '../../src/mcp/sessions.js';
import { MissionHolds } from '../../src/mission/holds.js';
import { refKey } from '../../src/mission/key.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { newRequestContext, type AccessToken, type MissionReference, type MissionView, type RequestContext } from '../../src/pipeline/context.js';
import { Challenges } from '../../src/pipeline/respond.js';
import { Pipeline } from '../../src/pipeline/run.js';

const logger = createLogger('silent');
const ISSUER = 'https://as.example.com';
const RESOURCE = 'https://api.example.com';
const REF: MissionReference = { form: 'claim', issuer: ISSUER, id: 'msn_1', s256: null, authorityHash: null };
const KEY = refKey(REF);
const MISSION: MissionView = {
  id: 'msn_1',
  issuer: ISSUER,
  state: 'active',
  version: 1,
  authorityHash: null,
  source: 'fresh',
  authority: null,
  expiresAt: null,
  suspendUntil: null,
  subject: 'user_1',
  subjectIssuer: null,
  clientId: 'agent_1',
};
const TOKEN: AccessToken = { raw: 'x', issuer: ISSUER, subject: 'user_1', clientId: 'agent_1', jti: 'jti_1', exp: Math.floor(Date.now() / 1000) + 3600, jkt: null, claims: {} };

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** A server on 127.0.0.1:0, closed after the test. */
async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server: Server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanup.push(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** An upstream that records every request it receives (`METHOD path`) and answers 200 JSON. */
async function recordingUpstream(): Promise<{ url: string; seen: string[]; next: () => Promise<IncomingMessage> }> {
  const seen: string[] = [];
  const arrivals = new EventEmitter();
  const url = await listen((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    arrivals.emit('request', req);
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{"paid":true}}'));
  });
  return { url, seen, next: () => once(arrivals, 'request').then(([req]) => req as IncomingMessage) };
}

function upstreamTo(url: string, holds: MissionHolds | null): Upstream {
  // One connection: requests reach the upstream in the order they were dispatched.
  const upstream = new Upstream({ url, timeoutMs: 5000, connections: 1, keepAliveTimeoutMs: 1000, holds, preserveHost: false });
  cleanup.push(() => upstream.destroy());
  return upstream;
}

/** The RequestContext of a request under Mission msn_1, admitted at `started` (performance.now()). */
function admitted(started: number, req: IncomingMessage, res: ServerResponse, kind: 'route' | 'mcp' = 'route'): RequestContext {
  const ctx = newRequestContext({ id: `dec_${started}`, started, req, res, method: 'POST', path: kind === 'mcp' ? '/mcp' : '/pay', search: '', clientIp: '127.0.0.1', audience: RESOURCE, kind, token: TOKEN, stage: 'forward' });
  ctx.missionRef = REF;
  ctx.mission = MISSION;
  return ctx;
}

/** Cuts msn_1 and returns a time strictly after the cut: a request admitted then holds again. */
function cutNow(holds: MissionHolds): () => number {
  holds.cut(KEY, 'revoked');
  const t = performance.now();
  return () => {
    let now = performance.now();
    while (now <= t) now = performance.now();
    return now;
  };
}

/** What the client saw: `200 <body>`, or `closed` when the gateway broke the connection. */
function post(url: string): Promise<string> {
  return new Promise((resolve) => {
    const r = request(url, { method: 'POST', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(`${res.statusCode} ${body}`));
      res.on('error', () => resolve('closed'));
    });
    r.on('error', () => resolve('closed'));
    r.end();
  });
}

function newHolds(cuts: string[] = []): MissionHolds {
  const holds = new MissionHolds({ logger, counted: (cause, n) => void cuts.push(`${cause} ${n}`) });
  cleanup.push(async () => holds.close());
  return holds;
}

describe('r18a 1: a Mission cut between admission and dispatch refuses the hold, and the caller acts on it', () => {
  it('Upstream.send: the request is never sent upstream; the outcome is the cut (aborted, mission_cut) and the client connection closes', async () => {
    const up = await recordingUpstream();
    const cuts: string[] = [];
    const holds = newHolds(cuts);
    const upstream = upstreamTo(up.url, holds);
    const outcomes: ForwardOutcome[] = [];
    let atReturn: ForwardOutcome[] = [];
    let admitAfterCut: (() => number) | null = null;
    const front = await listen((req, res) => {
      const started = admitAfterCut === null ? performance.now() : admitAfterCut();
      const ctx = admitted(started, req, res);
      // The Mission is revoked after the decision, before the dispatch.
      if (admitAfterCut === null) admitAfterCut = cutNow(holds);
      const ticket = holds.ticket(ctx);
      upstream.send({ method: 'POST', path: req.url!, headers: ['host', 'api.example.com'], body: Buffer.from('pay'), responseHeaders: null, sentAt: performance.now(), ticket }, res, () => undefined, (o) => outcomes.push(o));
      atReturn = outcomes.slice();
    });

    expect(await post(`${front}/before`)).toBe('closed');
    // Settled by the refusal itself, before send returned: not by an upstream answer.
    expect(atReturn).toHaveLength(1);
    expect(atReturn[0]).toMatchObject({ kind: 'aborted', reason: { code: 'mission_cut' } });
    expect(cuts).toEqual(['state_change 1']);

    // Control, over the same single upstream connection: admitted after the cut, sent and answered.
    // Had /before been dispatched, the upstream would have received it first.
    expect(await post(`${front}/after`)).toBe('200 {"jsonrpc":"2.0","id":1,"result":{"paid":true}}');
    expect(up.seen).toEqual(['POST /after']);
    expect(outcomes.map((o) => o.kind)).toEqual(['aborted', 'response']);
  });

  it('relay(): the MCP upstream gets no POST, and the client connection is cut', async () => {
    const up = await recordingUpstream();
    const holds = newHolds();
    const upstream = upstreamTo(up.url, null);
    const policy = { drop: makeDropSet(true), trusted: new TrustedProxies([]), proto: 'https', upstreamHost: upstream.host };
    const challenges = new Challenges({ algs: 'ES256', resourceMetadata: `${RESOURCE}/.well-known/oauth-protected-resource`, bearerAllowed: true });
    const pass = (): void => {};
    const pipeline = new Pipeline({
      resource: RESOURCE,
      routes: [],
      stages: { credentials: pass, token: pass, dpop: pass, missionReference: pass, missionState: pass, parameters: pass, authority: pass },
      reviewer: () => () => true,
      upstream,
      evidence: { write: () => {}, healthy: () => true, close: async () => {} },
      holds,
      metrics: new Metrics({ defaultMetrics: false }),
      logger,
      maxBodyBytes: 1_048_576,
      challenges,
      headers: { strip: policy, passCredentials: policy },
      mcp: null,
      idJag: null,
      pushPath: '/.well-known/mission-events',
      tokenSkewS: 30,
    });
    const call = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'pay', arguments: { amount: 100 } } }));
    const relays: Promise<void>[] = [];
    let admitAfterCut: (() => number) | null = null;
    const front = await listen((req, res) => {
      const started = admitAfterCut === null ? performance.now() : admitAfterCut();
      const ctx = admitted(started, req, res, 'mcp');
      if (admitAfterCut === null) admitAfterCut = cutNow(holds);
      relays.push(relay(ctx, pipeline, { body: call, answers: [], batch: false, lists: null, onOutcome: () => {} }, logger));
    });

    expect(await post(`${front}/mcp`)).toBe('closed');
    // relay has returned: had it sent the call, it would have waited for the upstream's answer first.
    await relays[0];
    expect(up.seen).toEqual([]);
    expect(holds.size).toBe(0);

    // Control: admitted after the cut, the call is held and relayed.
    expect(await post(`${front}/mcp`)).toBe('200 {"jsonrpc":"2.0","id":1,"result":{"paid":true}}');
    await relays[1];
    expect(up.seen).toEqual(['POST /mcp']);
  });

  it('McpSessions.use(): the session is ended instead of held; the upstream is sent its DELETE, later requests are denied', async () => {
    const up = await recordingUpstream();
    const holds = newHolds();
    const sessions = new McpSessions(holds, logger);
    cleanup.push(async () => sessions.close());
    const upstream = upstreamTo(up.url, null);
    sessions.terminate = upstreamEnder(upstream, '/mcp', 'api.example.com', logger);
    const res = new EventEmitter() as unknown as ServerResponse;
    const ctx = admitted(performance.now(), {} as IncomingMessage, res, 'mcp');
    const admitAfterCut = cutNow(holds);
    const deleted = up.next();

    sessions.use('s', ctx, null, () => null);
    expect(sessions.isEnded('s')).toBe(true);
    expect(sessions.ownerOf('s')).toBeUndefined();
    expect(holds.size).toBe(0);
    const sent = await deleted;
    expect(`${sent.method} ${sent.url}`).toBe('DELETE /mcp');
    expect(sent.headers['mcp-session-id']).toBe('s');

    // Control: admitted after the cut, a request holds its session, and the next cut ends it.
    sessions.use('t', admitted(admitAfterCut(), {} as IncomingMessage, res, 'mcp'), null, () => null);
    expect(sessions.isEnded('t')).toBe(false);
    expect(sessions.ownerOf('t')).toBeDefined();
    holds.cut(KEY, 'revoked');
    expect(sessions.isEnded('t')).toBe(true);
  });
});
