/**
 * Revocation latency: the dev authority revokes a Mission and pushes the lifecycle SET (RFC 8935)
 * to the gateway; meanwhile a client keeps sending requests. Latency = revoke call -> the first
 * request answered 403 mission_terminated. The Mission's state was cached (one allowed request
 * before), so the only way to learn of the revocation in time is the event.
 */
import { POST_BODY, PUBLIC } from './scenarios.js';
import { proofSigner } from './lib/dpop.js';
import { percentile } from './lib/stats.js';

const ENTRIES = [{ type: 'mission_resource_access', resource: PUBLIC, actions: ['payments.create'], constraints: { max_amount: { amount: '1000.00', currency: 'USD' }, recipient_domain: 'vendor.example', tenant: 'acme' } }];

export async function runRevocation({ dev, server, client, count, log }) {
  dev.addReceiver({ endpoint: `${server.url}/.well-known/ssf/push`, audience: PUBLIC });
  const latencies = [];
  const pushes = [];
  let reason = null;
  for (let n = 0; n < count; n++) {
    const m = await dev.missions.create({ subject: `user_rev_${n}`, client_id: 'agent-bench', purpose: 'https://example.com/purposes/bench', authorization_details: ENTRIES });
    const token = await dev.issueAccessToken({ missionId: m.id, resource: PUBLIC, jkt: client.jkt, ttlSeconds: 600 });
    const next = proofSigner(client.privateJwk, { htm: 'POST', htu: `${PUBLIC}/payments`, token });
    const send = async () => {
      const res = await fetch(`${server.url}/payments`, { method: 'POST', headers: { authorization: `DPoP ${token}`, dpop: next(), 'content-type': 'application/json' }, body: POST_BODY });
      const text = await res.text();
      return { status: res.status, body: text };
    };
    const first = await send();
    if (first.status !== 200) return { error: `skipped: the first request of a fresh Mission answered ${first.status} (${first.body.slice(0, 200)})` };
    const t0 = performance.now();
    let pushedAt = null;
    const revoking = dev.missions.revoke(m.id).then((r) => {
      pushedAt = performance.now();
      return r;
    });
    let denied = null;
    for (let tries = 0; tries < 5000 && denied === null; tries++) {
      const r = await send();
      if (r.status === 403) {
        denied = performance.now();
        try {
          const j = JSON.parse(r.body);
          reason = `${r.status} ${j.error}/${j.denial_reason}${j.mission_status ? ` (mission_status ${j.mission_status})` : ''}`;
        } catch {
          reason = `${r.status}`;
        }
      } else if (r.status !== 200) {
        return { error: `skipped: unexpected ${r.status} while waiting for the revocation (${r.body.slice(0, 200)})` };
      }
    }
    const result = await revoking;
    if (denied === null) return { error: 'never denied after revocation (events not wired?)' };
    if (!result.deliveries.some((d) => d.ok)) return { error: 'the lifecycle SET push was not accepted by the gateway' };
    latencies.push(denied - t0);
    pushes.push(pushedAt - t0);
  }
  latencies.sort((a, b) => a - b);
  pushes.sort((a, b) => a - b);
  const out = {
    n: latencies.length,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
    maxMs: latencies.at(-1),
    pushAcceptedP50ms: percentile(pushes, 50),
    pushAcceptedP99ms: percentile(pushes, 99),
    deniedReason: reason,
  };
  log(`revocation latency (n=${out.n}): p50 ${out.p50ms.toFixed(2)} ms, p99 ${out.p99ms.toFixed(2)} ms (push answered 202: p50 ${out.pushAcceptedP50ms.toFixed(2)} ms)`);
  return out;
}
