/**
 * The demo's output: ANSI colors without a dependency, on when stdout is a terminal (or
 * FORCE_COLOR is set) and off with NO_COLOR, so piped output and tests read plain text.
 */
import type { Reply } from './agent.js';

const enabled = process.env['NO_COLOR'] === undefined && (process.env['FORCE_COLOR'] !== undefined || process.stdout.isTTY === true);
const paint = (code: string) => (s: string): string => (enabled ? `\u001b[${code}m${s}\u001b[0m` : s);

export const c = {
  bold: paint('1'),
  dim: paint('2'),
  red: paint('31'),
  green: paint('32'),
  yellow: paint('33'),
  blue: paint('34'),
  magenta: paint('35'),
  cyan: paint('36'),
};

export const out = (line = ''): void => void process.stdout.write(`${line}\n`);

let step = 0;
export function heading(title: string): void {
  step++;
  out();
  out(c.bold(c.blue(`${step}. ${title}`)));
}

export function say(text: string): void {
  out(`   ${c.dim(text)}`);
}

export function human(text: string): void {
  out(`   ${c.magenta('human')}  ${text}`);
}

/** What the gateway decided, from its answer: permit, or the denial's error and reason. */
export function decisionOf(r: Reply): { allowed: boolean; label: string; reason: string | null } {
  const j = r.json;
  if (r.status < 400) {
    const result = j?.['result'] as Record<string, unknown> | undefined;
    const sc = result?.['structuredContent'] as Record<string, unknown> | undefined;
    if (result?.['isError'] === true && typeof sc?.['denial_reason'] === 'string') {
      // An MCP tools/call denied per call: HTTP 200 with a JSON-RPC error result (SPEC section 7).
      return { allowed: false, label: `isError / ${sc['denial_reason'] as string}`, reason: '' };
    }
    return { allowed: true, label: 'permit', reason: null };
  }
  const reason = typeof j?.['denial_reason'] === 'string' ? (j['denial_reason'] as string) : null;
  const error = typeof j?.['error'] === 'string' ? (j['error'] as string) : `HTTP ${r.status}`;
  const status = typeof j?.['mission_status'] === 'string' ? ` (mission_status ${j['mission_status'] as string})` : '';
  const desc = typeof j?.['error_description'] === 'string' ? ` - ${j['error_description'] as string}` : '';
  return { allowed: false, label: `${error} / ${reason ?? 'null'}${status}`, reason: desc };
}

/** One request line: ALLOW/DENY, the request, status, decision and reason; `ok` false marks a surprise. */
export function request(method: string, what: string, r: Reply, ok: boolean, note = ''): void {
  const d = decisionOf(r);
  const verdict = d.allowed ? c.green('ALLOW') : c.red('DENY ');
  const decisionId = r.headers.get('mission-decision');
  const detail = d.allowed ? `${c.green(d.label)}${decisionId === null ? '' : c.dim(`  ${decisionId}`)}` : `${c.red(d.label)}${c.dim(d.reason ?? '')}`;
  const surprise = ok ? '' : `  ${c.bold(c.yellow('UNEXPECTED'))}`;
  out(`   ${verdict}  ${c.cyan(method.padEnd(6))} ${what.padEnd(44)} ${String(r.status).padStart(3)}  ${detail}${note === '' ? '' : `  ${c.dim(note)}`}${surprise}`);
}
