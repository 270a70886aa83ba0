/**
 * Tools: which the Mission lets a client see (`tools/list` filtering, exposure control only: every
 * call is still decided on its own) and tool binding (mission-capability-binding): a tool whose
 * definition digest is pinned must be listed with exactly that definition, else it is removed from
 * the list and calls to it are denied `capability_drift`.
 *
 * `source_digest = "sha-256:" + base64url(SHA-256(JCS(tool definition)))`, the single definition
 * object as the server lists it (vector `source_digest-write_document` in reference/vectors.json).
 *
 * Pins come from the config (`mcp.tool_digests`) and from the Mission: an authority entry that
 * applies to the MCP resource may carry `tool_digests: {"<tool name>": "sha-256:…"}` beside its
 * `actions` (a member of the entry, not a constraint, so a gateway that does not bind tools still
 * reads the entry's constraints unchanged). Pins only narrow: every pin naming a tool must match.
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { jcs } from '../authority/json.js';
import { idKey } from './jsonrpc.js';

export function sourceDigest(tool: unknown): string {
  return 'sha-256:' + createHash('sha256').update(jcs(tool), 'utf8').digest('base64url');
}

/** How many tool names' last-seen digests are remembered. */
export const OBSERVED_MAX = 4096;

const DIGEST = /^sha-256:[A-Za-z0-9_-]{43}$/;

export type Pins = (name: string) => readonly string[];

const NO_PINS: readonly string[] = Object.freeze([]);

/**
 * Pins from authority entries that apply to `audience` (exact `resource`, or a prefix resource the
 * MCP URL starts with). Memoized per entries array (token claims and Mission views are never mutated).
 */
export class MissionPins {
  private readonly memo = new WeakMap<readonly unknown[], ReadonlyMap<string, readonly string[]>>();

  constructor(
    private readonly audience: string,
    private readonly url: string,
  ) {}

  of(entries: readonly unknown[] | null): ReadonlyMap<string, readonly string[]> | null {
    if (entries === null) return null;
    let m = this.memo.get(entries);
    if (m === undefined) {
      m = this.collect(entries);
      this.memo.set(entries, m);
    }
    return m.size === 0 ? null : m;
  }

  private collect(entries: readonly unknown[]): ReadonlyMap<string, readonly string[]> {
    const out = new Map<string, string[]>();
    for (const e of entries) {
      if (e === null || typeof e !== 'object' || Array.isArray(e)) continue;
      const entry = e as Record<string, unknown>;
      if (entry['type'] !== 'mission_resource_access' || typeof entry['resource'] !== 'string') continue;
      const r = entry['resource'];
      const applies = entry['resource_match'] === 'prefix' ? prefixOf(r, this.url) : r === this.audience;
      const pins = entry['tool_digests'];
      if (!applies || pins === null || typeof pins !== 'object' || Array.isArray(pins)) continue;
      for (const [name, digest] of Object.entries(pins as Record<string, unknown>)) {
        // A pin that is not a digest can never match: the tool is then always treated as drifted.
        const d = typeof digest === 'string' && DIGEST.test(digest) ? digest : 'invalid';
        const list = out.get(name);
        if (list === undefined) out.set(name, [d]);
        else list.push(d);
      }
    }
    return out;
  }
}

/** `prefix` is a prefix of `url` ending on a path-segment boundary. */
function prefixOf(prefix: string, url: string): boolean {
  if (!url.startsWith(prefix)) return false;
  return url.length === prefix.length || prefix.endsWith('/') || url.charCodeAt(prefix.length) === 0x2f;
}

/** The pins in force for one request: config pins plus those of the token and the Mission. */
export function combinePins(config: ReadonlyMap<string, string>, ...mission: (ReadonlyMap<string, readonly string[]> | null)[]): Pins {
  const sources = mission.filter((m): m is ReadonlyMap<string, readonly string[]> => m !== null);
  if (sources.length === 0) {
    if (config.size === 0) return () => NO_PINS;
    return (name) => {
      const d = config.get(name);
      return d === undefined ? NO_PINS : [d];
    };
  }
  return (name) => {
    const out: string[] = [];
    const d = config.get(name);
    if (d !== undefined) out.push(d);
    for (const s of sources) {
      const l = s.get(name);
      if (l !== undefined) out.push(...l);
    }
    return out;
  };
}

/**
 * Digests of pinned tools as last listed by the upstream (bounded LRU). A call to a pinned tool
 * whose last-seen definition does not match its pins is `capability_drift`; a later listing with
 * the pinned definition clears it.
 */
export class ObservedTools {
  private readonly seen: LRUCache<string, string>;

  constructor(max = OBSERVED_MAX) {
    this.seen = new LRUCache<string, string>({ max });
  }

  observe(name: string, digest: string): void {
    this.seen.set(name, digest);
  }

  /** True when the tool was seen with a definition that does not match every pin. */
  drifted(name: string, pins: readonly string[]): boolean {
    if (pins.length === 0) return false;
    const d = this.seen.get(name);
    if (d === undefined) return false;
    for (const p of pins) if (p !== d) return true;
    return false;
  }

  get size(): number {
    return this.seen.size;
  }
}

/** Whether a tool may be listed for the request's Mission. */
export type Visible = (name: string) => boolean;

/**
 * Filters a `tools/list` result's `tools` array: a tool stays when it is well formed, visible, and
 * (when pinned) its definition matches its pins. Returns the same array when nothing is removed, so
 * callers can forward the original bytes.
 */
export function filterTools(tools: readonly unknown[], visible: Visible, pins: Pins, observed: ObservedTools): readonly unknown[] {
  let kept: unknown[] | null = null;
  for (let i = 0; i < tools.length; i++) {
    const t = tools[i];
    let keep = false;
    if (t !== null && typeof t === 'object' && !Array.isArray(t)) {
      const name = (t as Record<string, unknown>)['name'];
      if (typeof name === 'string' && visible(name)) {
        const p = pins(name);
        if (p.length === 0) {
          keep = true;
        } else {
          let d: string | null;
          try {
            d = sourceDigest(t);
          } catch {
            d = null;
          }
          if (d !== null) {
            observed.observe(name, d);
            keep = !observed.drifted(name, p);
          }
        }
      }
    }
    if (keep) {
      kept?.push(t);
    } else if (kept === null) {
      kept = tools.slice(0, i);
    }
  }
  return kept ?? tools;
}

/**
 * Filters a JSON-RPC response if it is a tools/list answer: returns the replacement message, or
 * undefined when it is not one or nothing was removed.
 */
export function filterListResponse(message: unknown, visible: Visible, pins: Pins, observed: ObservedTools): unknown {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return undefined;
  const result = (message as Record<string, unknown>)['result'];
  if (result === null || typeof result !== 'object' || Array.isArray(result)) return undefined;
  const tools = (result as Record<string, unknown>)['tools'];
  if (!Array.isArray(tools)) return undefined;
  const kept = filterTools(tools, visible, pins, observed);
  if (kept === tools) return undefined;
  return { ...(message as Record<string, unknown>), result: { ...(result as Record<string, unknown>), tools: kept } };
}

/** What one tools/list answer may show. */
export interface ListFilter {
  readonly visible: Visible;
  readonly pins: Pins;
}

function isResponse(m: unknown): m is Record<string, unknown> {
  return m !== null && typeof m === 'object' && !Array.isArray(m) && ('result' in m || 'error' in m);
}

/**
 * Filters the tools/list answers of one upstream reply: by request id (the lists of a POST), or by
 * shape (any `result.tools`, for a resumed GET stream whose requests the gateway did not see).
 * Every message of the whole reply is looked at, however many answers went by already. A POST's
 * answer whose id matches no list request (an id of another type, a duplicate, an extra answer)
 * is still a tool list a client may take: it is filtered by what every list request of the POST may
 * see (fail closed).
 */
export class ListAnswers {
  private readonly byShape: ListFilter;

  constructor(
    private readonly byId: ReadonlyMap<string, ListFilter> | null,
    byShape: ListFilter | null,
    private readonly observed: ObservedTools,
  ) {
    if (byShape !== null) this.byShape = byShape;
    else if (byId !== null && byId.size > 0) this.byShape = strictest([...byId.values()]);
    else throw new TypeError('ListAnswers needs list requests or a filter by shape');
  }

  /** A replacement for a message (or a batch of them), or undefined to keep it as it is. */
  rewrite(message: unknown): unknown {
    if (!Array.isArray(message)) return this.one(message);
    let changed = false;
    const next = message.map((m) => {
      const r = this.one(m);
      if (r === undefined) return m;
      changed = true;
      return r;
    });
    return changed ? next : undefined;
  }

  private one(message: unknown): unknown {
    if (!isResponse(message)) return undefined;
    let f: ListFilter | undefined;
    if (this.byId !== null) {
      const id = message['id'];
      if (typeof id === 'string' || typeof id === 'number') f = this.byId.get(idKey(id));
    }
    f ??= this.byShape;
    return filterListResponse(message, f.visible, f.pins, this.observed);
  }
}

/** What every one of `filters` may see: a tool visible to all, checked against all their pins. */
function strictest(filters: readonly ListFilter[]): ListFilter {
  if (filters.length === 1) return filters[0]!;
  return {
    visible: (name) => filters.every((f) => f.visible(name)),
    pins: (name) => filters.flatMap((f) => f.pins(name)),
  };
}
