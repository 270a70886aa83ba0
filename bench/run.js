#!/usr/bin/env node
/**
 * mission-gateway benchmarks. Every scenario is measured in the same run as the baseline (a minimal
 * undici pass-through proxy) and reported as ratios to it, so a slower or busier machine moves all
 * numbers together. Servers run in child processes pinned to core 0, the load generator
 * (autocannon) in a child pinned to core 1, when taskset exists.
 *
 *   npm run bench -- --quick            short runs, the workloads the bars need (< 2 min)
 *   npm run bench                        every scenario x {GET 200 B, POST 1 KiB} x {10, 50} connections,
 *                                        3 interleaved rounds, and 4 more of the baseline and (c)
 *                                        on the 50-connection workloads (--pair-rounds=N;
 *                                        about 13 minutes)
 *   npm run bench -- --only=b,c          a subset of scenarios (the baseline is always run)
 *   npm run bench -- --only=revocation --rounds=0
 *                                        revocation latency only (single replica, and across two
 *                                        replicas sharing a redis-server)
 *   npm run bench -- --duration=3 --warmup=1 --rounds=3 --no-scale --no-revocation
 *   BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the gateway processes
 *
 * Requires a build (`npm run build`): it runs the compiled dist/ code.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HAS_TASKSET, LOAD_CORE, NodeChild, SERVER_CORE } from './lib/proc.js';
import { bucketQuantile, diffBuckets, histogramBuckets, median } from './lib/stats.js';
import { clientKey } from './lib/dpop.js';
import { acquireBenchLock } from './lib/lock.js';
import { buildScenarios, probe, PUBLIC, startDevAuthorityIfBuilt, WORKLOADS } from './scenarios.js';
import { runCrossReplicaRevocation, runRevocation } from './revocation.js';
import { printTable, bars } from './table.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const opt = (name, dflt) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? dflt : a.slice(name.length + 3);
};
const QUICK = flag('quick');
// autocannon counts time in whole seconds (a 0.5 s run lasts 1 s): whole seconds, stated as run.
const DURATION = Math.max(1, Math.ceil(Number(opt('duration', QUICK ? 2 : 3))));
const WARMUP = Math.max(1, Math.ceil(Number(opt('warmup', 1))));
const ROUNDS = Math.max(0, Number(opt('rounds', QUICK ? 1 : 3)));
/** Extra rounds of the baseline and (c) alone, on the workloads of (c)'s bar (see the rounds loop). */
const PAIR = ['b', 'c'];
const PAIR_WORKLOADS = ['GET-50', 'POST-50'];
const PAIR_ROUNDS = Math.max(0, Number(opt('pair-rounds', QUICK ? 0 : 4)));
const ONLY = opt('only', null)?.split(',').map((s) => s.trim());
const log = (line) => process.stdout.write(`${line}\n`);

/**
 * Servers measured at least once. A server's first measurement gets FIRST_WARMUP more seconds of
 * warm-up: a freshly started Node process is still compiling its hot path and growing its heap
 * after one second, and its first round read up to 40 % slower than the next ones (the baseline's
 * too, less so).
 */
const warmedUp = new Set();
const FIRST_WARMUP = 2;

async function measure(scenario, server, workload) {
  const first = !warmedUp.has(server);
  warmedUp.add(server);
  const job = { ...scenario.job(workload, server), connections: workload.connections, durationS: DURATION, warmupS: WARMUP + (first ? FIRST_WARMUP : 0) };
  const load = new NodeChild(join(here, 'load.js'), { core: LOAD_CORE });
  try {
    await load.request('hello', undefined, 60_000);
    await load.request('warm', job, 120_000);
    const before = await server.stats();
    const metricsBefore = server.adminUrl ? await scrape(server.adminUrl) : null;
    const r = await load.request('result', { type: 'go' }, (DURATION + 60) * 1000);
    const after = await server.stats();
    let decisionP99ms = null;
    let decisionP50ms = null;
    if (metricsBefore !== null) {
      const d = diffBuckets(await scrape(server.adminUrl), metricsBefore);
      const p99 = bucketQuantile(d, 0.99);
      const p50 = bucketQuantile(d, 0.5);
      decisionP99ms = p99 === null ? null : p99 * 1000;
      decisionP50ms = p50 === null ? null : p50 * 1000;
    }
    const total = r.total > 0 ? r.total : 1;
    return {
      scenario: scenario.id,
      workload: workload.id,
      method: workload.method,
      connections: workload.connections,
      rps: r.rps,
      requests: r.total,
      ok: r.ok,
      non2xx: r.non2xx,
      errors: r.errors,
      timeouts: r.timeouts,
      p50ms: r.p50ms,
      p99ms: r.p99ms,
      decisionP50ms,
      decisionP99ms,
      cpuUsPerRequest: (after.cpu - before.cpu) / total,
      rssMiB: after.rss / 1048576,
      statusCodes: r.statusCodes,
      proofsSignedDuringRun: r.proofsSignedDuringRun,
    };
  } finally {
    await load.stop();
  }
}

/**
 * One result per (scenario, workload): medians over rounds, and each ratio as the median of the
 * per-round ratios (each round's runs against the baseline measured in that same round).
 */
function aggregate(raw) {
  const keyOf = (r) => `${r.scenario} ${r.workload}`;
  const groups = new Map();
  for (const r of raw) groups.set(keyOf(r), [...(groups.get(keyOf(r)) ?? []), r]);
  const sameRound = (to, r) => raw.find((x) => x.scenario === to && x.workload === r.workload && x.round === r.round);
  const out = [];
  for (const rs of groups.values()) {
    const first = rs[0];
    const ratios = {};
    const ratioRanges = {};
    for (const to of ['b', 'f', 'g', 'h', 'n']) {
      const perRound = rs
        .map((r) => {
          const base = sameRound(to, r);
          return base === undefined || base.rps === 0 ? null : r.rps / base.rps;
        })
        .filter((v) => v !== null);
      const v = median(perRound);
      if (v !== null) {
        ratios[to] = v;
        ratioRanges[to] = [Math.min(...perRound), Math.max(...perRound)];
      }
    }
    out.push({
      scenario: first.scenario,
      workload: first.workload,
      method: first.method,
      connections: first.connections,
      rounds: rs.length,
      rps: median(rs.map((r) => r.rps)),
      requests: rs.reduce((a, r) => a + r.requests, 0),
      ok: rs.reduce((a, r) => a + r.ok, 0),
      non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
      errors: rs.reduce((a, r) => a + r.errors, 0),
      timeouts: rs.reduce((a, r) => a + r.timeouts, 0),
      p50ms: median(rs.map((r) => r.p50ms)),
      p99ms: median(rs.map((r) => r.p99ms)),
      decisionP50ms: median(rs.map((r) => r.decisionP50ms)),
      decisionP99ms: median(rs.map((r) => r.decisionP99ms)),
      cpuUsPerRequest: median(rs.map((r) => r.cpuUsPerRequest)),
      rssMiB: Math.max(...rs.map((r) => r.rssMiB)),
      ratios,
      ratioRanges,
      perRound: rs.map((r) => ({ round: r.round, rps: r.rps, p50ms: r.p50ms, p99ms: r.p99ms, decisionP99ms: r.decisionP99ms, cpuUsPerRequest: r.cpuUsPerRequest, statusCodes: r.statusCodes })),
    });
  }
  return out;
}

/**
 * The order of one round's measurements on one workload. Each scenario runs next to the one its
 * bar compares it with, so the two measurements of a ratio are seconds apart, not a minute (the
 * machine's background load drifts on that scale): c after b; h after f, m and l around h; i
 * between h/l and g; j after n. Odd rounds run in reverse, so a pair's first and second places
 * alternate and a steady drift cancels over the rounds. Round 0 runs forward: the crypto floors
 * (f, n) come before the DPoP scenarios, whose proof pools are sized from the floor's rate.
 */
const ORDER = ['b', 'c', 'd', 'e', 'a', 'f', 'h', 'm', 'l', 'i', 'g', 'n', 'j', 'k'];

function measurementOrder(runnable, round) {
  const rank = (id) => {
    const i = ORDER.indexOf(id);
    return i === -1 ? ORDER.length : i;
  };
  const sorted = [...runnable].sort((x, y) => rank(x.s.id) - rank(y.s.id) || x.s.id.localeCompare(y.s.id));
  return round % 2 === 1 ? sorted.reverse() : sorted;
}

async function scrape(adminUrl) {
  const res = await fetch(`${adminUrl}/metrics`);
  return histogramBuckets(await res.text(), 'mission_gateway_decision_seconds');
}

async function runScale() {
  const child = new NodeChild(join(here, 'scale.js'), { execArgv: ['--expose-gc'], args: QUICK ? ['--quick'] : [] });
  try {
    const r = await child.request('scale', undefined, 300_000);
    return r.result;
  } finally {
    await child.stop();
  }
}

function machine() {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round(totalmem() / 1073741824),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    taskset: HAS_TASKSET,
    pinning: HAS_TASKSET ? `servers on core ${SERVER_CORE}, load generator on core ${LOAD_CORE}` : 'none (taskset missing or a single core)',
  };
}

async function main() {
  const release = await acquireBenchLock(log);
  process.once('SIGINT', () => {
    release();
    process.exit(130);
  });
  const started = Date.now();
  const m = machine();
  const loadBefore = loadavg()[0];
  log(`mission-gateway benchmark (${QUICK ? 'quick' : 'full'}): ${DURATION}s per run after ${WARMUP}s warm-up, loopback only`);
  log(`machine: ${m.cpu}, ${m.cores} cores, node ${m.node}; pinning: ${m.pinning}; load average ${loadBefore.toFixed(2)}`);
  if (loadBefore > m.cores) log(`warning: the machine is busy (load average ${loadBefore.toFixed(2)} on ${m.cores} cores): absolute numbers and ratios will be noisy`);
  const work = join(tmpdir(), `mgw-bench-${process.pid}`);
  mkdirSync(work, { recursive: true });

  const upstream = new NodeChild(join(here, 'servers/upstream.js'));
  const { url: upstreamUrl } = await upstream.ready();
  const dev = await startDevAuthorityIfBuilt();
  if (dev === null) log('note: dist/dev-authority is missing (run `npm run build`): scenarios g-l and revocation are skipped');
  const client = clientKey();
  const ctx = { upstreamUrl, upstreamStats: () => upstream.stats(), dev, client, work, quick: QUICK, durationS: DURATION, warmupS: WARMUP + FIRST_WARMUP, log, results: [] };

  const scenarios = await buildScenarios(ctx);
  const skipped = [];
  const notes = [];
  const raw = [];
  /** The extra (b)/(c) rounds actually run (none when either is not measured, e.g. --only=h). */
  let pairRounds = 0;
  let revocation = null;
  let revocationCrossReplica = null;
  // Revocation latency is measured with scenario (i)'s gateway; `--only=revocation` starts just that.
  const wantsRevocation = !flag('no-revocation') && (ONLY === undefined || ONLY.includes('i') || ONLY.includes('revocation'));
  const selected = scenarios.filter((s) => ONLY === undefined || ONLY.includes(s.id) || s.id === 'b' || (s.id === 'i' && wantsRevocation) || (s.id === 'f' && ONLY.some((x) => 'hijkl'.includes(x))) || (s.id === 'n' && ONLY.includes('j')));
  const active = [];
  try {
    // Every server is started (and probed) up front and stays up, idle, while the others are
    // measured: rounds can then interleave scenarios, so drift in background load hits all alike.
    await Promise.all(
      selected.map(async (s) => {
        const why = s.unavailable?.();
        if (why) return void skipped.push({ scenario: s.id, name: s.name, reason: why });
        let server;
        try {
          server = await s.start();
        } catch (err) {
          return void skipped.push({ scenario: s.id, name: s.name, reason: `failed to start: ${String(err.message).slice(0, 300)}` });
        }
        const bad = await probe(s, server).catch((err) => `probe failed: ${err.message}`);
        if (bad !== null) {
          skipped.push({ scenario: s.id, name: s.name, reason: bad });
          return void (await server.stop());
        }
        if (s.note) notes.push(`(${s.id}) ${s.note}`);
        active.push({ s, server });
      }),
    );
    for (const sk of skipped) log(`(${sk.scenario}) ${sk.name}: SKIPPED: ${sk.reason}`);
    active.sort((a, b) => a.s.id.localeCompare(b.s.id));
    log(`${active.length} scenarios up; ${ROUNDS} round(s)`);
    ctx.results = raw;
    /** One measurement in a round, logged; the crypto floor's sanity check on the baseline. */
    const measureInRound = async (s, server, wid, round) => {
      const w = WORKLOADS[wid];
      let measured;
      try {
        measured = await measure(s, server, w);
      } catch (err) {
        // One failed measurement (a load generator that died, a server that stopped answering) is reported, not fatal.
        log(`r${round + 1} (${s.id}) ${w.id}: measurement failed: ${String(err.message).slice(0, 300)}`);
        notes.push(`(${s.id}) ${w.id} round ${round + 1}: measurement failed: ${String(err.message).slice(0, 200)}`);
        return;
      }
      const r = { ...measured, round };
      raw.push(r);
      const bad2xx = r.non2xx;
      log(`[${Math.round((Date.now() - started) / 1000).toString().padStart(3)}s] r${round + 1} (${s.id}) ${s.name.padEnd(46)} ${w.id.padEnd(8)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${fmt(r.p50ms)} ms  p99 ${fmt(r.p99ms)} ms${r.decisionP99ms === null ? '' : `  decision p99 ${fmt(r.decisionP99ms, 3)} ms`}  cpu ${r.cpuUsPerRequest.toFixed(0)} us/req${bad2xx > 0 ? `  NON-2XX ${bad2xx} ${JSON.stringify(r.statusCodes)}` : ''}`);
      // The crypto floor is the baseline plus work: a baseline slower than it was disturbed
      // (a stall on the shared machine), so it is measured once more and the retry is noted.
      // Checked once both of the round's measurements exist (their order alternates by round).
      const sameRound = (id) => raw.find((x) => x.scenario === id && x.workload === wid && x.round === round);
      const base = sameRound('b');
      const floor = sameRound('f');
      const b = active.find((x) => x.s.id === 'b');
      if ((s.id === 'b' || s.id === 'f') && base !== undefined && floor !== undefined && b !== undefined && base.rps < floor.rps) {
        log(`r${round + 1} (b) ${wid}: the baseline (${base.rps.toFixed(0)} req/s) was slower than the crypto floor (${floor.rps.toFixed(0)} req/s): measuring it again`);
        try {
          const again = { ...(await measure(b.s, b.server, w)), round, remeasured: true };
          raw.splice(raw.indexOf(base), 1, again);
          notes.push(`(b) ${wid} round ${round + 1}: measured again after a disturbed run (${base.rps.toFixed(0)} -> ${again.rps.toFixed(0)} req/s)`);
        } catch (err) {
          log(`(b) ${wid}: measuring again failed: ${String(err.message).slice(0, 200)}`);
        }
      }
    };
    for (let round = 0; round < ROUNDS; round++) {
      for (const wid of Object.keys(WORKLOADS)) {
        const runnable = active.filter(({ s }) => (QUICK ? s.quickWorkloads : s.workloads).includes(wid));
        for (const { s, server } of measurementOrder(runnable, round)) await measureInRound(s, server, wid, round);
      }
    }
    // Step 1's bar compares two cheap servers whose per-round ratio swings by +-0.15 on this
    // machine (its speed drifts from one minute to the next): its pair gets more rounds, so the
    // median it is judged by rests on more samples. Same measurements, same alternating order.
    const pair = active.filter(({ s }) => PAIR.includes(s.id));
    if (ROUNDS > 0 && pair.length === PAIR.length) {
      pairRounds = PAIR_ROUNDS;
      for (let round = ROUNDS; round < ROUNDS + PAIR_ROUNDS; round++) {
        for (const wid of PAIR_WORKLOADS) {
          for (const { s, server } of measurementOrder(pair, round)) await measureInRound(s, server, wid, round);
        }
      }
    }
    const i = active.find(({ s }) => s.id === 'i');
    if (i !== undefined && dev !== null && wantsRevocation) {
      revocation = await runRevocation({ dev, server: i.server, client, count: 100, log });
    }
    if (dev !== null && wantsRevocation) {
      try {
        revocationCrossReplica = await runCrossReplicaRevocation({ ctx, count: 100, log });
      } catch (err) {
        revocationCrossReplica = { error: `failed: ${String(err.message).slice(0, 300)}` };
      }
      if (revocationCrossReplica.error) log(`cross-replica revocation: ${revocationCrossReplica.error}`);
    }
  } finally {
    await Promise.allSettled(active.map(({ server }) => server.stop()));
    await upstream.stop();
    await dev?.close();
    // Keys, gateway configs and evidence files of this run.
    rmSync(work, { recursive: true, force: true });
  }
  const results = aggregate(raw);

  let scale = null;
  if (!flag('no-scale') && ONLY === undefined) {
    log('scale: memory of the replay store and the Mission state cache (separate process)...');
    try {
      scale = await runScale();
    } catch (err) {
      scale = { error: String(err.message).slice(0, 500) };
    }
  }

  const out = {
    version: 1,
    timestamp: new Date(started).toISOString(),
    mode: QUICK ? 'quick' : 'full',
    durationS: DURATION,
    warmupS: WARMUP,
    firstWarmupS: WARMUP + FIRST_WARMUP,
    rounds: ROUNDS,
    pairRounds,
    machine: { ...m, loadAverage1mStart: round2(loadBefore), loadAverage1mEnd: round2(loadavg()[0]) },
    public_base_url: PUBLIC,
    scenarios: scenarios.map((s) => ({ id: s.id, name: s.name, description: s.description })),
    results,
    raw,
    skipped,
    notes,
    revocation,
    revocationCrossReplica,
    scale,
    elapsedS: Math.round((Date.now() - started) / 100) / 10,
  };
  out.bars = bars(out);
  const dir = join(here, 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = out.timestamp.replace(/[:.]/g, '-');
  writeFileSync(join(dir, `${stamp}.json`), `${JSON.stringify(out, null, 2)}\n`);
  // Only a run of every scenario replaces latest.json, which docs/benchmarks.md is generated from.
  if (ONLY === undefined) writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(out, null, 2)}\n`);
  printTable(out, log);
  log(`\nresults: bench/results/${stamp}.json${ONLY === undefined ? ' (and latest.json); `node bench/report.js` regenerates docs/benchmarks.md' : ' (a partial run: latest.json is left as it was)'}`);
  log(`elapsed ${out.elapsedS}s`);
}

function round2(v) {
  return Math.round(v * 100) / 100;
}

function fmt(v, digits = 2) {
  return v === null || v === undefined ? '-' : v.toFixed(digits);
}

main().catch((err) => {
  process.stderr.write(`benchmark failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
