/**
 * One benchmark at a time on this machine: two runs at once would measure each other. The lock is a
 * file in the temp folder holding the owner's pid; a lock whose process is gone is taken over.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const FILE = join(tmpdir(), 'mission-gateway-bench.lock');

function holder() {
  try {
    const pid = Number(readFileSync(FILE, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return null;
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

/** Waits (up to `maxWaitMs`) until no other benchmark runs, then holds the lock until release(). */
export async function acquireBenchLock(log, maxWaitMs = 20 * 60_000) {
  const until = Date.now() + maxWaitMs;
  let told = false;
  for (;;) {
    try {
      writeFileSync(FILE, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      const pid = holder();
      if (pid === null) {
        rmSync(FILE, { force: true });
        continue;
      }
      if (Date.now() > until) throw new Error(`another benchmark (pid ${pid}) is still running`);
      if (!told) log(`another benchmark is running (pid ${pid}); waiting for it to finish so the two do not measure each other...`);
      told = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  const release = () => {
    if (holder() === process.pid) rmSync(FILE, { force: true });
  };
  process.once('exit', release);
  return release;
}
