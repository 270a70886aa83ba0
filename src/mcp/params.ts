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
import { parsePointer, resolvePointer } from '../authority/json.js';

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
  for (const k of Object.keys(args)) Object.defineProperty(out, k, { value: args[k], enumerable: true, writable: true, configurable: true });
  for (const [name] of mapping) delete out[name];
  for (const [name, pointer] of mapping) {
    const v = resolvePointer(args, pointer);
    if (v !== undefined) Object.defineProperty(out, name, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
