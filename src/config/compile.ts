/**
 * Compiles a validated Config into the frozen runtime plan: routes as precompiled matchers,
 * method sets, header strings. The hot path only reads this.
 */
import { compilePattern, matchPattern, type PathPattern } from '../http/path.js';
import type { ActionClass, Config, ParamSource } from './schema.js';

export interface CompiledRoute {
  readonly index: number;
  readonly methods: ReadonlySet<string> | null; // null = every method
  readonly pattern: PathPattern;
  readonly auth: 'none' | 'required';
  readonly action: string | null;
  readonly actionClass: ActionClass | null;
  readonly params: ReadonlyArray<readonly [name: string, source: ParamSource]>;
  /** True when a param is read from the body, so the body must be buffered (bounded). */
  readonly readsBody: boolean;
}

export const HIGH_CONSEQUENCE: ReadonlySet<string> = new Set(['irreversible_action', 'external_commitment', 'privileged_administration']);

export function compileRoutes(config: Config): readonly CompiledRoute[] {
  return Object.freeze(
    config.routes.map((r, index): CompiledRoute => {
      const methods = r.match.method === undefined ? null : new Set(Array.isArray(r.match.method) ? r.match.method : [r.match.method]);
      const params = Object.entries(r.params ?? {}) as [string, ParamSource][];
      return Object.freeze({
        index,
        methods,
        pattern: compilePattern(r.match.path),
        auth: r.auth,
        action: r.action ?? null,
        actionClass: r.action_class ?? null,
        params: Object.freeze(params),
        readsBody: params.some(([, s]) => 'body' in s),
      });
    }),
  );
}

/** First match wins (SPEC section 2). `segments` are the normalized path's segments. */
export function findRoute(routes: readonly CompiledRoute[], method: string, segments: readonly string[]): CompiledRoute | null {
  for (const r of routes) {
    if (r.methods !== null && !r.methods.has(method)) continue;
    if (matchPattern(r.pattern, segments)) return r;
  }
  return null;
}
