/**
 * Scale: memory per entry of the DPoP replay store (1 million jti) and of the Mission state cache
 * (100 000 Missions), and what happens when each is full (the replay store refuses new claims, never
 * forgetting a live one; the Mission cache evicts, never failing). Runs in its own
 * process with --expose-gc so that heap deltas belong to the structure being measured.
 *
 * The Mission cache is filled through the real MissionStates.lookup() path; only its Status client
 * is replaced by an in-process answerer (a signed round trip per Mission would make 100 000
 * Missions take minutes), so the stored entries are exactly what a verified Status answer leaves.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');

function mem() {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  // `external` already includes `arrayBuffers` (typed arrays such as the replay table).
  return { heap: m.heapUsed, external: m.external, rss: m.rss };
}

const perEntry = (before, after, n) => ({
  heapBytesPerEntry: (after.heap - before.heap) / n,
  externalBytesPerEntry: (after.external - before.external) / n,
  totalBytesPerEntry: (after.heap + after.external - before.heap - before.external) / n,
  rssMiBDelta: (after.rss - before.rss) / 1048576,
});

async function replay(items, result) {
  const file = join(root, 'dist/auth/replay.js');
  if (!existsSync(file)) {
    items.push({ text: 'replay store: dist/auth/replay.js missing (npm run build): skipped' });
    return;
  }
  const { MemoryReplayStore } = await import(file);
  const N = 1_000_000;
  let evictions = 0;
  const metrics = { cacheEvictions: { labels: () => ({ inc: () => void evictions++ }) } };
  const before = mem();
  const store = new MemoryReplayStore({ maxEntries: N, metrics });
  const t0 = performance.now();
  let firstUse = 0;
  for (let i = 0; i < N; i++) if (store.claim(`jkt-${i % 1000}\njti-${i}`, 60)) firstUse++;
  const fillMs = performance.now() - t0;
  const after = mem();
  const r = perEntry(before, after, N);
  // Full: another 50% distinct jti. A claim that finds no free slot is refused (fail closed: no
  // unexpired entry is forgotten), and every earlier proof is still detected as a replay.
  const extra = N / 2;
  let accepted = 0;
  let refusedFull = 0;
  let threw = 0;
  for (let i = N; i < N + extra; i++) {
    try {
      if (store.claim(`jkt-${i % 1000}\njti-${i}`, 60)) accepted++;
    } catch (err) {
      if (err?.name === 'StoreFullError') refusedFull++;
      else threw++;
    }
  }
  let forgotten = 0;
  for (let i = 0; i < N; i += 97) {
    try {
      if (store.claim(`jkt-${i % 1000}\njti-${i}`, 60)) forgotten++;
    } catch {
      // refused as full: not forgotten either
    }
  }
  result.replay = {
    entries: N,
    firstUse,
    tableBytes: store.bytes,
    tableBytesPerEntry: store.bytes / N,
    ...r,
    claimsPerSecond: Math.round(N / (fillMs / 1000)),
    overfill: { claims: extra, accepted, refusedFull, threw, counted: evictions, forgottenSampled: forgotten },
  };
  items.push({
    text: `replay store (MemoryReplayStore, 1,000,000 jti): ${(r.totalBytesPerEntry).toFixed(1)} B/entry measured (table ${(store.bytes / N).toFixed(1)} B/entry), ${Math.round(N / (fillMs / 1000)).toLocaleString('en-US')} claims/s`,
  });
  items.push({
    text: `replay store full (+${extra.toLocaleString('en-US')} distinct jti): ${accepted.toLocaleString('en-US')} accepted in free slots, ${refusedFull.toLocaleString('en-US')} refused as full (counted: ${evictions.toLocaleString('en-US')}), ${threw} other errors, earlier proofs forgotten: ${forgotten} of ${Math.ceil(N / 97).toLocaleString('en-US')} sampled`,
  });
}

async function missions(items, result) {
  const need = ['dist/mission/state.js', 'dist/config/load.js', 'dist/observability/metrics.js', 'dist/observability/logger.js'];
  if (!need.every((f) => existsSync(join(root, f)))) {
    items.push({ text: 'Mission state cache: dist/mission/state.js missing (npm run build): skipped' });
    return;
  }
  const { MissionStates } = await import(join(root, 'dist/mission/state.js'));
  const { parseConfigText } = await import(join(root, 'dist/config/load.js'));
  const { Metrics } = await import(join(root, 'dist/observability/metrics.js'));
  const { createLogger } = await import(join(root, 'dist/observability/logger.js'));
  const N = quick ? 100_000 : 100_000;
  const issuer = 'https://as.bench.example';
  const resource = 'https://api.bench.example';
  const config = parseConfigText(
    JSON.stringify({
      public_base_url: resource,
      resource,
      upstream: { url: 'http://127.0.0.1:9' },
      issuers: [{ issuer }],
      routes: [{ match: { path: '/x' }, action: 'x.read' }],
      mission: { cache_max_entries: N, max_stale_s: 3600 },
    }),
    root,
  );
  const metrics = new Metrics({ defaultMetrics: false });
  const keys = { resolve: () => Promise.reject(new Error('unused')), metadata: () => Promise.reject(new Error('unused')), ready: () => true };
  const bus = { publish: async () => {}, subscribe: () => {}, close: async () => {} };
  const states = new MissionStates({ config, keys, metrics, logger: createLogger('silent'), bus });
  const now = Math.floor(Date.now() / 1000);
  let queries = 0;
  // Each answer is a new object graph, as a parsed Status JWT would be.
  states.status = {
    query: async (ref) => {
      queries++;
      return {
        state: 'active',
        version: 1,
        id: ref.id,
        issuer: ref.issuer,
        authorityHash: `sha-256:${ref.id.padEnd(43, 'A').slice(0, 43)}`,
        authority: [
          { type: 'mission_resource_access', resource, actions: ['invoices.read'] },
          { type: 'mission_resource_access', resource, actions: ['payments.create'], constraints: { max_amount: { amount: '500.00', currency: 'USD' } } },
        ],
        expiresAt: now + 86_400,
        suspendUntil: null,
        subject: `user_${ref.id}`,
        clientId: 'agent-1',
        freshUntil: now + 3600,
        maxStaleSeconds: null,
      };
    },
  };
  const ref = (i) => ({ form: 'claim', issuer, id: `msn_${i.toString(36).padStart(10, '0')}`, s256: null, authorityHash: null });
  const before = mem();
  for (let i = 0; i < N; i++) await states.lookup(ref(i), resource);
  const after = mem();
  const r = perEntry(before, after, N);
  // Every one of them is now a synchronous hit.
  let hits = 0;
  for (let i = 500; i < N; i += 1000) if (!(states.lookup(ref(i), resource) instanceof Promise)) hits++;
  // Full: 50% more Missions; the least recently used are evicted and counted, nothing fails.
  const extra = N / 2;
  let failed = 0;
  for (let i = N; i < N + extra; i++) {
    try {
      await states.lookup(ref(i), resource);
    } catch {
      failed++;
    }
  }
  const evictions = (await metrics.registry.getSingleMetric('mission_gateway_cache_evictions_total')?.get())?.values.find((v) => v.labels.cache === 'mission')?.value ?? null;
  const newestHit = !(states.lookup(ref(N + extra - 1), resource) instanceof Promise);
  // ref(1) was never touched after it was cached: the least recently used, so evicted first.
  const oldestRefetched = states.lookup(ref(1), resource) instanceof Promise;
  result.missions = { entries: N, ...r, syncHitsSampled: hits, overfill: { missions: extra, failed, evictions, newestHit, oldestRefetched, statusQueries: queries } };
  items.push({ text: `Mission state cache (100,000 Missions, 2 authority entries each): ${r.totalBytesPerEntry.toFixed(0)} B/entry measured (heap ${r.heapBytesPerEntry.toFixed(0)} B)` });
  items.push({
    text: `Mission cache full (+${extra.toLocaleString('en-US')} Missions): ${failed} failures, ${evictions === null ? '?' : evictions.toLocaleString('en-US')} LRU evictions counted, newest served from cache: ${newestHit ? 'yes' : 'no'}, evicted one refetched from Status: ${oldestRefetched ? 'yes' : 'no'}`,
  });
}

async function main() {
  const items = [];
  const result = { items };
  try {
    await replay(items, result);
  } catch (err) {
    items.push({ text: `replay store: failed: ${String(err.message).slice(0, 300)}` });
  }
  try {
    await missions(items, result);
  } catch (err) {
    items.push({ text: `Mission state cache: failed: ${String(err.message).slice(0, 300)}` });
  }
  process.send({ type: 'scale', result });
  process.disconnect();
}

main();
