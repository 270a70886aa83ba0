/**
 * How the event stream answering `tools/call` requests ends when its Mission cuts it (holds.ts):
 * one event per call the upstream has not answered yet, the tool error a call denied before it ran
 * gets (SPEC section 7), saying why it stopped. A stock client's `callTool` then returns at once,
 * rather than at its own timeout (r21c).
 *
 * It watches the answer as it is relayed: where its events end (EventBoundary), and which calls
 * the upstream has answered (a JSON-RPC response with that id: r22a 1, a call answered must not get
 * a second answer saying it did not run). It says nothing (the connection is cut) in the middle of
 * an event, when every call is answered, or once an event too large to watch has passed.
 */
import { EventBoundary } from '../http/event-boundary.js';
import type { LastWords } from '../http/forward.js';
import type { CutWhy } from '../mission/holds.js';
import { cutDenial, denialResult } from './denial.js';
import { idKey, type JsonRpcId } from './jsonrpc.js';
import { messageEvent, parseEvent, SseSplitter } from './sse.js';

/** Past this many bytes in one event the answer is no longer watched (its copy is not held). */
const MAX_WATCHED_EVENT_BYTES = 1024 * 1024;

export class CallLastWords implements LastWords {
  private readonly boundary = new EventBoundary();
  private readonly splitter = new SseSplitter(MAX_WATCHED_EVENT_BYTES);
  /** The calls not answered yet, by idKey. */
  private readonly open: Map<string, JsonRpcId>;
  /** An event too large to watch went by: which calls it answered is not known. */
  private blind = false;

  constructor(
    ids: readonly JsonRpcId[],
    private readonly decisionId: string,
  ) {
    this.open = new Map(ids.map((id) => [idKey(id), id]));
  }

  see(chunk: Buffer): void {
    this.boundary.see(chunk);
    if (this.blind || this.open.size === 0) return;
    let events: Buffer[];
    try {
      events = this.splitter.push(chunk);
    } catch {
      this.blind = true;
      return;
    }
    for (const raw of events) this.answered(raw);
  }

  end(why: CutWhy): Buffer | null {
    if (this.blind || this.open.size === 0 || !this.boundary.at) return null;
    const denial = cutDenial(why);
    return Buffer.concat([...this.open.values()].map((id) => messageEvent(denialResult(id, denial, this.decisionId))));
  }

  /** Takes the calls an event answers (a response, or a batch of them) off the open ones. */
  private answered(raw: Buffer): void {
    const data = parseEvent(raw).data;
    if (data === null || !data.includes('"id"')) return;
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    for (const m of Array.isArray(message) ? message : [message]) {
      if (typeof m !== 'object' || m === null || !('result' in m || 'error' in m)) continue;
      const id = (m as { id?: unknown }).id;
      if (typeof id === 'string' || typeof id === 'number') this.open.delete(idKey(id));
    }
  }
}
