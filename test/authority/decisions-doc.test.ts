/**
 * The denial catalogue (src/errors.ts) against docs/decisions.md: every code is documented, and
 * every example response there has the catalogue's status, `error` and `denial_reason`.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DENIALS, type DenialCode } from '../../src/errors.js';

const doc = readFileSync(new URL('../../docs/decisions.md', import.meta.url), 'utf8');

/** Sections `### \`code\`…` with their http examples (status + JSON body). */
function examples(): Map<string, { status: number; body: Record<string, unknown> }[]> {
  const out = new Map<string, { status: number; body: Record<string, unknown> }[]>();
  const sections = doc.split(/^### /m).slice(1);
  for (const s of sections) {
    const codes = [...s.split('\n')[0]!.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!);
    const blocks = [...s.matchAll(/```http\n([\s\S]*?)```/g)].map((m) => m[1]!);
    const ex = blocks.map((b) => ({
      status: Number(/^HTTP\/1\.1 (\d{3})/.exec(b)![1]),
      body: JSON.parse(b.trim().split('\n').at(-1)!) as Record<string, unknown>,
    }));
    for (const c of codes) out.set(c, [...(out.get(c) ?? []), ...ex]);
  }
  return out;
}

describe('docs/decisions.md documents every denial of SPEC §5 (src/errors.ts)', () => {
  const ex = examples();
  for (const [code, spec] of Object.entries(DENIALS) as [DenialCode, (typeof DENIALS)[DenialCode]][]) {
    it(`${code}: ${spec.status} ${spec.error} ${String(spec.reason)}`, () => {
      const list = ex.get(code);
      expect(list, `no section for ${code}`).toBeDefined();
      const match = list!.filter((e) => e.body['error'] === spec.error);
      expect(match.length, `no example with error ${spec.error}`).toBeGreaterThan(0);
      for (const e of match) {
        expect(e.status).toBe(spec.status);
        expect(e.body['denial_reason']).toBe(spec.reason);
        expect(Object.keys(e.body).slice(0, 4)).toEqual(['error', 'error_description', 'denial_reason', 'decision_id']);
      }
    });
  }
});
