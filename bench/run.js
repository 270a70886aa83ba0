#!/usr/bin/env node
/**
 * mission-gateway benchmarks. Every scenario is measured in the same run as the baseline (a minimal
 * undici pass-through proxy) and reported as ratios to it, so a slower or busier machine moves all
 * numbers together. Servers run in child processes pinned to core 0, the load generator
 * (autocannon) in a child pinned to core 1, when taskset exists.
 *
 *   npm run bench -- --quick            short runs, the workloads the bars need (< 2 min)
 *   npm run bench                        every scenario x {GET 200 B, POST 1 KiB} x {10, 50} connections
 *   npm run bench -- --only=b,c          a subset of scenarios (the baseline is always run)
 *   npm run bench -- --duration=3 --warmup=1 --no-scale --no-revocation
 *
 * Requires a build (`npm run build`): it runs the compiled dist/ code.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HAS_TASKSET, LOAD_CORE, NodeChild, SERVER_CORE } from './lib/proc.js';
import { bucketQuantile, diffBuckets, histogramBuckets } from './lib/stats.js';
import { clientKey } from './lib/dpop.js';
import { buildScenarios, probe, PUBLIC, startDevAuthorityIfBuilt, WORKLOADS } from './scenarios.js';
import { runRevocation } from './revocation.js';
import { printTable, bars } from './table.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const opt = (name, dflt) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? dflt : a.slice(name.length + 3);
};
const QUICK = flag('quick');
const DURATION = Number(opt('duration', QUICK ? 2 : 5));
const WARMUP = Number(opt('warmup', QUICK ? 0.5 : 1));
const ONLY = opt('only', null)?.split(',').map((s) => s.trim());
const log = (line) => process.stdout.write(`${line}\n`);

async function measure(scenario, server, workload) {
  const job = { ...scenario.job(workload), connections: workload.connections, durationS: DURATION, warmupS: WARMUP };
  const load = new NodeChild(join(here, 'load.js'), { core: LOAD_CORE });
  try {
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
  const ctx = { upstreamUrl, upstreamStats: () => upstream.stats(), dev, client, work, quick: QUICK, durationS: DURATION, warmupS: WARMUP, log, results: [] };

  const scenarios = await buildScenarios(ctx);
  const skipped = [];
  const results = [];
  const notes = [];
  let revocation = null;
  try {
    for (const s of scenarios) {
      if (ONLY !== undefined && !ONLY.includes(s.id) && s.id !== 'b' && !(s.id === 'f' && ONLY.some((x) => 'hijkl'.includes(x)))) continue;
      const why = s.unavailable?.();
      if (why) {
        skipped.push({ scenario: s.id, name: s.name, reason: why });
        log(`(${s.id}) ${s.name}: SKIPPED: ${why}`);
        continue;
      }
      let server;
      try {
        server = await s.start();
      } catch (err) {
        skipped.push({ scenario: s.id, name: s.name, reason: `failed to start: ${String(err.message).slice(0, 300)}` });
        log(`(${s.id}) ${s.name}: SKIPPED: failed to start: ${String(err.message).slice(0, 300)}`);
        continue;
      }
      try {
        const bad = await probe(s, server);
        if (bad !== null) {
          skipped.push({ scenario: s.id, name: s.name, reason: bad });
          log(`(${s.id}) ${s.name}: SKIPPED: ${bad}`);
          continue;
        }
        if (s.note) notes.push(`(${s.id}) ${s.note}`);
        for (const wid of QUICK ? s.quickWorkloads : s.workloads) {
          const w = WORKLOADS[wid];
          ctx.results = results;
          const r = await measure(s, server, w);
          results.push(r);
          const bad2xx = r.requests - r.ok;
          log(`[${Math.round((Date.now() - started) / 1000).toString().padStart(3)}s] (${s.id}) ${s.name.padEnd(46)} ${w.id.padEnd(9)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${fmt(r.p50ms)} ms  p99 ${fmt(r.p99ms)} ms${r.decisionP99ms === null ? '' : `  decision p99 ${fmt(r.decisionP99ms, 3)} ms`}  cpu ${r.cpuUsPerRequest.toFixed(0)} us/req${bad2xx > 0 ? `  NON-2XX ${bad2xx} ${JSON.stringify(r.statusCodes)}` : ''}`);
        }
        if (s.id === 'i' && dev !== null && !flag('no-revocation')) {
          revocation = await runRevocation({ dev, server, client, count: 100, log });
        }
      } finally {
        await server.stop();
      }
    }
  } finally {
    await upstream.stop();
    await dev?.close();
  }

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
    machine: { ...m, loadAverage1mStart: round2(loadBefore), loadAverage1mEnd: round2(loadavg()[0]) },
    public_base_url: PUBLIC,
    scenarios: scenarios.map((s) => ({ id: s.id, name: s.name, description: s.description })),
    results,
    skipped,
    notes,
    revocation,
    scale,
    elapsedS: Math.round((Date.now() - started) / 100) / 10,
  };
  out.bars = bars(out);
  const dir = join(here, 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = out.timestamp.replace(/[:.]/g, '-');
  writeFileSync(join(dir, `${stamp}.json`), `${JSON.stringify(out, null, 2)}\n`);
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(out, null, 2)}\n`);
  printTable(out, log);
  log(`\nresults: bench/results/${stamp}.json (and latest.json); \`node bench/report.js\` regenerates docs/benchmarks.md`);
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
