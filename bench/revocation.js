/**
 * Revocation latency.
 *
 * Single replica: the dev authority revokes a Mission and pushes the lifecycle SET (RFC 8935) to
 * the gateway; once the push is accepted (202), the client sends requests, one at a time with
 * fresh proofs, until one is answered 403 mission_terminated. Latency (the step 3 bar) = push
 * accepted -> that first denial; also reported from the revoke call (which adds the authority's
 * own work: signing the SET and pushing it). The Mission's state was cached (one allowed request
 * before), so the only way to learn of the revocation in time is the event; a request allowed
 * after the 202 is counted (SPEC section 3 says there must be none).
 *
 * Across replicas: two gateways share one redis-server (replay store and Mission change bus); the
 * authority pushes only to replica A, the client talks only to replica B, which has the Mission
 * cached. B can only learn of the revocation through A's publication on the bus.
 */
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { gatewayConfig, gatewayServer, has, POST_BODY, PUBLIC, startDevAuthorityIfBuilt, startRedis } from './scenarios.js';
import { clientKey, proofSigner } from './lib/dpop.js';
import { percentile } from './lib/stats.js';

const ENTRIES = [{ type: 'mission_resource_access', resource: PUBLIC, actions: ['payments.create'], constraints: { max_amount: { amount: '1000.00', currency: 'USD' }, recipient_domain: 'vendor.example', tenant: 'acme' } }];
/** Bounds the wait for one denial, so a gateway that never hears of a revocation ends the run. */
const DENIAL_DEADLINE_MS = 10_000;

/**
 * A fresh active Mission with a DPoP-bound token for `client`; `send(baseUrl)` makes one
 * POST /payments there with a fresh proof (htu is the public URL, the same on every replica).
 */
async function missionClient(dev, client, subject) {
  const m = await dev.missions.create({ subject, client_id: 'agent-bench', purpose: 'https://example.com/purposes/bench', authorization_details: ENTRIES });
  const token = await dev.issueAccessToken({ missionId: m.id, resource: PUBLIC, jkt: client.jkt, ttlSeconds: 600 });
  const next = proofSigner(client.privateJwk, { htm: 'POST', htu: `${PUBLIC}/payments`, token });
  const send = async (baseUrl) => {
    const res = await fetch(`${baseUrl}/payments`, { method: 'POST', headers: { authorization: `DPoP ${token}`, dpop: next(), 'content-type': 'application/json' }, body: POST_BODY });
    return { status: res.status, body: await res.text() };
  };
  return { id: m.id, send };
}

/** `403 error/denial_reason (mission_status x)` of a denial, and its `error` member. */
function describeDenial(r) {
  try {
    const j = JSON.parse(r.body);
    return { error: j.error, text: `${r.status} ${j.error}/${j.denial_reason}${j.mission_status ? ` (mission_status ${j.mission_status})` : ''}` };
  } catch {
    return { error: null, text: `${r.status}` };
  }
}

/** p50, p99 and max of a list of milliseconds (sorts it). */
function summary(xs) {
  xs.sort((a, b) => a - b);
  return { p50ms: percentile(xs, 50), p99ms: percentile(xs, 99), maxMs: xs.at(-1) ?? null };
}

const ms = (v) => (v === null || v === undefined ? '-' : v.toFixed(2));

export async function runRevocation({ dev, server, client, count, log }) {
  dev.addReceiver({ endpoint: `${server.url}/.well-known/ssf/push`, audience: PUBLIC });
  const latencies = [];
  const endToEnd = [];
  const pushes = [];
  let allowedAfter202 = 0;
  let reason = null;
  for (let n = 0; n < count; n++) {
    const mc = await missionClient(dev, client, `user_rev_${n}`);
    const send = () => mc.send(server.url);
    const first = await send();
    if (first.status !== 200) return { error: `skipped: the first request of a fresh Mission answered ${first.status} (${first.body.slice(0, 200)})` };
    const t0 = performance.now();
    const result = await dev.missions.revoke(mc.id);
    const t1 = performance.now();
    if (!result.deliveries.some((d) => d.ok)) return { error: 'the lifecycle SET push was not accepted by the gateway' };
    let denied = null;
    let allowed = 0;
    while (denied === null && performance.now() - t1 < DENIAL_DEADLINE_MS) {
      const r = await send();
      if (r.status === 200) {
        allowed++;
        continue;
      }
      const d = describeDenial(r);
      if (r.status !== 403 || d.error !== 'mission_terminated') return { error: `unexpected ${d.text} while waiting for the revocation` };
      denied = performance.now();
      reason = d.text;
    }
    if (denied === null) return { error: `never denied within ${DENIAL_DEADLINE_MS / 1000} s of the 202 (events not wired?)` };
    if (allowed > 0) allowedAfter202++;
    latencies.push(denied - t1);
    endToEnd.push(denied - t0);
    pushes.push(t1 - t0);
  }
  const push = summary(pushes);
  const out = {
    n: latencies.length,
    measuredFrom: 'push accepted (the 202 seen by the authority)',
    ...summary(latencies),
    endToEnd: summary(endToEnd),
    pushAcceptedP50ms: push.p50ms,
    pushAcceptedP99ms: push.p99ms,
    allowedAfter202,
    deniedReason: reason,
  };
  log(
    `revocation latency (push accepted -> first denial, n=${out.n}): p50 ${ms(out.p50ms)} ms, p99 ${ms(out.p99ms)} ms; ` +
      `from the revoke call: p50 ${ms(out.endToEnd.p50ms)} ms, p99 ${ms(out.endToEnd.p99ms)} ms (revoke call -> 202: p50 ${ms(out.pushAcceptedP50ms)} ms); ` +
      `allowed after the 202: ${allowedAfter202}/${out.n}`,
  );
  return out;
}

/**
 * Cross-replica revocation latency. Its own dev authority (so that its only push receiver is
 * replica A, and the single-replica receiver does not slow its pushes), its own redis-server, two
 * gateway processes configured alike (full enforcement, `replay_store: redis`).
 *
 * Per Mission: one allowed request at B (B caches the state), then `t0`, `revoke()` (resolves once
 * A answered 202, i.e. after A applied the change and published it on the bus), then requests at B,
 * one at a time with fresh proofs, until the first 403 mission_terminated. Reported:
 *   - latency: t0 (just before the revoke call) -> B's first denial. The bar is on this one.
 *   - after202: A's 202 -> B's first denial; `allowedAfter202` counts Missions for which B still
 *     allowed a request that started after A's 202 (SPEC section 3 says it must not).
 */
export async function runCrossReplicaRevocation({ ctx, count, log, warmup = 1 }) {
  if (!has('redis-server')) return { error: 'skipped: redis-server is not installed (apt-get install -y redis-server)' };
  const dev = await startDevAuthorityIfBuilt();
  if (dev === null) return { error: 'skipped: the dev authority is not built (npm run build)' };
  const started = [];
  try {
    const gw = clientKey();
    const gwKeyFile = join(ctx.work, 'gw-replicas.jwk');
    writeFileSync(gwKeyFile, JSON.stringify({ ...gw.privateJwk, alg: 'ES256', kid: 'gw-bench-replicas-1' }));
    dev.registerClient('gw-bench', { ...gw.publicJwk, alg: 'ES256', kid: 'gw-bench-replicas-1' });
    const redis = await startRedis(ctx);
    started.push(redis);
    const config = gatewayConfig({ ...ctx, dev, gwKeyFile }, { mission: true, params: true, redis: redis.url });
    const replicas = await Promise.allSettled([gatewayServer(ctx, config), gatewayServer(ctx, config)]);
    for (const r of replicas) if (r.status === 'fulfilled') started.push(r.value);
    const failed = replicas.find((r) => r.status === 'rejected');
    if (failed !== undefined) return { error: `skipped: a replica failed to start: ${String(failed.reason?.message).slice(0, 300)}` };
    const [a, b] = replicas.map((r) => r.value);
    const pushEndpoint = `${a.url}/.well-known/ssf/push`;
    dev.addReceiver({ endpoint: pushEndpoint, audience: PUBLIC });
    log(`cross-replica revocation: 2 gateways on redis ${redis.url}; authority pushes to A only, client asks B (${warmup} warm-up + ${count} revocations)`);

    const latencies = [];
    const after202 = [];
    const pushes = [];
    let allowedAfter202 = 0;
    let cutInFlight = 0;
    let reason = null;
    for (let n = 0; n < warmup + count; n++) {
      const mc = await missionClient(dev, ctx.client, `user_xrev_${n}`);
      const first = await mc.send(b.url);
      if (first.status !== 200) return { error: `skipped: the first request of a fresh Mission at replica B answered ${first.status} (${first.body.slice(0, 200)})` };
      const t0 = performance.now();
      const result = await dev.missions.revoke(mc.id);
      const t1 = performance.now();
      const delivery = result.deliveries.find((d) => d.endpoint === pushEndpoint);
      if (delivery?.ok !== true) return { error: `replica A did not accept the lifecycle SET (status ${delivery?.status ?? 'none'}${delivery?.err ? `, ${delivery.err}` : ''})` };
      let denied = null;
      let allowed = 0;
      while (denied === null && performance.now() - t1 < DENIAL_DEADLINE_MS) {
        let r;
        try {
          r = await mc.send(b.url);
        } catch (err) {
          // Admitted at B just before it heard of the revocation, answered just after: B cuts the
          // held response (SPEC section 3, docs/missions.md section 7), so nothing of it arrives.
          // Not allowed; the next request meets the denial.
          if (err?.cause?.code !== 'UND_ERR_SOCKET') throw err;
          cutInFlight++;
          continue;
        }
        if (r.status === 200) {
          allowed++;
          continue;
        }
        const d = describeDenial(r);
        if (r.status !== 403 || d.error !== 'mission_terminated') return { error: `replica B answered ${d.text} while waiting for the revocation, not 403 mission_terminated` };
        denied = performance.now();
        reason = d.text;
      }
      if (denied === null) return { error: `replica B never denied within ${DENIAL_DEADLINE_MS / 1000} s of A's 202 (Mission changes not shared over redis?)` };
      if (n < warmup) continue;
      latencies.push(denied - t0);
      after202.push(denied - t1);
      pushes.push(t1 - t0);
      if (allowed > 0) allowedAfter202++;
    }
    const out = {
      n: latencies.length,
      warmup,
      measuredFrom: 'just before the revoke call',
      ...summary(latencies),
      after202: summary(after202),
      pushAcceptedP50ms: summary(pushes).p50ms,
      allowedAfter202,
      cutInFlight,
      deniedReason: reason,
    };
    log(`cross-replica revocation latency (revoke call -> first denial at B, n=${out.n}): p50 ${ms(out.p50ms)} ms, p99 ${ms(out.p99ms)} ms, max ${ms(out.maxMs)} ms; from A's 202: p50 ${ms(out.after202.p50ms)} ms, p99 ${ms(out.after202.p99ms)} ms; allowed at B after A's 202: ${allowedAfter202}/${out.n}; responses cut in flight at B: ${cutInFlight}`);
    return out;
  } finally {
    // Gateways before redis: a replica whose redis went away first logs reconnect errors.
    await Promise.allSettled(started.slice(1).map((s) => s.stop()));
    await started[0]?.stop();
    await dev.close();
  }
}
