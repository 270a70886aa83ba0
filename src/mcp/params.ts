/**
 * The parameters a tool call's constraints read. By default they are the call's `arguments` as sent
 * (the mechanical Operation Profile: no defaults inserted). A tool whose argument names differ from
 * the constraint parameters (`send_email {to}` against `recipient_domain`, which reads `recipient`)
 * maps them with `mcp.tool_params: {<tool>: {<param>: <JSON pointer into arguments>}}`.
 *
 * A mapped parameter is only ever read through its pointer: an argument that happens to carry the
 * parameter's own name (`{"to": "x@evil.example", "recipient": "a@example.com"}`) never stands in
 * for it, since the server acts on `to`. `parameter_digest` stays over the raw `arguments`.
 */
import { numberSource, parsePointer, resolvePointer, setNumberSource } from '../authority/json.js';

export type ToolParamMap = ReadonlyMap<string, readonly (readonly [string, readonly string[]])[]>;

/** Compiles `mcp.tool_params` once (pointers parsed). */
export function compileToolParams(config: Readonly<Record<string, Readonly<Record<string, string>>>> | undefined): ToolParamMap {
  const out = new Map<string, (readonly [string, readonly string[]])[]>();
  for (const [tool, params] of Object.entries(config ?? {})) {
    out.set(
      tool,
      Object.entries(params).map(([name, pointer]) => [name, parsePointer(pointer)] as const),
    );
  }
  return out;
}

/** The constraint parameters of a call to `tool` with `args`. Returns `args` itself when unmapped. */
export function toolParams(map: ToolParamMap, tool: string, args: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  const mapping = map.get(tool);
  if (mapping === undefined) return args;
  const out: Record<string, unknown> = {};
  const mapped = new Set(mapping.map(([name]) => name));
  for (const k of Object.keys(args)) if (!mapped.has(k)) copy(out, k, args[k], numberSource(args, k));
  for (const [name, pointer] of mapping) {
    const v = resolvePointer(args, pointer);
    if (v === undefined) continue;
    // A number a double cannot hold keeps its literal, recorded under the object that holds it.
    const parent = pointer.length === 0 ? undefined : resolvePointer(args, pointer.slice(0, -1));
    copy(out, name, v, parent !== null && typeof parent === 'object' ? numberSource(parent, pointer[pointer.length - 1]!) : undefined);
  }
  return out;
}

function copy(out: Record<string, unknown>, k: string, v: unknown, source: string | undefined): void {
  Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  if (source !== undefined) setNumberSource(out, k, source);
}
