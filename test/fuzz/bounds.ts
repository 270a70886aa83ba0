/**
 * Fuzzing helpers: run a parser on one input, classify what it threw, and hold it to a time bound.
 * The bound is generous (the machine is shared); it catches a hang or a super-linear blow-up, not
 * a slow constant.
 */
import { performance } from 'node:perf_hooks';
import { isDenial } from '../../src/errors.js';

/** Per-input bound for generated inputs (at most a few KiB each). */
export const PER_INPUT_MS = 250;

export type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** Runs `fn`, returning its value or what it threw, and fails when it took longer than `maxMs`. */
export function bounded<T>(fn: () => T, maxMs = PER_INPUT_MS): Outcome<T> {
  const start = performance.now();
  let outcome: Outcome<T>;
  try {
    outcome = { ok: true, value: fn() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  const took = performance.now() - start;
  if (took > maxMs) throw new Error(`took ${took.toFixed(1)} ms (bound ${maxMs} ms)`);
  return outcome;
}

/** A description of a thrown value for assertion messages: its class, and a Denial's code. */
export function kindOf(err: unknown): string {
  if (isDenial(err)) return `Denial(${err.code})`;
  if (err instanceof Error) return err.name;
  return typeof err;
}

/** Fails unless `outcome` succeeded or threw one of the documented kinds. */
export function onlyDocumented(outcome: Outcome<unknown>, allowed: readonly string[]): void {
  if (outcome.ok) return;
  const kind = kindOf(outcome.error);
  if (!allowed.includes(kind)) {
    throw new Error(`undocumented failure ${kind}: ${outcome.error instanceof Error ? outcome.error.message : String(outcome.error)}`);
  }
}

export const RUNS = Number(process.env['FUZZ_RUNS'] ?? 600);
