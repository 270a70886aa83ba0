/**
 * Instructions per request, counted by valgrind's callgrind: a measure of each server's own work
 * that the machine's other tenants cannot move. `npm run bench` measures throughput, which on a
 * shared machine drifts by tens of percent from one second to the next (see
 * docs/benchmarks-notes.md); the count of instructions a server executes for a request does not
 * (repeat runs agree within a few percent). It is not a throughput: memory stalls, syscall time and
 * the upstream's share are not in it, so the throughput bars stay with `npm run bench`. It tells
 * whether a change made the gateway do less work, and how much more work each scenario does than
 * the baseline or the crypto floor.
 *
 *   npm run bench:instructions [-- --only=b,c,f,h,i --workloads=GET-50,POST-50 --warmup=20 --duration=12]
 *
 * Each measurement starts its server under `valgrind --tool=callgrind --instr-atstart=no` (about
 * 50x slower than natively); the load generator and the upstream run natively. Counting starts
 * after the warm-up, on the same connections (`callgrind_control --instr=on`), and the dump after
 * the window holds only the window's instructions, per thread: the main thread's are the figure
 * compared (the JIT compiler's and the GC's helper threads come in bursts). Two distortions to keep
 * in mind: valgrind hides the CPU's SHA extensions, so SHA-256 (the evidence chain, digests) counts
 * ~4x its native weight; and work cached per millisecond is shared by fewer requests at valgrind's
 * pace. Needs valgrind (`apt-get install -y valgrind`). BENCH_GATEWAY_DIST compares another build.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientKey } from './lib/dpop.js';
import { LOAD_CORE, NodeChild } from './lib/proc.js';
import { buildScenarios, startDevAuthorityIfBuilt, WORKLOADS } from './scenarios.js';

const argv = process.argv.slice(2);
const opt = (name, dflt) => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt;
const ONLY = opt('only', 'b,c,f,h,i').split(',');
const WANTED = opt('workloads', 'GET-50,POST-50').split(',');
const WARMUP = Number(opt('warmup', 20));
const DURATION = Number(opt('duration', 12));
// Under valgrind the servers answer ~1,000 req/s: DPoP proof pools are sized for that rate.
const VALGRIND_RPS = 1500;

if (spawnSync('valgrind', ['--version']).status !== 0) {
  console.error('valgrind is not installed (apt-get install -y valgrind)');
  process.exit(2);
}

const here = new URL('.', import.meta.url).pathname;
const work = join(tmpdir(), `mgw-instructions-${process.pid}`);
mkdirSync(work, { recursive: true });
const log = (...a) => console.log(...a);

const upstream = new NodeChild(join(here, 'servers/upstream.js'));
const { url: upstreamUrl } = await upstream.ready();
const dev = await startDevAuthorityIfBuilt();
const wrap = ['valgrind', '--tool=callgrind', '--instr-atstart=no', '--cache-sim=no', '--branch-sim=no', '--separate-threads=yes', `--callgrind-out-file=${work}/callgrind.%p`];
const ctx = {
  upstreamUrl,
  upstreamStats: () => upstream.stats(),
  dev,
  client: clientKey(),
  work,
  quick: false,
  durationS: DURATION,
  warmupS: WARMUP,
  log,
  results: Object.keys(WORKLOADS).map((w) => ({ scenario: 'f', workload: w, rps: VALGRIND_RPS })),
  wrap,
};
const scenarios = (await buildScenarios(ctx)).filter((s) => ONLY.includes(s.id));

/**
 * Instructions in the newest dump of `pid`: the main thread's (the request work: JavaScript, the
 * HTTP parsers, syscalls' user side, scavenges) and the whole process's (plus the JIT compiler's
 * and the GC's helper threads, whose work comes in bursts and moves the total by several percent).
 */
function dumpedInstructions(pid) {
  const dumps = readdirSync(work).filter((f) => f.startsWith(`callgrind.${pid}.`));
  const last = Math.max(...dumps.map((f) => Number(/^callgrind\.\d+\.(\d+)-\d+$/.exec(f)?.[1] ?? -1)));
  if (last < 0) throw new Error(`no callgrind dump for ${pid}`);
  let main = 0;
  let all = 0;
  for (const f of dumps.filter((f) => f.startsWith(`callgrind.${pid}.${last}-`))) {
    const m = /^summary:\s+(\d+)/m.exec(readFileSync(join(work, f), 'utf8'));
    if (m === null) continue;
    all += Number(m[1]);
    if (f.endsWith('-01')) main = Number(m[1]);
  }
  return { main, all };
}

const control = (pid, ...args) => execFileSync('callgrind_control', [...args, String(pid)], { stdio: 'ignore' });

const rows = [];
for (const s of scenarios) {
  if (s.unavailable?.() != null) {
    log(`${s.id}: skipped (${s.unavailable()})`);
    continue;
  }
  const workloads = s.workloads.filter((w) => WANTED.includes(w));
  if (workloads.length === 0) continue;
  for (const wid of workloads) {
    // A fresh server per measurement: one dump per process (a second instrumented window in the
    // same process gave callgrind counters that wrapped around).
    const server = await s.start();
    const pid = server.pids[0];
    const w = WORKLOADS[wid];
    const load = new NodeChild(join(here, 'load.js'), { core: LOAD_CORE });
    try {
      await load.request('hello', undefined, 60_000);
      await load.request('warm', { ...s.job(w, server), connections: w.connections, durationS: DURATION, warmupS: WARMUP }, 600_000);
      control(pid, '--instr=on');
      const r = await load.request('result', { type: 'go' }, (DURATION + 120) * 1000);
      control(pid, '--dump');
      const { main, all } = dumpedInstructions(pid);
      const perRequest = r.total > 0 ? main / r.total : null;
      const allPerRequest = r.total > 0 ? all / r.total : null;
      rows.push({ scenario: s.id, name: s.name, workload: wid, requests: r.total, non2xx: r.non2xx, mainThread: main, allThreads: all, perRequest, allPerRequest });
      const fmt = (v) => (v === null ? '-' : Math.round(v).toLocaleString('en-US')).padStart(9);
      log(`${s.id} ${wid.padEnd(8)} ${String(r.total).padStart(6)} requests ${fmt(perRequest)} instructions/request on the main thread, ${fmt(allPerRequest)} in all threads${r.non2xx ? `  (${r.non2xx} non-2xx!)` : ''}`);
    } finally {
      await load.stop();
      await server.stop();
    }
  }
}

const row = (id, w) => rows.find((r) => r.scenario === id && r.workload === w && r.perRequest !== null);
const PAIRS = [
  ['c', 'b', 'auth: none vs baseline'],
  ['h', 'f', 'token + DPoP vs crypto floor'],
  ['i', 'f', 'full enforcement vs crypto floor'],
  ['m', 'h', 'cached Mission vs token + DPoP'],
  ['j', 'n', 'MCP tools/call vs its floor'],
];
log('\nwork relative to the reference (reference instructions / scenario instructions, main thread and all threads; 1.00 = as little work):');
for (const [a, b, what] of PAIRS) {
  for (const w of WANTED) {
    const x = row(a, w);
    const y = row(b, w);
    if (x !== undefined && y !== undefined) log(`  ${a}/${b} ${w.padEnd(8)} ${(y.perRequest / x.perRequest).toFixed(3)}  ${(y.allPerRequest / x.allPerRequest).toFixed(3)}  ${what}`);
  }
}
const file = join(here, 'results', `instructions-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ timestamp: new Date().toISOString(), warmupS: WARMUP, durationS: DURATION, dist: process.env.BENCH_GATEWAY_DIST ?? null, rows }, null, 2) + '\n');
log(`\nsaved ${file}`);
await upstream.stop();
await dev?.close();
process.exit(0);
