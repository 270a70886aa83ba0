/**
 * Reading an MCP Streamable HTTP POST body (JSON-RPC 2.0, one message or a batch) once, strictly,
 * and sorting its messages into what the gateway gates (`tools/call`), what it filters the answer
 * of (`tools/list`) and what passes through untouched (everything else: initialize, notifications,
 * responses to server requests, other methods).
 *
 * Fail closed where the upstream could read the bytes differently: the body is strict JSON (UTF-8,
 * no duplicate key anywhere, exact numbers), and a `tools/call` or `tools/list` without a usable
 * `id` (the gateway could not answer the call per call, nor find the list to filter) or an ambiguous
 * batch (one `id` used twice by gated messages) refuses the whole request rather than letting the
 * upstream decide what it meant.
 */
import { Denial } from '../errors.js';
import { foldName, numberSource } from '../authority/json.js';
import { parseJsonStrict } from '../authority/params.js';
import { MCP_META_KEY } from '../mission/reference.js';
import { isObject } from '../values.js';

export type JsonRpcId = string | number;

/** A `tools/call` request the gateway decides. */
export interface ToolCallMessage {
  readonly kind: 'call';
  /** Position in the batch (0 for a single message). */
  readonly index: number;
  readonly id: JsonRpcId;
  readonly name: string;
  /** `params.arguments`, or `{}` when absent (no defaults inserted). */
  readonly args: Record<string, unknown>;
  /** `params._meta["com.karlmcguinness.mission/reference"]`, undefined when absent. */
  readonly metaRef: unknown;
  /** Task-augmented (MCP 2025-11-25 `params.task`): it runs on after its answer, its result fetched later. */
  readonly task: boolean;
}

/** A `tools/call` with a usable id but params the gateway cannot read: denied per call. */
export interface InvalidCallMessage {
  readonly kind: 'invalid_call';
  readonly index: number;
  readonly id: JsonRpcId;
  readonly name: string | null;
}

/** A `tools/list` request: its response is filtered. */
export interface ToolListMessage {
  readonly kind: 'list';
  readonly index: number;
  readonly id: JsonRpcId;
  readonly metaRef: unknown;
}

export interface OtherMessage {
  readonly kind: 'other';
  readonly index: number;
}

export type McpMessage = ToolCallMessage | InvalidCallMessage | ToolListMessage | OtherMessage;

export interface McpBody {
  readonly batch: boolean;
  /** The parsed messages, in order (batch elements, or the single message). */
  readonly items: readonly unknown[];
  readonly messages: readonly McpMessage[];
  /** Counts of gated messages, so the common "nothing to gate" case is one comparison. */
  readonly calls: number;
  readonly lists: number;
}

const malformed = (description: string): Denial => new Denial('request_malformed', { description });

/**
 * Bounds on what a client chooses and the gateway writes into evidence (one record per gated
 * message, `tool` and `mcp_id` among its members): a batch of more gated requests than this, a
 * string id or a tool name longer than this, is refused whole (r18c 1-2). Tool names are 1-128
 * characters by the MCP specification's advice (2025-11-25); JSON-RPC ids are short tokens.
 */
export const MAX_GATED_PER_BATCH = 100;
export const MAX_ID_CHARS = 256;
export const MAX_TOOL_NAME_CHARS = 256;

function isId(v: unknown): v is JsonRpcId {
  return typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
}

/** A key that tells the id 1 from the id "1" (JSON-RPC compares ids by type and value). */
export function idKey(id: JsonRpcId): string {
  return typeof id === 'number' ? `n:${id}` : `s:${id}`;
}

function metaRefOf(params: unknown): unknown {
  if (!isObject(params)) return undefined;
  const meta = params['_meta'];
  if (!isObject(meta) || !Object.hasOwn(meta, MCP_META_KEY)) return undefined;
  return meta[MCP_META_KEY];
}

/** The members of a message, and of a gated request's `params`, the gateway reads. */
const MESSAGE_MEMBERS: readonly string[] = ['jsonrpc', 'id', 'method', 'params'];
const PARAMS_MEMBERS: readonly string[] = ['name', 'arguments', '_meta'];

/**
 * Refuses a member whose name folds onto one the gateway reads without being it (`Method`,
 * `paramſ`, `Arguments`): a case-insensitive upstream (Go's encoding/json: mcp-go, the go-sdk
 * before 1.3.1, CVE-2026-27896) reads it as that member, the gateway does not, so a call could
 * reach the upstream ungated. Two members folding onto each other are refused by the strict parse.
 */
function refuseCaseVariants(o: Record<string, unknown>, read: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (read.includes(k)) continue;
    const folded = foldName(k);
    if (read.includes(folded)) throw malformed(`a member named ${JSON.stringify(k)} where JSON-RPC reads "${folded}": ambiguous for case-insensitive readers`);
  }
}

function classify(item: unknown, index: number): McpMessage {
  if (!isObject(item)) return { kind: 'other', index };
  refuseCaseVariants(item, MESSAGE_MEMBERS);
  const method = item['method'];
  if (method !== 'tools/call' && method !== 'tools/list') return { kind: 'other', index };
  const id = item['id'];
  // A gated request without a usable id (absent, null, a boolean, an object) cannot be matched to
  // its answer: the gateway could not deny a call per call, nor find a tool list to filter in what
  // a lax upstream answers anyway. It must not reach the upstream.
  if (!isId(id)) throw malformed(`a ${method} request has no usable id`);
  if (typeof id === 'string' && id.length > MAX_ID_CHARS) throw malformed(`a ${method} request id is longer than ${MAX_ID_CHARS} characters`);
  // An id a double cannot hold would be answered (a denial) with another id than the client sent.
  if (typeof id === 'number' && numberSource(item, 'id') !== undefined) throw malformed(`a ${method} request id is a number a double cannot hold`);
  const params = item['params'];
  if (isObject(params)) refuseCaseVariants(params, PARAMS_MEMBERS);
  if (method === 'tools/list') return { kind: 'list', index, id, metaRef: metaRefOf(params) };
  if (!isObject(params)) return { kind: 'invalid_call', index, id, name: null };
  const name = params['name'];
  if (typeof name !== 'string' || name.length === 0) return { kind: 'invalid_call', index, id, name: null };
  if (name.length > MAX_TOOL_NAME_CHARS) throw malformed(`a tool name is longer than ${MAX_TOOL_NAME_CHARS} characters`);
  const args = params['arguments'];
  if (args !== undefined && !isObject(args)) return { kind: 'invalid_call', index, id, name };
  return { kind: 'call', index, id, name, args: args ?? {}, metaRef: metaRefOf(params), task: params['task'] !== undefined };
}

/**
 * Parses and classifies a POST body. Throws Denial('parameter_unparseable') for bytes that are not
 * strict JSON, Denial('request_malformed') for a request the gateway cannot gate unambiguously.
 */
export function parseMcpBody(body: Buffer): McpBody {
  if (body.length === 0) throw new Denial('parameter_unparseable', { description: 'the request body is empty' });
  // A number a double cannot hold is kept with its literal (authority/json.ts): `max_amount` reads
  // the decimal the client wrote, and a rebuilt batch writes it back as sent.
  const doc = parseJsonStrict(body, 'all');
  const batch = Array.isArray(doc);
  const items: readonly unknown[] = batch ? doc : [doc];
  const messages: McpMessage[] = new Array<McpMessage>(items.length);
  let calls = 0;
  let lists = 0;
  let seen: Set<string> | null = null;
  for (let i = 0; i < items.length; i++) {
    const m = classify(items[i], i);
    messages[i] = m;
    if (m.kind === 'other') continue;
    if (m.kind === 'list') lists++;
    else calls++;
    if (calls + lists > MAX_GATED_PER_BATCH) throw malformed(`a batch holds more than ${MAX_GATED_PER_BATCH} tools/call and tools/list requests`);
    if (batch) {
      seen ??= new Set();
      const k = idKey(m.id);
      if (seen.has(k)) throw malformed('a batch uses one id for two gated requests');
      seen.add(k);
    }
  }
  return { batch, items, messages, calls, lists };
}
