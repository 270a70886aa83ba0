/**
 * The bench's PASS/FAIL bars (bench/table.js) are computed from a results object: these pin how
 * the (c) bar reads a run with several rounds.
 */
import { describe, expect, it } from 'vitest';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface Bar {
  id: string;
  measured: string | null;
  pass: boolean | null;
}
interface Row {
  id: string;
  non2xx: number;
}
const tableUrl = pathToFileURL(fileURLToPath(new URL('../../bench/table.js', import.meta.url))).href;
const { bars, rows } = (await import(tableUrl)) as { bars: (out: unknown) => Bar[]; rows: (out: unknown) => Row[] };

/** One aggregated result as bench/run.js writes it. */
function result(scenario: string, workload: string, rps: number, p99ms: number, ratios: Record<string, number> = {}, non2xx = 0) {
  return { scenario, workload, rps, p99ms, ratios, requests: 1000, ok: 1000 - non2xx, non2xx, rounds: 3 };
}

function run(cRatio: number, cRps: number) {
  const results = ['GET-50', 'POST-50'].flatMap((w) => [result('b', w, 10_000, 5, { b: 1 }), result('c', w, cRps, 5.5, { b: cRatio })]);
  return { results, scenarios: [{ id: 'b', name: 'baseline' }, { id: 'c', name: 'gateway' }] };
}

describe('bench bars', () => {
  it('(c) throughput is the median of per-round ratios, as every other ratio', () => {
    // Medians across rounds would read 8,000 / 10,000 = 0.80; the rounds paired with their
    // baseline read 0.90 (the median the run recorded).
    const b = bars(run(0.9, 8_000));
    const get = b.find((x) => x.id === 'c-throughput-GET-50')!;
    expect(get.measured).toBe('0.90x');
    expect(get.pass).toBe(true);
  });

  it('(c) throughput below 0.85 of the baseline fails', () => {
    const b = bars(run(0.84, 9_500));
    expect(b.find((x) => x.id === 'c-throughput-POST-50')!.pass).toBe(false);
  });

  it('(c) p99 is held to the baseline p99 + 1 ms', () => {
    const out = run(0.9, 9_000);
    expect(bars(out).find((x) => x.id === 'c-p99-GET-50')!.measured).toBe('+0.50 ms');
    (out.results[1] as { p99ms: number }).p99ms = 6.2;
    expect(bars(out).find((x) => x.id === 'c-p99-GET-50')!.pass).toBe(false);
  });

  it('(c) p99 is paired by round like the ratios when rounds were recorded', () => {
    const out = run(0.9, 9_000);
    const round = (r: number, p99ms: number) => ({ round: r, rps: 1, p50ms: 1, p99ms });
    // Round 1 was slow for both (p99 20 / 21 ms): the medians across rounds (6 vs 5) would read +1.0 ms,
    // each round against its own baseline reads +0.5, +0.5, +1.0: the median is +0.5.
    Object.assign(out.results[0]!, { perRound: [round(0, 5), round(1, 20), round(2, 4)] });
    Object.assign(out.results[1]!, { p99ms: 6, perRound: [round(0, 5.5), round(1, 21), round(2, 4.5)] });
    expect(bars(out).find((x) => x.id === 'c-p99-GET-50')!.measured).toBe('+0.50 ms');
  });

  it('the table shows the measured window non-2xx count', () => {
    const out = run(0.9, 9_000);
    out.results[1] = result('c', 'GET-50', 9_000, 5.5, { b: 0.9 }, 7);
    expect(rows(out).find((r) => r.id === 'c' && r.non2xx !== 0)?.non2xx).toBe(7);
  });
});
