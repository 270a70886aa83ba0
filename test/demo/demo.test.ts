/**
 * `npm run demo` (SPEC section 2: the demo uses the dev authority): the compiled demo runs the whole
 * story as a child process, ends by itself with exit 0, and prints every decision it promises.
 * Needs a build (`npm test` builds first).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');
const script = join(root, 'dist/demo/run.js');

function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [script], { cwd: root, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

describe('npm run demo', () => {
  it('walks the whole story and exits 0 by itself in under a minute', async () => {
    expect(existsSync(script), 'dist/demo/run.js is missing: run `npm run build` first').toBe(true);
    const r = await runDemo();
    expect(r.stderr).not.toMatch(/demo failed/);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.ms).toBeLessThan(60_000);
    const lines = r.stdout.split('\n');
    const line = (re: RegExp): string => {
      const found = lines.find((l) => re.test(l));
      expect(found, `no line matching ${re}\n${r.stdout}`).toBeDefined();
      return found!;
    };
    // Allowed calls, with the gateway's decision id.
    expect(line(/ALLOW\s+GET\s+\/public\/status\s+200/)).toContain('permit');
    expect(line(/ALLOW\s+GET\s+\/invoices\/inv_1001\s+200\s+permit/)).toContain('invoices.read');
    // SPEC section 6: the upstream gets identity headers, never the credentials.
    expect(line(/the API saw no token and no proof/)).toContain('x-mission-action: invoices.read');
    // Denials with their SPEC section 5 error / denial_reason.
    expect(line(/DENY\s+GET\s+\/invoices\/inv_1001 \(no token\)\s+401/)).toContain('unauthorized / token_missing');
    expect(line(/DENY\s+GET\s+\/admin\/users\s+403/)).toContain('forbidden / no_route');
    expect(line(/DENY\s+DELETE\s+\/invoices\/inv_1001\s+403/)).toContain('insufficient_scope / out_of_authority');
    expect(line(/DENY\s+POST\s+\/payments 12500\.00 USD\s+403/)).toContain('parameter_violation');
    // MCP: the list is filtered to the Mission, a tool outside it is denied per call.
    expect(line(/tools\/list\s+200/)).toContain('2 tools visible: get_invoice, pay_invoice');
    expect(line(/DENY\s+MCP\s+tools\/call send_email\s+200/)).toContain('isError / out_of_authority');
    // Lifecycle: suspended, resumed, revoked.
    expect(r.stdout).toMatch(/DENY\s+GET\s+\/invoices\/inv_1001\s+403\s+mission_suspended \/ mission_inactive/);
    expect(line(/ALLOW.*allowed again/)).toContain('200');
    expect(r.stdout).toMatch(/DENY\s+GET\s+\/invoices\/inv_1001\s+403\s+mission_terminated \/ mission_inactive \(mission_status revoked\)/);
    expect(line(/CUT\s+GET\s+\/invoices\/feed \(open stream\)\s+200/)).toContain('cut at revocation');
    // Evidence chains verified, signatures included.
    expect(line(/API gateway\s+intact: \d+ records, chain unbroken, \d+ signatures verified/)).toBeTruthy();
    expect(line(/MCP gateway\s+intact: \d+ records, chain unbroken, \d+ signatures verified/)).toBeTruthy();
    expect(r.stdout).toContain('every decision as expected');
    expect(r.stdout).not.toContain('UNEXPECTED');
  }, 90_000);

  it('--keep leaves the stack serving with its URLs printed, and stops it all on SIGTERM', async () => {
    const child = spawn(process.execPath, [script, '--keep'], { cwd: root, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let stdout = '';
    const gatewayUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no URLs printed:\n${stdout}`)), 60_000);
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const m = /its gateway\s+(http:\/\/127\.0\.0\.1:\d+)\s/.exec(stdout);
        if (m !== null && stdout.includes('evidence')) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    try {
      expect(stdout).toContain('--keep: everything is still running');
      const res = await fetch(`${gatewayUrl}/public/status`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'ok' });
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    // Nothing is left listening where the gateway was.
    await expect(fetch(`${gatewayUrl}/public/status`)).rejects.toThrow();
  }, 90_000);
});
