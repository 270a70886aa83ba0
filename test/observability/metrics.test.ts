import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';

async function series(m: Metrics, name: string): Promise<Map<string, number>> {
  const text = await m.registry.metrics();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) if (line.startsWith(name)) out.set(line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1)));
  return out;
}

describe('SPEC section 9 metrics: buffered histogram observations', () => {
  it('decision and upstream observations are all in the scrape, in the right buckets', async () => {
    const m = new Metrics({ defaultMetrics: false });
    for (let i = 0; i < 10_000; i++) m.observeDecision('route', 0.00004); // more than one buffer's worth
    m.observeDecision('mcp', 0.003);
    m.observeUpstream(0.002);
    const d = await series(m, 'mission_gateway_decision_seconds');
    expect(d.get('mission_gateway_decision_seconds_count{kind="route"}')).toBe(10_000);
    expect(d.get('mission_gateway_decision_seconds_bucket{le="0.00005",kind="route"}')).toBe(10_000);
    expect(d.get('mission_gateway_decision_seconds_count{kind="mcp"}')).toBe(1);
    expect(d.get('mission_gateway_decision_seconds_bucket{le="0.0025",kind="mcp"}')).toBe(0);
    expect(d.get('mission_gateway_decision_seconds_bucket{le="0.005",kind="mcp"}')).toBe(1);
    const u = await series(m, 'mission_gateway_upstream_seconds');
    expect(u.get('mission_gateway_upstream_seconds_count')).toBe(1);
    expect(u.get('mission_gateway_upstream_seconds_bucket{le="0.001"}')).toBe(0);
    expect(u.get('mission_gateway_upstream_seconds_bucket{le="0.0025"}')).toBe(1);
    // A second scrape does not count them again.
    expect((await series(m, 'mission_gateway_decision_seconds')).get('mission_gateway_decision_seconds_count{kind="route"}')).toBe(10_000);
  });

  it('a non-finite value is refused, as prom-client refuses it', () => {
    const m = new Metrics({ defaultMetrics: false });
    expect(() => m.observeDecision('route', Number.NaN)).toThrow(TypeError);
  });
});

describe('histogram tallies: the exposition prom-client would give for the same observations', () => {
  it('bucket counts, sum and count equal a plain prom-client Histogram fed the same values (values past the last bound included)', async () => {
    const client = (await import('prom-client')).default;
    const m = new Metrics({ defaultMetrics: false });
    const reference = new client.Histogram({
      name: 'reference_seconds',
      help: 'x',
      labelNames: ['kind'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5],
      registers: [],
    });
    let seed = 7;
    const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4; // 0..4 s, some past 2.5
    for (let i = 0; i < 5000; i++) {
      const v = next() ** 6 / 1000; // mostly tiny, a few large
      m.observeDecision(i % 3 === 0 ? 'mcp' : 'route', v);
      reference.observe({ kind: i % 3 === 0 ? 'mcp' : 'route' }, v);
    }
    const ours = (await m.decisionSeconds.get()).values;
    const theirs = (await reference.get()).values;
    const key = (v: { metricName?: string; labels: object }) => `${v.metricName?.replace('reference_seconds', 'x').replace('mission_gateway_decision_seconds', 'x')} ${JSON.stringify(v.labels)}`;
    const a = new Map(ours.map((v) => [key(v), v.value]));
    const b = new Map(theirs.map((v) => [key(v), v.value]));
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    for (const [k, v] of b) expect(a.get(k), k).toBeCloseTo(v, 9);
    // Folded once: a second collection adds nothing.
    const again = new Map((await m.decisionSeconds.get()).values.map((v) => [key(v), v.value]));
    expect(again).toEqual(a);
  });
});
