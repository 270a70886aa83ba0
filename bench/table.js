/** The readable table and the PASS/FAIL bars, computed from a results object (also used by report.js). */
import { median } from './lib/stats.js';

export const FLOOR_RATIO_SCENARIOS = new Set(['h', 'i', 'j', 'k', 'l']);

/** The floor a scenario is held to: (n), the floor sent the same MCP call, for (j) when measured; (f) otherwise. */
function floorScenario(out, r) {
  return r.scenario === 'j' && ratio(out, r, 'n') !== null ? 'n' : 'f';
}

/** Throughput ratio of a result to its floor (see floorScenario). */
export function floorOf(out, r) {
  return ratio(out, r, floorScenario(out, r));
}

export function find(out, scenario, workload) {
  return out.results.find((r) => r.scenario === scenario && r.workload === workload) ?? null;
}

/** Throughput ratio of a result to another scenario on the same workload. */
export function ratio(out, r, to) {
  // Median of per-round ratios when the run had rounds (see aggregate() in run.js).
  if (r.ratios?.[to] !== undefined) return r.ratios[to];
  const b = find(out, to, r.workload);
  return b === null || b.rps === 0 ? null : r.rps / b.rps;
}

/**
 * p99 of `r` minus p99 of `base` (ms): the median of the per-round differences when both were
 * measured in the same rounds (the same pairing as the ratios), else the difference of medians.
 */
export function p99Difference(r, base) {
  const diffs = [];
  for (const x of r.perRound ?? []) {
    const y = base.perRound?.find((z) => z.round === x.round);
    if (y !== undefined && x.p99ms !== null && y.p99ms !== null) diffs.push(x.p99ms - y.p99ms);
  }
  if (diffs.length > 0) return median(diffs);
  return r.p99ms !== null && base.p99ms !== null ? r.p99ms - base.p99ms : null;
}

function bar(id, text, measured, pass, detail) {
  return { id, text, measured, pass, detail };
}

/** The bars the product promises, each PASS, FAIL, or null when not measured in this run. */
export function bars(out) {
  const list = [];
  for (const w of ['GET-50', 'POST-50']) {
    const b = find(out, 'b', w);
    const c = find(out, 'c', w);
    const ok = b !== null && c !== null;
    // Like every other ratio: the median of the per-round ratios (each round's (c) against the
    // baseline measured seconds before or after it), not a ratio of medians taken across rounds.
    const r = ok ? ratio(out, c, 'b') : null;
    list.push(bar(`c-throughput-${w}`, `(c) auth: none >= 0.85 x baseline throughput, ${w}`, r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 0.85));
    const dp = ok ? p99Difference(c, b) : null;
    list.push(bar(`c-p99-${w}`, `(c) auth: none p99 <= baseline p99 + 1 ms, ${w}`, dp === null ? null : `${dp >= 0 ? '+' : ''}${dp.toFixed(2)} ms`, dp === null ? null : dp <= 1));
  }
  for (const w of ['GET-50', 'POST-50']) {
    const h = find(out, 'h', w);
    const r = h === null ? null : ratio(out, h, 'f');
    list.push(bar(`h-floor-${w}`, `(h) token + DPoP >= 0.8 x crypto floor, ${w}`, r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 0.8));
  }
  {
    const m = find(out, 'm', 'GET-50');
    const r = m === null ? null : ratio(out, m, 'h');
    list.push(bar('m-vs-h', '(m) Mission cached loses at most 5 % of (h) token + DPoP throughput, GET-50', r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 0.95));
  }
  {
    const i = find(out, 'i', 'POST-50');
    const r = i === null ? null : ratio(out, i, 'f');
    list.push(bar('i-floor', '(i) full enforcement >= 0.7 x crypto floor, POST-50', r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 0.7));
    const i10 = find(out, 'i', 'POST-10');
    const d = i10?.decisionP99ms ?? null;
    list.push(bar('i-decision', '(i) full enforcement decision p99 < 1 ms at 10 connections', d === null ? null : `${d.toFixed(3)} ms`, d === null ? null : d < 1));
  }
  {
    const j = find(out, 'j', 'POST-50');
    const r = j === null ? null : floorOf(out, j);
    const on = j !== null && floorScenario(out, j) === 'n' ? 'the crypto floor on the same call (n)' : 'crypto floor (f)';
    list.push(bar('j-floor', `(j) MCP tools/call full enforcement >= 0.6 x ${on}, POST-50`, r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 0.6));
  }
  {
    const i = find(out, 'i', 'POST-50');
    const g = find(out, 'g', 'POST-50');
    const r = i !== null && g !== null ? ratio(out, i, 'g') : null;
    list.push(bar('i-vs-express', '(i) full enforcement >= 3 x express + express-oauth2-jwt-bearer (g), POST-50', r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 3));
  }
  for (const w of ['GET-50', 'POST-50']) {
    const l = find(out, 'l', w);
    const r = l === null ? null : ratio(out, l, 'h');
    list.push(bar(`l-memory-${w}`, `(l) redis replay store >= 0.8 x memory (h), ${w}`, r === null ? null : `${r.toFixed(2)}x`, r === null ? null : r >= 0.8));
  }
  {
    const r = out.revocation;
    const p99 = r && !r.error ? r.p99ms : null;
    list.push(
      bar(
        'revocation',
        'revocation p99 < 10 ms on one replica (push accepted -> first denied request, 100 revocations; none allowed after the 202)',
        p99 === null ? null : `${p99.toFixed(2)} ms (n=${r.n}, allowed after 202: ${r.allowedAfter202})`,
        p99 === null ? null : p99 < 10 && r.n >= 100 && r.allowedAfter202 === 0,
      ),
    );
  }
  {
    const x = out.revocationCrossReplica;
    const p99 = x && !x.error ? x.p99ms : null;
    list.push(bar('revocation-cross-replica', 'cross-replica revocation p99 < 100 ms (revoke call -> first denial at the other replica, 100 revocations)', p99 === null ? null : `${p99.toFixed(2)} ms (n=${x.n})`, p99 === null ? null : p99 < 100 && x.n >= 100));
  }
  return list;
}

const f = (v, d = 2) => (v === null || v === undefined ? '-' : v.toFixed(d));

/** Rows for the results table: one per scenario x workload. */
const WORKLOAD_ORDER = ['GET-10', 'GET-50', 'POST-10', 'POST-50'];

/** `0.87` or, with several rounds, `0.87 (0.80-0.92)`: the median and range of per-round ratios. */
function withRange(r, to, v, ranges) {
  const range = r.ratioRanges?.[to];
  if (!ranges || v === null || range === undefined || (r.rounds ?? 1) < 2) return f(v);
  return `${f(v)} (${f(range[0])}-${f(range[1])})`;
}

export function rows(out, { ranges = false } = {}) {
  const names = new Map(out.scenarios.map((s) => [s.id, s.name]));
  const sorted = [...out.results].sort((a, b) => WORKLOAD_ORDER.indexOf(a.workload) - WORKLOAD_ORDER.indexOf(b.workload) || a.scenario.localeCompare(b.scenario));
  return sorted.map((r) => {
    const rb = ratio(out, r, 'b');
    const rf = FLOOR_RATIO_SCENARIOS.has(r.scenario) ? floorOf(out, r) : null;
    return {
      id: r.scenario,
      name: names.get(r.scenario) ?? r.scenario,
      workload: r.workload,
      rps: r.rps.toFixed(0),
      xBaseline: withRange(r, 'b', rb, ranges),
      xFloor: rf === null ? '-' : withRange(r, floorScenario(out, r), rf, ranges),
      p50: f(r.p50ms),
      p99: f(r.p99ms),
      decisionP99: f(r.decisionP99ms, 3),
      cpu: f(r.cpuUsPerRequest, 0),
      rss: f(r.rssMiB, 0),
      non2xx: r.non2xx,
      rounds: r.rounds ?? 1,
    };
  });
}

export const COLUMNS = [
  ['id', 'sc'],
  ['name', 'scenario'],
  ['workload', 'workload'],
  ['rps', 'req/s'],
  ['xBaseline', 'x base'],
  ['xFloor', 'x floor'],
  ['p50', 'p50 ms'],
  ['p99', 'p99 ms'],
  ['decisionP99', 'decision p99 ms'],
  ['cpu', 'cpu us/req'],
  ['rss', 'RSS MiB'],
  ['non2xx', 'non-2xx'],
];

export function printTable(out, log) {
  const rs = rows(out);
  const widths = COLUMNS.map(([k, h]) => Math.max(h.length, ...rs.map((r) => String(r[k]).length)));
  const line = (cells) => cells.map((c, i) => (i <= 2 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  log('');
  log(line(COLUMNS.map(([, h]) => h)));
  log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rs) log(line(COLUMNS.map(([k]) => r[k])));
  if (out.skipped.length > 0) {
    log('\nskipped:');
    for (const s of out.skipped) log(`  (${s.scenario}) ${s.name}: ${s.reason}`);
  }
  if (out.notes.length > 0) {
    log('\nnotes:');
    for (const n of out.notes) log(`  ${n}`);
  }
  log(`  x base = throughput / baseline (b) on the same workload, same run; x floor = throughput / crypto floor (f); for (j), the floor sent the same MCP call (n).`);
  log(`  decision p99 = mission_gateway_decision_seconds p99 (gateway's own time, upstream excluded), from /metrics buckets.`);
  log(`  cpu us/req = server-side process CPU per request (proxy only; redis included for (l)); pinning: ${out.machine.pinning}.`);
  if (out.revocation) {
    const r = out.revocation;
    log(
      r.error
        ? `\nrevocation latency: ${r.error}`
        : `\nrevocation latency (lifecycle SET push accepted -> first denied request, n=${r.n}): p50 ${f(r.p50ms)} ms, p99 ${f(r.p99ms)} ms, max ${f(r.maxMs)} ms; ` +
            `from the revoke call: p50 ${f(r.endToEnd?.p50ms)} ms, p99 ${f(r.endToEnd?.p99ms)} ms; allowed after the 202: ${r.allowedAfter202}/${r.n}; denied ${r.deniedReason}`,
    );
  }
  if (out.revocationCrossReplica) {
    const x = out.revocationCrossReplica;
    if (x.error) log(`${out.revocation ? '' : '\n'}cross-replica revocation latency: ${x.error}`);
    else {
      log(`${out.revocation ? '' : '\n'}cross-replica revocation latency (SET pushed to replica A, requests at replica B; from ${x.measuredFrom} to B's first denial, n=${x.n}): p50 ${f(x.p50ms)} ms, p99 ${f(x.p99ms)} ms, max ${f(x.maxMs)} ms`);
      log(`  from A's 202 to B's first denial: p50 ${f(x.after202.p50ms)} ms, p99 ${f(x.after202.p99ms)} ms, max ${f(x.after202.maxMs)} ms; B allowed a request started after A's 202 for ${x.allowedAfter202}/${x.n} Missions; denied ${x.deniedReason}`);
    }
  }
  if (out.scale) {
    log('\nscale:');
    if (out.scale.error) log(`  ${out.scale.error}`);
    for (const s of out.scale.items ?? []) log(`  ${s.text}`);
  }
  log('\nbars:');
  for (const b of out.bars) log(`  ${b.pass === null ? 'n/a ' : b.pass ? 'PASS' : 'FAIL'}  ${b.text}${b.measured === null ? ' (not measured in this run)' : `: ${b.measured}`}`);
}
