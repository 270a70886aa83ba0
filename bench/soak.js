#!/usr/bin/env node
/**
 * Soak test (not in CI): the compiled gateway (`node dist/cli.js --config …`) as a child process,
 * the dev Mission Authority and an upstream in this process, and a steady request rate for
 * `--minutes` (default 10), with Mission revocations and issuer key rotations along the way. Every
 * active Mission also holds one server-sent event stream open through the gateway, which its
 * revocation must cut (docs/missions.md section 7).
 *
 *   npx tsc -p tsconfig.json && npm run soak -- --minutes 1 [--rate 100] [--revoke-every 10] [--out soak.json]
 *
 * `--revoke-every` (seconds, default 10) sets the Mission churn: each revocation also creates a new
 * Mission, so a short interval (0.5) runs well past the Mission cache's 1000 entries and shows
 * whether per-Mission memory (state, SET ids, remembered cuts) levels off.
 *
 * Pass criteria (exit 0; otherwise exit 1 and the reason on stderr):
 *  - no unexpected answer: every request for an active Mission is 200; a revoked Mission's token is
 *    403 `mission_inactive` (a permit after its revocation was acknowledged is a failure); nothing
 *    else (no 401, no 5xx, no client-side error);
 *  - one evidence record per answered request and stream (a stream asked for as the run ends may
 *    be recorded without its answer reaching the soak);
 *  - every revoked Mission's stream ends within `CUT_WITHIN_MS` of the revocation's acknowledgement,
 *    and no stream ends while its Mission is active; the gateway's `mission_gateway_open_exchanges`
 *    is 0 once the streams are closed, and `mission_gateway_exchanges_cut_total` counts one cut per
 *    revocation;
 *  - no file descriptor leak: the gateway's open fds after the load (idle) are at most
 *    `FD_SLACK` above the count after warm-up;
 *  - no memory growth beyond the configured caches: the gateway's heap in the last fifth of the run
 *    (median) is at most `HEAP_GROWTH` x the heap just after warm-up (median) + `HEAP_SLACK_MB`.
 *    Caches are configured small (token 1000, Mission 1000, replay 100000 entries) so that they are
 *    full, or at their time bound, well before warm-up ends.
 *
 * Key rotations: the gateway refetches a JWKS for an unknown `kid` at most once per 30 s, and
 * loads its keys at start; rotations are therefore scheduled 35 s after start and then every 150 s,
 * never within 30 s of the previous fetch (see docs/reliability.md).
 */
import { spawn } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { median } from './lib/stats.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli.js');
const API = 'https://api.example.com';
const ENTRIES = [{ type: 'mission_resource_access', resource: API, actions: ['invoices.read'] }];

const FD_SLACK = 16;
const HEAP_GROWTH = 1.25;
const HEAP_SLACK_MB = 16;
const ACTIVE_MISSIONS = 20;
const SAMPLE_EVERY_MS = 5000;
const REMINT_EVERY_MS = 120_000;
const FIRST_ROTATION_MS = 35_000;
const ROTATE_EVERY_MS = 150_000;
const CUT_WITHIN_MS = 2_000;
const EVENT_EVERY_MS = 1_000;

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '100' },
    'revoke-every': { type: 'string', default: '10' },
    out: { type: 'string' },
  },
});
const minutes = Number(args.minutes);
const rate = Number(args.rate);
const revokeEveryMs = Number(args['revoke-every']) * 1000;
if (!(minutes > 0) || !(rate > 0) || !(revokeEveryMs >= 100)) {
  process.stderr.write('usage: node bench/soak.js [--minutes N] [--rate requests_per_second] [--revoke-every seconds] [--out file.json]\n');
  process.exit(2);
}
if (!existsSync(CLI)) {
  process.stderr.write('dist/cli.js is missing: run `npx tsc -p tsconfig.json` first\n');
  process.exit(2);
}

const { startDevAuthority } = await import(join(ROOT, 'dist', 'dev-authority', 'index.js'));

const log = (msg) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

async function freePort() {
  const s = createNetServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** The agent: one ES256 DPoP key; a proof per request (RFC 9449). */
function agentKey() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = publicKey.export({ format: 'jwk' });
  const jwk = { crv: pub.crv, kty: pub.kty, x: pub.x, y: pub.y };
  const jkt = createHash('sha256').update(JSON.stringify(jwk)).digest('base64url');
  const header = b64({ typ: 'dpop+jwt', alg: 'ES256', jwk });
  const key = createPrivateKey(privateKey.export({ format: 'pem', type: 'pkcs8' }));
  const prefix = randomBytes(6).toString('base64url');
  let n = 0;
  const proof = (htm, htu, token) => {
    const payload = { jti: `${prefix}-${(n++).toString(36)}`, htm, htu, iat: Math.floor(Date.now() / 1000), ath: createHash('sha256').update(token).digest('base64url') };
    const input = `${header}.${b64(payload)}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  };
  return { jkt, proof };
}

/** Gateway process figures from /proc and its own /metrics. */
async function sample(pid, adminUrl) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  let heap = NaN;
  let heapTotal = NaN;
  let external = NaN;
  let open = NaN;
  let cut = NaN;
  try {
    const res = await request(`${adminUrl}/metrics`);
    const text = await res.body.text();
    heap = Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(text)?.[1] ?? NaN);
    heapTotal = Number(/^nodejs_heap_size_total_bytes (\S+)$/m.exec(text)?.[1] ?? NaN);
    external = Number(/^nodejs_external_memory_bytes (\S+)$/m.exec(text)?.[1] ?? NaN);
    open = Number(/^mission_gateway_open_exchanges (\S+)$/m.exec(text)?.[1] ?? NaN);
    cut = Number(/^mission_gateway_exchanges_cut_total\{cause="state_change"\} (\S+)$/m.exec(text)?.[1] ?? NaN);
  } catch {
    // the gateway is gone: reported by the caller
  }
  const mb = (b) => b / 1024 / 1024;
  return { t: Date.now(), rss_mb: rssKb / 1024, heap_mb: mb(heap), heap_total_mb: mb(heapTotal), external_mb: mb(external), fds, open_exchanges: open, cut_total: cut };
}

async function main() {
  const folder = mkdtempSync(join(tmpdir(), 'mgw-soak-'));
  const durationMs = minutes * 60_000;
  const warmupMs = Math.min(60_000, durationMs * 0.2);

  // Upstream: answers every request at once, except /feed/*: a server-sent event stream that sends an
  // event every EVENT_EVERY_MS until the gateway closes it.
  const upstream = createServer((req, res) => {
    req.resume();
    if (req.url.startsWith('/feed/')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      let n = 0;
      const timer = setInterval(() => res.write(`id: ${++n}\ndata: tick\n\n`), EVENT_EVERY_MS);
      res.on('close', () => clearInterval(timer));
      return;
    }
    req.on('end', () => res.end('ok'));
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  const upstreamUrl = `http://127.0.0.1:${upstream.address().port}`;

  const dev = await startDevAuthority({ port: 0, quiet: true, tokenTtlSeconds: 300 });

  // The gateway's Mission Status client key, registered at the authority.
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const clientJwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', kid: 'gw-api' };
  writeFileSync(join(folder, 'gw.jwk'), JSON.stringify(clientJwk));
  dev.registerClient('gw-api', { ...publicKey.export({ format: 'jwk' }), alg: 'ES256', kid: 'gw-api' });

  const port = await freePort();
  const adminPort = await freePort();
  const evidenceFile = join(folder, 'evidence.jsonl');
  writeFileSync(
    join(folder, 'gateway.yaml'),
    `listen: { host: 127.0.0.1, port: ${port} }
admin: { host: 127.0.0.1, port: ${adminPort} }
public_base_url: ${API}
resource: ${API}
upstream: { url: ${upstreamUrl} }
issuers: [{ issuer: ${dev.url}, algorithms: [ES256] }]
token: { cache_max_entries: 1000 }
dpop: { replay_max_entries: 100000 }
mission:
  max_stale_s: 30
  cache_max_entries: 1000
  client: { client_id: gw-api, private_key_file: ./gw.jwk }
routes:
  - match: { method: GET, path: /invoices/* }
    action: invoices.read
  - match: { method: GET, path: /feed/* }
    action: invoices.read
evidence: { sink: ${JSON.stringify(evidenceFile)} }
log: { level: warn }
`,
  );
  const gwLog = [];
  const child = spawn(process.execPath, [CLI, '--config', join(folder, 'gateway.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  gatewayChild = child;
  for (const s of [child.stdout, child.stderr]) s.on('data', (d) => gwLog.push(d.toString()) > 200 && gwLog.shift());
  let childExit = null;
  child.on('exit', (code, signal) => (childExit = { code, signal }));
  const gwUrl = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  for (let i = 0; ; i++) {
    if (childExit !== null || i > 300) throw new Error(`gateway did not become ready: ${gwLog.join('').slice(-2000)}`);
    try {
      const r = await request(`${adminUrl}/readyz`);
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  dev.addReceiver({ endpoint: `${gwUrl}/.well-known/ssf/push`, audience: API });
  log(`gateway pid ${child.pid} ready on ${gwUrl}; ${rate} req/s for ${minutes} min`);

  const agent = agentKey();
  /** Missions in play: { id, token, revoking (revocation started), revokedAt: null | ms (acknowledged) } */
  const active = [];
  const revoked = [];
  const counts = { sent: 0, ok: 0, expected_denials: 0, unexpected: 0, client_errors: 0, streams_sent: 0, streams_answered: 0, streams_opened: 0, streams_cut: 0 };
  const unexpected = [];
  const note = (what) => {
    counts.unexpected++;
    if (unexpected.length < 20) unexpected.push(what);
  };
  const dispatcher = new Agent({ connections: 32, pipelining: 1, keepAliveTimeout: 10_000 });
  // One connection per stream: each stays busy for its Mission's life.
  const streams = new Agent({ connections: ACTIVE_MISSIONS * 4, pipelining: 1 });
  const ending = new AbortController();
  setMaxListeners(ACTIVE_MISSIONS * 4, ending.signal);

  /** Opens the Mission's event stream; `m.stream` records its events and when it ended. */
  const openStream = async (m) => {
    const st = { events: 0, endedAt: null };
    m.stream = st;
    const path = `/feed/${m.id}`;
    counts.streams_sent++;
    try {
      const res = await request(`${gwUrl}${path}`, {
        dispatcher: streams,
        signal: ending.signal,
        headers: { authorization: `DPoP ${m.token}`, dpop: agent.proof('GET', `${API}${path}`, m.token), accept: 'text/event-stream' },
      });
      counts.streams_answered++;
      if (res.statusCode !== 200) {
        note({ stream: m.id, status: res.statusCode, body: (await res.body.text()).slice(0, 300) });
        st.endedAt = Date.now();
        return;
      }
      counts.streams_opened++;
      for await (const chunk of res.body) st.events += String(chunk).split('data: ').length - 1;
    } catch {
      // cut (the gateway closed the connection) or aborted at the end of the run
    }
    st.endedAt = Date.now();
    if (!m.revoking && !ending.signal.aborted) note({ stream: m.id, why: 'stream ended while its Mission was active' });
  };

  const mint = (id) => dev.issueAccessToken({ missionId: id, resource: API, jkt: agent.jkt });
  const newMission = async () => {
    const m = await dev.missions.create({ subject: 'soak', client_id: 'agent-1', purpose: 'soak', authorization_details: ENTRIES });
    const mission = { id: m.id, token: await mint(m.id), revoking: false, revokedAt: null, stream: null };
    void openStream(mission);
    return mission;
  };
  for (let i = 0; i < ACTIVE_MISSIONS; i++) active.push(await newMission());

  async function fire(m) {
    const path = `/invoices/${counts.sent % 1000}`;
    counts.sent++;
    const sentAt = Date.now();
    const revokedBeforeSend = m.revokedAt !== null && m.revokedAt <= sentAt;
    try {
      const res = await request(`${gwUrl}${path}`, {
        dispatcher,
        headers: { authorization: `DPoP ${m.token}`, dpop: agent.proof('GET', `${API}${path}`, m.token) },
      });
      const text = await res.body.text();
      if (res.statusCode === 200 && !revokedBeforeSend) counts.ok++;
      else if (res.statusCode === 200) note({ status: 200, mission: m.id, why: 'permit after revocation was acknowledged' });
      else if (res.statusCode === 403 && m.revoking && JSON.parse(text).denial_reason === 'mission_inactive') counts.expected_denials++;
      else note({ status: res.statusCode, body: text.slice(0, 300), revoking: m.revoking });
    } catch (err) {
      counts.client_errors++;
      note({ error: String(err?.code ?? err?.message ?? err) });
    }
  }

  const samples = [];
  const events = [];
  const start = Date.now();
  const end = start + durationMs;
  let nextRotation = start + FIRST_ROTATION_MS;
  let nextRevoke = start + revokeEveryMs;
  let nextRemint = start + REMINT_EVERY_MS;
  let nextSample = start;
  let nextReport = start + 30_000;
  let due = 0;
  const inflight = new Set();
  let lastTick = Date.now();
  let lifecycle = null;
  /** Runs one lifecycle step; `lifecycle` is null again when it is done. */
  const step = (fn) => {
    const p = fn().catch((err) => note({ error: `lifecycle step failed: ${err?.message ?? err}` }));
    p.finally(() => {
      if (lifecycle === p) lifecycle = null;
    });
    return p;
  };

  while (Date.now() < end) {
    const now = Date.now();
    if (childExit !== null) throw new Error(`gateway exited during the soak (${JSON.stringify(childExit)}): ${gwLog.join('').slice(-2000)}`);
    due += ((now - lastTick) / 1000) * rate;
    lastTick = now;
    while (due >= 1) {
      due -= 1;
      // Mostly active Missions; one request in ten uses a revoked one (an expected denial).
      const pool = revoked.length > 0 && counts.sent % 10 === 0 ? revoked : active;
      const p = fire(pool[counts.sent % pool.length]);
      inflight.add(p);
      p.finally(() => inflight.delete(p));
    }
    // Lifecycle events run beside the load (one at a time), so the request rate stays steady.
    if (lifecycle === null && now >= nextRevoke) {
      nextRevoke += revokeEveryMs;
      lifecycle = step(async () => {
        const victim = active[0];
        victim.revoking = true;
        active[0] = await newMission();
        const r = await dev.missions.revoke(victim.id);
        victim.revokedAt = Date.now();
        // Its stream must end at once (the SET was pushed before revoke() returned).
        setTimeout(() => {
          const st = victim.stream;
          if (st === null || st.endedAt === null) note({ stream: victim.id, why: `stream still open ${CUT_WITHIN_MS} ms after its Mission was revoked` });
          else counts.streams_cut++;
        }, CUT_WITHIN_MS);
        revoked.push(victim);
        if (revoked.length > 10) revoked.shift(); // well inside the token lifetime (300 s)
        active.push(active.shift());
        const deliveries = r.deliveries ?? [];
        events.push({ t_s: Math.round((victim.revokedAt - start) / 1000), event: 'revoke', pushed: deliveries.filter((d) => d.ok).length, push_failed: deliveries.filter((d) => !d.ok).length });
      });
    } else if (lifecycle === null && now >= nextRotation) {
      nextRotation += ROTATE_EVERY_MS;
      lifecycle = step(async () => {
        await dev.rotateKey();
        for (const m of active) m.token = await mint(m.id);
        events.push({ t_s: Math.round((Date.now() - start) / 1000), event: 'rotate_key' });
        nextRemint = Date.now() + REMINT_EVERY_MS;
      });
    } else if (lifecycle === null && now >= nextRemint) {
      nextRemint += REMINT_EVERY_MS;
      lifecycle = step(async () => {
        for (const m of active) m.token = await mint(m.id);
        events.push({ t_s: Math.round((Date.now() - start) / 1000), event: 'remint_tokens' });
      });
    }

    if (now >= nextSample) {
      nextSample += SAMPLE_EVERY_MS;
      samples.push({ ...(await sample(child.pid, adminUrl)), phase: now - start < warmupMs ? 'warmup' : 'steady' });
    }
    if (now >= nextReport) {
      nextReport += 30_000;
      const s = samples[samples.length - 1];
      log(`${Math.round((now - start) / 1000)} s: sent ${counts.sent}, ok ${counts.ok}, expected denials ${counts.expected_denials}, unexpected ${counts.unexpected}; streams open ${s.open_exchanges}, cut ${counts.streams_cut}; rss ${s.rss_mb.toFixed(1)} MiB, heap ${s.heap_mb.toFixed(1)} MiB, fds ${s.fds}`);
    }
    await sleep(5);
  }
  await Promise.allSettled([...inflight, lifecycle]);
  await sleep(CUT_WITHIN_MS + 500); // the last revocation's stream check
  const beforeClose = await sample(child.pid, adminUrl);
  const liveStreams = active.filter((m) => m.stream !== null && m.stream.endedAt === null).length;
  ending.abort();
  await dispatcher.close();
  await streams.destroy();
  await sleep(3000); // let idle keep-alive sockets close on both sides
  const final = await sample(child.pid, adminUrl);
  const answered = counts.sent - counts.client_errors;
  await sleep(200);
  const evidenceLines = readFileSync(evidenceFile, 'utf8').split('\n').filter((l) => l !== '').length;

  child.kill('SIGTERM');
  await new Promise((r) => (childExit !== null ? r() : child.once('exit', r)));
  await dev.close();
  await new Promise((r) => upstream.close(r));

  // ---- verdict ----------------------------------------------------------------------------------
  const steady = samples.filter((s) => s.phase === 'steady');
  const afterWarmup = steady.slice(0, Math.max(1, Math.ceil(steady.length * 0.2)));
  const lastFifth = steady.slice(Math.floor(steady.length * 0.8));
  const heapWarm = median(afterWarmup.map((s) => s.heap_mb)) ?? NaN;
  const heapEnd = median(lastFifth.map((s) => s.heap_mb)) ?? NaN;
  const rssWarm = median(afterWarmup.map((s) => s.rss_mb)) ?? NaN;
  const rssEnd = median(lastFifth.map((s) => s.rss_mb)) ?? NaN;
  const fdWarm = afterWarmup[0]?.fds ?? NaN;
  const failures = [];
  if (counts.unexpected > 0) failures.push(`${counts.unexpected} unexpected answers`);
  // A stream asked for as the run ends may be recorded by the gateway without its answer reaching us.
  if (evidenceLines < answered + counts.streams_answered || evidenceLines > answered + counts.streams_sent) {
    failures.push(`evidence records ${evidenceLines} for answered requests ${answered} + streams ${counts.streams_answered} answered of ${counts.streams_sent}`);
  }
  if (!(final.fds <= fdWarm + FD_SLACK)) failures.push(`fd count grew from ${fdWarm} to ${final.fds}`);
  if (!(heapEnd <= heapWarm * HEAP_GROWTH + HEAP_SLACK_MB)) failures.push(`heap grew from ${heapWarm.toFixed(1)} MiB to ${heapEnd.toFixed(1)} MiB`);
  if (childExit?.code !== 0 && childExit?.code !== undefined && childExit?.signal === null) failures.push(`gateway exit code ${childExit.code}`);
  if (beforeClose.open_exchanges !== liveStreams) failures.push(`the gateway held ${beforeClose.open_exchanges} exchanges with ${liveStreams} streams open`);
  if (final.open_exchanges !== 0) failures.push(`the gateway still held ${final.open_exchanges} exchanges after every stream closed`);
  const cutAtStart = samples[0]?.cut_total ?? 0;
  if (beforeClose.cut_total - cutAtStart !== counts.streams_cut) failures.push(`the gateway counted ${beforeClose.cut_total - cutAtStart} cuts for ${counts.streams_cut} revoked streams`);

  const summary = {
    ok: failures.length === 0,
    failures,
    minutes,
    rate_per_s: rate,
    achieved_rate_per_s: Math.round((counts.sent / durationMs) * 1000 * 10) / 10,
    counts: { ...counts, answered, evidence_records: evidenceLines },
    memory_mb: { rss_after_warmup: round(rssWarm), rss_end: round(rssEnd), heap_after_warmup: round(heapWarm), heap_end: round(heapEnd), rss_max: round(Math.max(...samples.map((s) => s.rss_mb))) },
    fds: { after_warmup: fdWarm, end_idle: final.fds, max: Math.max(...samples.map((s) => s.fds)) },
    streams: { open_at_end: liveStreams, held_at_end: beforeClose.open_exchanges, held_after_close: final.open_exchanges, cut_counted: beforeClose.cut_total - cutAtStart },
    events,
    unexpected_examples: unexpected,
    gateway_exit: childExit,
    samples: samples.map((s) => ({ t_s: Math.round((s.t - start) / 1000), rss_mb: round(s.rss_mb), heap_mb: round(s.heap_mb), heap_total_mb: round(s.heap_total_mb), external_mb: round(s.external_mb), fds: s.fds, open_exchanges: s.open_exchanges })),
  };
  const text = JSON.stringify(summary, null, 2);
  process.stdout.write(text + '\n');
  if (args.out !== undefined) writeFileSync(args.out, text + '\n');
  rmSync(folder, { recursive: true, force: true });
  if (failures.length > 0) {
    log(`FAIL: ${failures.join('; ')}`);
    process.exit(1);
  }
  log('PASS');
}

function round(x) {
  return Math.round(x * 10) / 10;
}

/** The gateway child, so that a failed run does not leave it running. */
let gatewayChild = null;

main().catch((err) => {
  process.stderr.write(`soak failed: ${err?.stack ?? err}\n`);
  if (gatewayChild !== null && gatewayChild.exitCode === null) gatewayChild.kill('SIGKILL');
  process.exit(1);
});
