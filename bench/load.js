/**
 * The load generator, in its own process (pinned to its own core by the runner). Receives one job
 * over IPC, runs autocannon, and reports req/s and latency percentiles measured with microsecond
 * resolution (autocannon's own histogram rounds to whole milliseconds).
 *
 * With `dpop`, every request carries its own pre-generated proof (distinct jti); should the pool
 * run out, further proofs are signed on the fly and counted.
 */
import { createHistogram, performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { proofSigner } from './lib/dpop.js';

function run(opts) {
  return new Promise((resolve, reject) => {
    const inst = autocannon(opts, (err, result) => (err ? reject(err) : resolve({ inst, result })));
    opts.onInstance?.(inst);
  });
}

process.once('message', async (job) => {
  try {
    const headers = { ...job.headers };
    if (job.body !== undefined) headers['content-type'] = 'application/json';
    let setupRequest;
    let extra = 0;
    if (job.dpop !== undefined) {
      const next = proofSigner(job.dpop.privateJwk, { htm: job.method, htu: job.dpop.htu, token: job.dpop.token });
      const pool = new Array(job.dpop.count);
      for (let i = 0; i < pool.length; i++) pool[i] = next();
      let i = 0;
      setupRequest = (req) => {
        let proof;
        if (i < pool.length) proof = pool[i++];
        else {
          proof = next();
          extra++;
        }
        req.headers = { ...req.headers, dpop: proof };
        return req;
      };
    }
    const base = {
      url: job.url,
      connections: job.connections,
      pipelining: 1,
      requests: [{ method: job.method, path: job.path, headers, ...(job.body === undefined ? {} : { body: job.body }), ...(setupRequest === undefined ? {} : { setupRequest }) }],
    };
    // Warm-up and measurement are one autocannon run on the same connections: the measured window
    // opens when the runner has taken its snapshots (server CPU, metrics) after the warm-up, and
    // closes when the run ends. Two runs would close the warm-up's 50 connections and open 50 new
    // ones right at the start of the measurement; the teardown deoptimizes hot code in every Node
    // server (stream and event-emitter paths see new object shapes: `--trace-deopt` shows "wrong
    // map" bailouts in emit, emitCloseNT, Readable.read), and the window would time its recovery.
    const hist = createHistogram({ lowest: 1, highest: 60_000_000, figures: 3 });
    let measuring = false;
    // Counted in the measured window only (autocannon's own totals include the warm-up).
    let counted = 0;
    let ok = 0;
    const done = run({
      ...base,
      duration: job.warmupS + job.durationS,
      onInstance: (inst) =>
        inst.on('response', (_client, status, _bytes, ms) => {
          if (!measuring) return;
          counted++;
          if (status >= 200 && status < 300) {
            ok++;
            hist.record(Math.max(1, Math.round(ms * 1000)));
          }
        }),
    });
    await new Promise((resolve) => setTimeout(resolve, job.warmupS * 1000));
    // The runner snapshots server CPU and metrics between warm-up and measurement.
    await new Promise((resolve) => {
      process.once('message', resolve);
      process.send({ type: 'warm' });
    });
    measuring = true;
    const windowStart = performance.now();
    const { result } = await done;
    const windowS = (performance.now() - windowStart) / 1000;
    process.send({
      type: 'result',
      rps: windowS > 0 ? counted / windowS : 0,
      total: counted,
      ok,
      non2xx: counted - ok,
      errors: result.errors,
      timeouts: result.timeouts,
      durationS: windowS,
      p50ms: hist.count > 0 ? hist.percentile(50) / 1000 : null,
      p99ms: hist.count > 0 ? hist.percentile(99) / 1000 : null,
      statusCodes: result.statusCodeStats,
      proofsSignedDuringRun: extra,
    });
  } catch (err) {
    process.stderr.write(`load generator failed: ${err?.stack ?? err}\n`);
    process.exit(1);
  }
  process.disconnect();
});
// Ask for the job only now that the listener exists (a message sent earlier could be lost).
process.send({ type: 'hello' });
