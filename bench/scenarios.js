/**
 * The benchmark scenarios: how each server is started, what a request looks like, and how to tell
 * that a scenario's parts are not wired yet (a probe request that does not succeed).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clientKey, proofSigner } from './lib/dpop.js';
import { NodeChild, pinned, procStats, SERVER_CORE } from './lib/proc.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

/** The gateway's public_base_url and resource: DPoP htu is computed against it, not the socket. */
export const PUBLIC = 'https://api.bench.example';
const GET_PATH = '/invoices/inv_0001';
const POST_PATH = '/payments';
const MCP_PATH = '/mcp';

/** Pads a JSON object with a `memo` member to exactly `size` bytes. */
function padTo(obj, size, key = 'memo', into = obj) {
  into[key] = '';
  const base = Buffer.byteLength(JSON.stringify(obj));
  into[key] = 'x'.repeat(Math.max(0, size - base));
  return JSON.stringify(obj);
}

const PAYMENT = { amount: '120.00', currency: 'USD', to: 'ap@vendor.example', tenant: 'acme' };
export const POST_BODY = padTo({ ...PAYMENT }, 1024);
const mcpArgs = { amount: '120.00', currency: 'USD', recipient: 'ap@vendor.example', tenant: 'acme' };
const mcpCall = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'create_payment', arguments: mcpArgs } };
export const MCP_BODY = padTo(mcpCall, 1024, 'memo', mcpArgs);

export const WORKLOADS = {
  'GET-10': { id: 'GET-10', method: 'GET', connections: 10, label: 'GET 200 B, 10 conn' },
  'GET-50': { id: 'GET-50', method: 'GET', connections: 50, label: 'GET 200 B, 50 conn' },
  'POST-10': { id: 'POST-10', method: 'POST', connections: 10, label: 'POST 1 KiB, 10 conn' },
  'POST-50': { id: 'POST-50', method: 'POST', connections: 50, label: 'POST 1 KiB, 50 conn' },
};
const ALL = ['GET-10', 'GET-50', 'POST-10', 'POST-50'];
const POSTS = ['POST-10', 'POST-50'];
const GETS = ['GET-10', 'GET-50'];

/** Mission authority for the full-enforcement scenarios: 3 constraints on payments. */
const ENTRIES = [
  { type: 'mission_resource_access', resource: PUBLIC, actions: ['invoices.read'] },
  {
    type: 'mission_resource_access',
    resource: PUBLIC,
    actions: ['payments.create', 'create_payment'],
    constraints: { max_amount: { amount: '1000.00', currency: 'USD' }, recipient_domain: 'vendor.example', tenant: 'acme' },
  },
];

export async function startDevAuthorityIfBuilt() {
  const file = join(root, 'dist/dev-authority/index.js');
  if (!existsSync(file)) return null;
  const { startDevAuthority } = await import(file);
  return startDevAuthority({ quiet: true, tokenTtlSeconds: 3600, maxStaleSeconds: 300, missionTtlSeconds: 86_400 });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function waitForPort(port, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => (sock.destroy(), resolve()));
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > until) reject(new Error(`nothing listening on ${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** Waits for /readyz (issuer keys loaded, replay store connected, evidence sink writable). */
async function untilReady(adminUrl, timeoutMs = 10_000) {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    try {
      const res = await fetch(`${adminUrl}/readyz`);
      last = await res.text();
      if (res.status === 200) return;
    } catch (err) {
      last = err.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the gateway did not become ready: ${last.slice(0, 300)}`);
}

export const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** A node server child as a scenario server. */
async function nodeServer(ctx, script, args = []) {
  // BENCH_SERVER_NODE_ARGS: Node flags for the other servers (baseline, floor, peers), as BENCH_GATEWAY_NODE_ARGS for the gateway.
  const execArgv = process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = new NodeChild(join(here, 'servers', script), { execArgv, args, wrap: ctx.wrap ?? [] });
  const { url } = await child.ready(ctx.wrap ? 300_000 : undefined);
  return { url, adminUrl: null, stats: () => child.stats(), stop: () => child.stop(), pids: [child.pid] };
}

/** A gateway child from a config object; `extraPids` (redis) count towards its CPU. */
export async function gatewayServer(ctx, config, extra = null) {
  // BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the gateway processes.
  const execArgv = process.env.BENCH_GATEWAY_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const file = join(ctx.work, `gateway-${randomUUID()}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  const child = new NodeChild(join(here, 'servers/gateway.js'), { execArgv, args: [file], wrap: ctx.wrap ?? [] });
  const { url, adminUrl } = await child.request('ready', undefined, ctx.wrap ? 300_000 : 90_000);
  await untilReady(adminUrl, ctx.wrap ? 300_000 : undefined);
  return {
    url,
    adminUrl,
    pids: [child.pid],
    async stats() {
      const s = await child.stats();
      if (extra === null) return s;
      const e = await procStats(extra.pids);
      return { cpu: s.cpu + e.cpu, rss: s.rss + e.rss };
    },
    async stop() {
      await child.stop();
      await extra?.stop();
    },
  };
}

async function startNginx(ctx) {
  const port = await freePort();
  const dir = join(ctx.work, 'nginx');
  mkdirSync(dir, { recursive: true });
  const up = new URL(ctx.upstreamUrl);
  const conf = `worker_processes 1;
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream up { server ${up.host}; keepalive 128; }
  server {
    listen 127.0.0.1:${port};
    keepalive_requests 1000000;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const [cmd, args] = pinned(SERVER_CORE, 'nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir]);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((r) => proc.once('exit', r));
  try {
    await Promise.race([waitForPort(port), exited.then(() => Promise.reject(new Error(`nginx exited: ${stderr.trim()}`)))]);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    adminUrl: null,
    stats: () => procStats([proc.pid]),
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function startRedis(ctx) {
  const port = await freePort();
  const [cmd, args] = pinned(SERVER_CORE, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', ctx.work]);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => proc.once('exit', r));
  try {
    await waitForPort(port);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pids: [proc.pid],
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** The gateway config shared by the scenarios (JSON is valid YAML for parseConfigText). */
export function gatewayConfig(ctx, o) {
  const c = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    public_base_url: PUBLIC,
    resource: PUBLIC,
    upstream: { url: ctx.upstreamUrl },
    log: { level: 'warn' },
    evidence: { sink: o.evidenceFile ?? 'stdout' },
  };
  if (o.open) {
    c.routes = [{ match: { path: '/**' }, auth: 'none' }];
    return c;
  }
  c.issuers = [{ issuer: ctx.dev.url, algorithms: ['ES256'] }];
  c.routes = [
    { match: { method: 'GET', path: '/invoices/**' }, action: 'invoices.read' },
    {
      match: { method: 'POST', path: POST_PATH },
      action: 'payments.create',
      ...(o.params ? { params: { amount: { body: '/amount' }, currency: { body: '/currency' }, recipient: { body: '/to' }, tenant: { body: '/tenant' } } } : {}),
    },
  ];
  if (o.mission) {
    c.mission = { required: true, client: { client_id: 'gw-bench', private_key_file: ctx.gwKeyFile }, max_stale_s: 300 };
  } else {
    c.mission = { required: false };
  }
  if (o.mcp) c.mcp = { path: MCP_PATH };
  if (o.sign) c.evidence.sign = { private_key_file: ctx.evidenceKeyFile };
  if (o.redis) c.replay_store = { type: 'redis', url: o.redis };
  return c;
}

/** Expected proofs for a DPoP run: the crypto floor's rate bounds the gateway's. */
function proofCount(ctx, workload) {
  const floor = ctx.results.find((r) => r.scenario === 'f' && r.workload === workload.id) ?? ctx.results.find((r) => r.scenario === 'f');
  const rps = floor?.rps ?? 15_000;
  return Math.ceil(rps * ((ctx.durationS ?? 5) + (ctx.warmupS ?? 1)) * 1.2) + 2000;
}

export async function buildScenarios(ctx) {
  const dev = ctx.dev;
  const devMissing = () => (dev === null ? 'the dev authority is not built (npm run build)' : null);

  // Keys and tokens for the authenticated scenarios.
  if (dev !== null) {
    const gw = clientKey();
    ctx.gwKeyFile = join(ctx.work, 'gw.jwk');
    writeFileSync(ctx.gwKeyFile, JSON.stringify({ ...gw.privateJwk, alg: 'ES256', kid: 'gw-bench-1' }));
    dev.registerClient('gw-bench', { ...gw.publicJwk, alg: 'ES256', kid: 'gw-bench-1' });
    const ev = clientKey();
    ctx.evidenceKeyFile = join(ctx.work, 'evidence.jwk');
    writeFileSync(ctx.evidenceKeyFile, JSON.stringify({ ...ev.privateJwk, alg: 'ES256', kid: 'evidence-1' }));
    const now = Math.floor(Date.now() / 1000);
    // A token with its authority in authorization_details and no Mission: token + DPoP only.
    ctx.plainToken = await dev.signJwt(
      {
        iss: dev.url,
        sub: 'agent-bench',
        client_id: 'agent-bench',
        aud: PUBLIC,
        jti: randomUUID(),
        iat: now,
        exp: now + 3600,
        cnf: { jkt: ctx.client.jkt },
        authorization_details: [{ type: 'mission_resource_access', resource: PUBLIC, actions: ['invoices.read', 'payments.create'] }],
      },
      'at+jwt',
    );
    const mission = await dev.missions.create({ subject: 'user_bench', client_id: 'agent-bench', purpose: 'https://example.com/purposes/bench', authorization_details: ENTRIES });
    ctx.missionId = mission.id;
    ctx.missionToken = await dev.issueAccessToken({ missionId: mission.id, resource: PUBLIC, jkt: ctx.client.jkt, ttlSeconds: 3600 });
  }

  const plain = (w) => (w.method === 'GET' ? { method: 'GET', path: GET_PATH } : { method: 'POST', path: POST_PATH, body: POST_BODY });
  /** A plain GET/POST with `token` and a fresh DPoP proof per request (gateway scenarios h, m, l). */
  const tokenJob = (token) => (w, srv) => {
    const p = plain(w);
    return {
      url: srv.url,
      ...p,
      headers: { authorization: `DPoP ${token()}` },
      dpop: { privateJwk: ctx.client.privateJwk, htu: `${PUBLIC}${p.path}`, token: token(), count: proofCount(ctx, w) },
    };
  };
  const scenario = (s) => ({ workloads: ALL, quickWorkloads: ['GET-50', 'POST-50'], ...s });
  const started = (fn) => fn;

  const fullJob = (token) => (w, srv) => ({
    url: srv.url,
    method: 'POST',
    path: POST_PATH,
    body: POST_BODY,
    headers: { authorization: `DPoP ${token}` },
    dpop: { privateJwk: ctx.client.privateJwk, htu: `${PUBLIC}${POST_PATH}`, token, count: proofCount(ctx, w) },
  });

  /** A JSON-RPC tools/call at the MCP path, token + a fresh proof per request ((j), and its floor (n)). */
  const mcpJob = (w, srv) => ({
    ...fullJob(ctx.missionToken)(w, srv),
    path: MCP_PATH,
    body: MCP_BODY,
    headers: { authorization: `DPoP ${ctx.missionToken}`, accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' },
    dpop: { privateJwk: ctx.client.privateJwk, htu: `${PUBLIC}${MCP_PATH}`, token: ctx.missionToken, count: proofCount(ctx, w) },
  });

  const list = [
    scenario({
      id: 'a',
      name: 'upstream direct',
      description: 'The bench upstream (node:http) with no proxy: the ceiling.',
      start: started(async () => ({ url: ctx.upstreamUrl, adminUrl: null, stats: () => ctx.upstreamStats(), stop: async () => {} })),
      job: (w, srv) => ({ url: srv.url, ...plain(w) }),
    }),
    scenario({
      id: 'b',
      name: 'BASELINE undici pass-through proxy',
      description: 'node:http server + undici Pool dispatch streaming to the same upstream; hop-by-hop headers dropped.',
      quickWorkloads: ['GET-50', 'POST-10', 'POST-50'],
      start: started(() => nodeServer(ctx, 'undici-proxy.js', [ctx.upstreamUrl])),
      job: (w, srv) => ({ url: srv.url, ...plain(w) }),
    }),
    scenario({
      id: 'c',
      name: 'mission-gateway, auth: none route',
      description: 'The gateway on a route with `auth: none`: routing, header policy, evidence record (stdout to /dev/null), forwarding.',
      start: started(() => gatewayServer(ctx, gatewayConfig(ctx, { open: true }))),
      job: (w, srv) => ({ url: srv.url, ...plain(w) }),
    }),
    scenario({
      id: 'd',
      name: 'http-proxy-3 minimal proxy',
      description: 'http-proxy-3 `web()` with a keep-alive agent.',
      start: started(() => nodeServer(ctx, 'http-proxy.js', [ctx.upstreamUrl])),
      job: (w, srv) => ({ url: srv.url, ...plain(w) }),
    }),
    scenario({
      id: 'e',
      name: 'nginx reverse proxy',
      description: 'nginx, one worker, keep-alive upstream, access log off.',
      unavailable: () => (has('nginx') ? null : 'nginx is not installed (install it with `apt-get install -y nginx` to include it)'),
      start: started(() => startNginx(ctx)),
      job: (w, srv) => ({ url: srv.url, ...plain(w) }),
    }),
    scenario({
      id: 'f',
      name: 'crypto floor (baseline + 1 ES256 verify)',
      description: "The baseline receiving the same requests as (h) (access token + a fresh DPoP proof each) plus exactly one synchronous ES256 verification per request: the request's own proof, against a KeyObject imported once (node:crypto verify, ieee-p1363); nothing else is checked. Authorization and DPoP are not forwarded, as the gateway does not forward them.",
      quickWorkloads: ['GET-50', 'POST-10', 'POST-50'],
      unavailable: devMissing,
      start: started(() => nodeServer(ctx, 'undici-proxy.js', [ctx.upstreamUrl, '--crypto-floor', JSON.stringify(ctx.client.publicJwk)])),
      job: tokenJob(() => ctx.plainToken),
    }),
    scenario({
      id: 'g',
      name: 'express 5 + express-oauth2-jwt-bearer (DPoP)',
      description: 'A typical Node stack: express 5 + express-oauth2-jwt-bearer 1.10 validating the JWT access token and the DPoP proof, proxying with undici.',
      note: 'express-oauth2-jwt-bearer keeps no jti replay record: a replayed DPoP proof is accepted, so it does less work than (h).',
      unavailable: devMissing,
      start: started(() => nodeServer(ctx, 'express-jwt.js', [ctx.upstreamUrl, dev.url, dev.endpoints.jwks, PUBLIC])),
      job: (w, srv) => {
        const p = plain(w);
        return {
          url: srv.url,
          ...p,
          headers: { authorization: `DPoP ${ctx.plainToken}` },
          dpop: { privateJwk: ctx.client.privateJwk, htu: `${srv.url}${p.path}`, token: ctx.plainToken, count: proofCount(ctx, w) },
        };
      },
    }),
    scenario({
      id: 'h',
      name: 'mission-gateway token + DPoP',
      description: 'RFC 9068 token (cached after first verification) + a fresh DPoP proof per request (ES256 verify, htm/htu/ath/cnf.jkt, jti replay record in memory); action checked against the token authorization_details; no Mission.',
      unavailable: devMissing,
      start: started(() => gatewayServer(ctx, gatewayConfig(ctx, {}))),
      job: tokenJob(() => ctx.plainToken),
    }),
    scenario({
      id: 'm',
      name: 'token + DPoP + cached Mission',
      description: '(h) with a Mission-bound token: the Mission reference is resolved and its state served from the cache (one Status request at the start); the step 3 bar compares it with (h). GET only: the POST route needs the parameters of (i), which its Mission constrains.',
      unavailable: devMissing,
      workloads: GETS,
      quickWorkloads: ['GET-50'],
      start: started(() => gatewayServer(ctx, gatewayConfig(ctx, { mission: true }))),
      job: tokenJob(() => ctx.missionToken),
    }),
    scenario({
      id: 'i',
      name: 'full enforcement (Mission, 3 constraints)',
      description: '(h) + Mission reference + cached Mission state + authority with 3 constraints (max_amount, recipient_domain, tenant) on a 1 KiB JSON POST body + parameter_digest + evidence appended to a file.',
      workloads: POSTS,
      quickWorkloads: POSTS,
      unavailable: devMissing,
      start: started(() => gatewayServer(ctx, gatewayConfig(ctx, { mission: true, params: true, evidenceFile: join(ctx.work, `evidence-i-${Date.now()}.jsonl`) }))),
      job: (w, srv) => fullJob(ctx.missionToken)(w, srv),
    }),
    scenario({
      id: 'j',
      name: 'MCP tools/call, full enforcement',
      description: 'A JSON-RPC tools/call (1 KiB) at the MCP path: token + DPoP + Mission + 3 constraints on the arguments + evidence to a file; the upstream answers a JSON-RPC result.',
      workloads: POSTS,
      quickWorkloads: ['POST-50'],
      unavailable: devMissing,
      start: started(() => gatewayServer(ctx, gatewayConfig(ctx, { mission: true, params: true, mcp: true, evidenceFile: join(ctx.work, `evidence-j-${Date.now()}.jsonl`) }))),
      job: mcpJob,
      mcp: true,
    }),
    scenario({
      id: 'n',
      name: 'crypto floor on the MCP tools/call',
      description: "The crypto floor (f) sent the requests of (j): the same JSON-RPC tools/call with an access token and a fresh DPoP proof, forwarded to the same upstream MCP endpoint (which parses the call and answers a result); one ES256 verification of the request's proof, nothing else. The (j) bar is measured against it: the floor on the same call.",
      workloads: POSTS,
      quickWorkloads: ['POST-50'],
      unavailable: devMissing,
      start: started(() => nodeServer(ctx, 'undici-proxy.js', [ctx.upstreamUrl, '--crypto-floor', JSON.stringify(ctx.client.publicJwk)])),
      job: mcpJob,
    }),
    scenario({
      id: 'k',
      name: 'full enforcement + signed evidence',
      description: '(i) with every evidence record also signed as a compact JWS (ES256).',
      workloads: POSTS,
      quickWorkloads: ['POST-50'],
      unavailable: devMissing,
      start: started(() => gatewayServer(ctx, gatewayConfig(ctx, { mission: true, params: true, sign: true, evidenceFile: join(ctx.work, `evidence-k-${Date.now()}.jsonl`) }))),
      job: (w, srv) => fullJob(ctx.missionToken)(w, srv),
    }),
    scenario({
      id: 'l',
      name: 'token + DPoP, redis replay store',
      description: '(h) with the DPoP jti replay record in redis (SET NX EX) instead of memory.',
      unavailable: () => devMissing() ?? (has('redis-server') ? null : 'redis-server is not installed'),
      start: started(async () => {
        const redis = await startRedis(ctx);
        try {
          return await gatewayServer(ctx, gatewayConfig(ctx, { redis: redis.url }), redis);
        } catch (err) {
          await redis.stop();
          throw err;
        }
      }),
      job: tokenJob(() => ctx.plainToken),
    }),
  ];
  return list;
}

/**
 * One request like the scenario's, with its own proof. Returns null when it succeeds, else why the
 * scenario cannot be measured (typically: a part of the gateway is not wired yet).
 */
export async function probe(s, server) {
  const w = WORKLOADS[(s.quickWorkloads ?? s.workloads)[0]];
  const job = s.job(w, server);
  const headers = { ...job.headers };
  if (job.body !== undefined) headers['content-type'] = 'application/json';
  if (job.dpop !== undefined) {
    headers.dpop = proofSigner(job.dpop.privateJwk, { htm: job.method, htu: job.dpop.htu, token: job.dpop.token })();
  }
  let res;
  let text;
  try {
    res = await fetch(`${job.url}${job.path}`, { method: job.method, headers, body: job.body });
    text = await res.text();
  } catch (err) {
    return `probe request failed: ${err.message}`;
  }
  if (res.status < 200 || res.status > 299) {
    let reason = '';
    try {
      const j = JSON.parse(text);
      reason = ` ${j.error ?? ''}/${j.denial_reason ?? ''}`;
    } catch {
      // not JSON
    }
    return `probe answered ${res.status}${reason} for a valid request: that part of the gateway is not wired yet (or broken)`;
  }
  if (s.mcp) {
    try {
      const j = JSON.parse(text.startsWith('{') ? text : text.replace(/^[\s\S]*?data: /, '').split('\n')[0]);
      if (j.result?.isError === true) return `probe tools/call was denied: ${j.result?.structuredContent?.denial_reason ?? 'unknown'} (MCP handling not wired yet?)`;
    } catch {
      return 'probe tools/call answered something that is not JSON-RPC';
    }
  }
  return null;
}
