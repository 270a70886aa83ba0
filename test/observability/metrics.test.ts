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
