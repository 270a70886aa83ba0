#!/usr/bin/env node
/**
 * Regenerates docs/benchmarks.md and its SVG charts from bench/results/latest.json (or the file
 * given as the first argument). Every number in the document and in the charts comes from that file.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COLUMNS, find, ratio, rows } from './table.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const input = process.argv[2] ?? join(root, 'bench/results/latest.json');
const out = JSON.parse(readFileSync(input, 'utf8'));
const docs = join(root, 'docs');
mkdirSync(docs, { recursive: true });

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f = (v, d = 2) => (v === null || v === undefined ? '-' : Number(v).toFixed(d));
const COLORS = { GET: '#4e79a7', POST: '#f28e2b', cpu: '#59a14f', bar: '#76b7b2' };

/**
 * A horizontal grouped bar chart. groups: [{ label, bars: [{ series, value, text }] }].
 */
function barChart({ title, subtitle, groups, series, unit, reference = null }) {
  const labelW = 330;
  const plotW = 430;
  const barH = 14;
  const gap = 10;
  const top = 58;
  const groupH = series.length * barH + gap;
  const height = top + groups.length * groupH + 40;
  const width = labelW + plotW + 120;
  const max = Math.max(reference ?? 0, ...groups.flatMap((g) => g.bars.map((b) => b.value ?? 0))) * 1.05 || 1;
  const x = (v) => labelW + (v / max) * plotW;
  const parts = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  parts.push(`<text x="10" y="20" font-size="15" font-weight="600">${esc(title)}</text>`);
  parts.push(`<text x="10" y="38" fill="#555">${esc(subtitle)}</text>`);
  series.forEach((s, i) => {
    parts.push(`<rect x="${labelW + i * 110}" y="44" width="10" height="10" fill="${s.color}"/><text x="${labelW + 14 + i * 110}" y="53">${esc(s.label)}</text>`);
  });
  groups.forEach((g, gi) => {
    const y0 = top + gi * groupH;
    parts.push(`<text x="${labelW - 8}" y="${y0 + (series.length * barH) / 2 + 4}" text-anchor="end">${esc(g.label)}</text>`);
    series.forEach((s, si) => {
      const b = g.bars.find((v) => v.series === s.id);
      const y = y0 + si * barH;
      if (b === undefined || b.value === null) {
        parts.push(`<text x="${labelW + 4}" y="${y + barH - 3}" fill="#999">not measured</text>`);
        return;
      }
      const w = Math.max(1, x(b.value) - labelW);
      parts.push(`<rect x="${labelW}" y="${y + 1}" width="${w.toFixed(1)}" height="${barH - 2}" fill="${s.color}"/>`);
      parts.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 3}">${esc(b.text)}</text>`);
    });
  });
  if (reference !== null) {
    const rx = x(reference).toFixed(1);
    parts.push(`<line x1="${rx}" y1="${top - 4}" x2="${rx}" y2="${height - 30}" stroke="#333" stroke-dasharray="4 3"/>`);
    parts.push(`<text x="${rx}" y="${height - 16}" text-anchor="middle" fill="#333">${esc(`${reference}${unit} (baseline)`)}</text>`);
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

const scenarioName = new Map(out.scenarios.map((s) => [s.id, s.name]));
const measuredIds = [...new Set(out.results.map((r) => r.scenario))].sort();

const throughputSvg = barChart({
  title: 'Throughput relative to the baseline proxy (same run, 50 connections)',
  subtitle: `${out.machine.cpu}, ${out.machine.cores} cores, node ${out.machine.node}; ${out.mode} run of ${out.timestamp}`,
  series: [
    { id: 'GET-50', label: 'GET 200 B', color: COLORS.GET },
    { id: 'POST-50', label: 'POST 1 KiB', color: COLORS.POST },
  ],
  unit: 'x',
  reference: 1,
  groups: measuredIds.map((id) => ({
    label: `(${id}) ${scenarioName.get(id) ?? id}`,
    bars: ['GET-50', 'POST-50'].map((w) => {
      const r = find(out, id, w);
      const x = r === null ? null : ratio(out, r, 'b');
      return { series: w, value: x, text: r === null || x === null ? '' : `${x.toFixed(2)}x  (${r.rps.toFixed(0)} req/s)` };
    }),
  })),
});

const cpuSvg = barChart({
  title: 'Server CPU per request (50 connections)',
  subtitle: 'process.cpuUsage() of the proxy process over the measured run / requests (nginx: /proc)',
  series: [
    { id: 'GET-50', label: 'GET 200 B', color: COLORS.GET },
    { id: 'POST-50', label: 'POST 1 KiB', color: COLORS.POST },
  ],
  unit: ' us',
  groups: measuredIds.map((id) => ({
    label: `(${id}) ${scenarioName.get(id) ?? id}`,
    bars: ['GET-50', 'POST-50'].map((w) => {
      const r = find(out, id, w);
      return { series: w, value: r?.cpuUsPerRequest ?? null, text: r === null ? '' : `${r.cpuUsPerRequest.toFixed(0)} us` };
    }),
  })),
});

writeFileSync(join(docs, 'bench-throughput.svg'), throughputSvg);
writeFileSync(join(docs, 'bench-cpu.svg'), cpuSvg);

const m = out.machine;
const lines = [];
const p = (s = '') => lines.push(s);
p('# Benchmarks');
p();
p('<!-- Generated by `node bench/report.js` from bench/results/latest.json. Do not edit by hand. -->');
p();
p('Every scenario runs in the same benchmark run as the **baseline**, a minimal pass-through proxy');
p('(node:http + undici `Pool.dispatch`, in `bench/servers/undici-proxy.js`), and is reported as a ratio to it,');
p('so that a faster or busier machine moves every number together. The enforcing scenarios are also');
p('reported against the **crypto floor**: the baseline, sent the same requests as the gateway (access token');
p("and a fresh DPoP proof each), plus exactly one synchronous ES256 verification of the request's proof,");
p('the least any proxy validating a DPoP proof per request can do.');
p();
p('```');
p('npm run build');
p('npm run bench -- --quick     # < 2 minutes: the workloads the bars need, 2 s each');
p('npm run bench                # every scenario x {GET 200 B, POST 1 KiB} x {10, 50} connections');
p('node bench/report.js         # regenerates this page and its charts from bench/results/latest.json');
p('```');
p();
p('## Machine and run');
p();
p(`| | |`);
p(`|---|---|`);
p(`| CPU | ${m.cpu} |`);
p(`| cores | ${m.cores} |`);
p(`| memory | ${m.memoryGiB} GiB |`);
p(`| node | ${m.node} (${m.platform}) |`);
p(`| taskset | ${m.taskset ? 'yes' : 'no'}: ${m.pinning} |`);
p(`| load average (1 min) at start / end | ${f(m.loadAverage1mStart)} / ${f(m.loadAverage1mEnd)} |`);
p(`| run | ${out.mode}, ${out.rounds ?? 1} round(s) of ${out.durationS} s per measurement after ${out.warmupS} s warm-up (${out.firstWarmupS ?? out.warmupS} s before a server's first), ${out.timestamp}, ${out.elapsedS} s in all |`);
p();
if ((m.loadAverage1mStart ?? 0) > m.cores || (m.loadAverage1mEnd ?? 0) > m.cores) {
  p(`> **This run was made on a busy machine** (load average above the number of cores): other processes`);
  p(`> competed for both cores, so absolute numbers and even ratios are noisy. CPU per request is the`);
  p(`> least noise-sensitive column. Rerun on an idle machine before quoting numbers.`);
  p();
}
p('Loopback only. Servers (upstream, proxies, gateway, redis, nginx) run in their own processes; the');
p('load generator (autocannon 8, in `bench/load.js`) in another, with latency recorded per response at');
p('microsecond resolution. The upstream answers a ~200 B JSON document to every request.');
p();
p('## Scenarios');
p();
for (const s of out.scenarios) p(`- **(${s.id}) ${s.name}**: ${s.description}`);
p();
p('## Method');
p();
p('- Each measurement: a fresh autocannon process, one run on the same connections: warm-up, then the measured');
p('  window; server CPU (process.cpuUsage over IPC, /proc for nginx and redis) and the gateway\'s `/metrics` are');
p('  read when the window opens and after it. Throughput is the responses counted in the window over its length.');
p('- Each ratio compares two measurements of the same round, and each scenario runs next to the one its bar');
p('  compares it with (c after b, h after f, m and l around h, i between h/l and g, j after n), seconds apart;');
p('  odd rounds run in reverse, so drift in background load cancels over the rounds.');
if (out.pairRounds > 0) {
  p(`- The baseline and (c) get ${out.pairRounds} more rounds on GET-50 and POST-50 (${out.rounds + out.pairRounds} in all): their per-round`);
  p('  ratio swings by about +-0.15 on a shared machine, and (c)\'s bar is judged by the median of those ratios.');
}
p('- (h)-(l): the agent reuses its access token, as a real agent does (the gateway verifies it once, then');
p('  serves it from its bounded token cache); every request carries its own DPoP proof with a distinct `jti`,');
p('  pre-generated before the run, so the ES256 proof verification and the replay record happen on every request.');
p('- (i)-(k): the Mission state is fetched once from the dev authority\'s Mission Status endpoint (a signed JWT)');
p('  and served from the cache afterwards; revocation is measured separately below.');
p('- Evidence: (c), (h) and (l) write their records to stdout (discarded); (i), (j) and (k) append to a file.');
p('- `decision p99` comes from histogram buckets (0.05, 0.1, 0.25, 0.5, 1, 2.5 ms, ...): `0.050` means at or');
p('  under 50 us; values inside a bucket are interpolated as Prometheus does.');
p('- CPU per request counts the proxy process only (plus redis for (l)), not the upstream or the load generator.');
p();
p('## Results');
p();
p('`x base`: throughput / baseline (b), same workload, same run. `x floor`: throughput / crypto floor (f); for (j), the crypto floor sent the same MCP call (n).');
p('With several rounds, each ratio is the median of the per-round ratios (each round against the baseline');
p('measured in that round), with their range in parentheses; other columns are medians over rounds.');
p("(c)'s p99 bar is paired the same way: the median of the per-round differences to the baseline's p99.");
p('`decision p99`: p99 of `mission_gateway_decision_seconds` (the gateway\'s own time, upstream excluded),');
p('computed from the histogram buckets scraped from `/metrics` before and after the measurement.');
p('`cpu us/req`: CPU time of the proxy process(es) during the measurement divided by requests served.');
p();
const rs = rows(out, { ranges: true });
p(`| ${COLUMNS.map(([, h]) => h).join(' | ')} |`);
p(`|${COLUMNS.map((_, i) => (i <= 2 ? '---' : '---:')).join('|')}|`);
for (const r of rs) p(`| ${COLUMNS.map(([k]) => String(r[k])).join(' | ')} |`);
p();
p(`![Throughput relative to the baseline](${relative(docs, join(docs, 'bench-throughput.svg'))})`);
p();
p(`![CPU per request](${relative(docs, join(docs, 'bench-cpu.svg'))})`);
p();
p('## Bars');
p();
p('| bar | measured | result |');
p('|---|---:|---|');
for (const b of out.bars) p(`| ${b.text} | ${b.measured ?? '-'} | ${b.pass === null ? 'not measured' : b.pass ? 'PASS' : '**FAIL**'} |`);
p();
p('## Revocation latency');
p();
const rv = out.revocation;
if (rv === null || rv === undefined) p('Not measured in this run.');
else if (rv.error) p(`Not measured: ${rv.error}`);
else {
  p(`The dev authority revokes a Mission whose state the gateway has cached and pushes the lifecycle SET`);
  p(`(RFC 8935). Once the push is accepted (the gateway answered 202), the client sends requests, one at a`);
  p(`time with a fresh DPoP proof each, until one is denied. The bar (step 3) is on the first row: push`);
  p(`accepted to the first denied request. The second row measures from the revoke call instead, adding the`);
  p(`authority's own work (signing the SET, pushing it, the gateway verifying it).`);
  p();
  p(`| measured from | n | p50 | p99 | max |`);
  p(`|---|---:|---:|---:|---:|`);
  p(`| push accepted (202) | ${rv.n} | ${f(rv.p50ms)} ms | ${f(rv.p99ms)} ms | ${f(rv.maxMs)} ms |`);
  if (rv.endToEnd) p(`| the revoke call | ${rv.n} | ${f(rv.endToEnd.p50ms)} ms | ${f(rv.endToEnd.p99ms)} ms | ${f(rv.endToEnd.maxMs)} ms |`);
  p();
  p(`Revoke call to 202, p50: ${f(rv.pushAcceptedP50ms)} ms. Missions for which a request started after the 202 was`);
  p(`still allowed: ${rv.allowedAfter202 ?? '-'} of ${rv.n}. Denial: ${rv.deniedReason ?? '-'}.`);
}
p();
p('### Across replicas');
p();
const xr = out.revocationCrossReplica;
if (xr === null || xr === undefined) p('Not measured in this run.');
else if (xr.error) p(`Not measured: ${xr.error}`);
else {
  p('Two gateway processes with the same config share one `redis-server` (`replay_store: { type: redis }`:');
  p('DPoP replay records and the Mission change stream). The dev authority pushes lifecycle SETs to replica A');
  p('only; the client sends its requests to replica B, which has the Mission cached (one allowed request');
  p('first), so B can only learn of the revocation from A over redis. After the revoke call returns (A answered');
  p('202), the client asks B again, one request at a time with a fresh DPoP proof each, until B answers');
  p(`403 \`mission_terminated\`. Latency is measured from ${xr.measuredFrom} to B's first denial; the`);
  p(`second row measures from A's 202 instead. ${xr.warmup ?? 0} warm-up revocation(s) before the ${xr.n} measured.`);
  p();
  p('| measured from | n | p50 | p99 | max |');
  p('|---|---:|---:|---:|---:|');
  p(`| ${xr.measuredFrom} | ${xr.n} | ${f(xr.p50ms)} ms | ${f(xr.p99ms)} ms | ${f(xr.maxMs)} ms |`);
  p(`| A's 202 (revoke call returned) | ${xr.n} | ${f(xr.after202.p50ms)} ms | ${f(xr.after202.p99ms)} ms | ${f(xr.after202.maxMs)} ms |`);
  p();
  p(`Push answered 202, p50: ${f(xr.pushAcceptedP50ms)} ms. Missions for which B still allowed a request started`);
  p(`after A's 202: ${xr.allowedAfter202} of ${xr.n}. Denial: ${xr.deniedReason ?? '-'}.`);
}
p();
p('## Scale');
p();
if (out.scale === null || out.scale === undefined) p('Not measured in this run.');
else if (out.scale.error) p(`Failed: ${out.scale.error}`);
else {
  for (const item of out.scale.items ?? []) p(`- ${item.text}`);
  const rp = out.scale.replay;
  const ms = out.scale.missions;
  if (rp || ms) {
    p();
    p('| structure | entries | bytes per entry (heap + external) | when full |');
    p('|---|---:|---:|---|');
    if (rp) p(`| DPoP jti replay store (memory) | ${rp.entries.toLocaleString('en-US')} | ${f(rp.totalBytesPerEntry, 1)} | ${rp.overfill.refusedFull === undefined ? `${rp.overfill.evictions.toLocaleString('en-US')} evictions of the entry expiring first` : `${rp.overfill.refusedFull.toLocaleString('en-US')} claims refused as full, ${rp.overfill.forgottenSampled} earlier proofs forgotten (sampled)`}, ${rp.overfill.threw} other errors |`);
    if (ms) p(`| Mission state cache | ${ms.entries.toLocaleString('en-US')} | ${f(ms.totalBytesPerEntry, 0)} | ${ms.overfill.evictions ?? '?'} LRU evictions, ${ms.overfill.failed} failures, evicted Mission refetched from Status: ${ms.overfill.oldestRefetched ? 'yes' : 'no'} |`);
  }
}
p();
if (out.skipped.length > 0) {
  p('## Skipped in this run');
  p();
  for (const s of out.skipped) p(`- (${s.scenario}) ${s.name}: ${s.reason}`);
  p();
}
if (out.notes.length > 0) {
  p('## Notes');
  p();
  for (const n of out.notes) p(`- ${n}`);
  p();
}
writeFileSync(join(docs, 'benchmarks.md'), `${lines.join('\n')}\n`);
process.stdout.write(`wrote docs/benchmarks.md, docs/bench-throughput.svg, docs/bench-cpu.svg from ${relative(root, input)}\n`);
