/**
 * The answer to a denied `tools/call` (SPEC section 7): HTTP 200 with a JSON-RPC result for the
 * call's id, a tool error the model can read rather than a transport failure. The text block carries
 * the structured content serialized, as MCP asks of tools that return structured content.
 */
import { Denial } from '../errors.js';
import type { CutWhy } from '../mission/holds.js';
import type { JsonRpcId } from './jsonrpc.js';

export interface DenialResult {
  readonly jsonrpc: '2.0';
  readonly id: JsonRpcId;
  readonly result: {
    readonly isError: true;
    readonly content: readonly [{ readonly type: 'text'; readonly text: string }];
    readonly structuredContent: {
      readonly ok: false;
      readonly denial_reason: string | null;
      readonly decision_id: string;
      readonly error: string;
      readonly error_description: string;
      readonly [member: string]: unknown;
    };
  };
}

export function denialResult(id: JsonRpcId, denial: Denial, decisionId: string): DenialResult {
  const structuredContent = {
    ok: false as const,
    denial_reason: denial.spec.reason,
    decision_id: decisionId,
    error: denial.spec.error,
    error_description: denial.message,
    ...denial.extra,
  };
  return {
    jsonrpc: '2.0',
    id,
    result: { isError: true, content: [{ type: 'text', text: JSON.stringify(structuredContent) }], structuredContent },
  };
}

/** How long the gateway answers for a task it made for a denied call (tasks.ts). */
export const DENIED_TASK_TTL_MS = 15 * 60 * 1000;

/** A task as MCP 2025-11-25 describes one (`Task`). */
export interface TaskInfo {
  readonly taskId: string;
  readonly status: 'completed';
  readonly ttl: number;
  readonly createdAt: string;
  readonly lastUpdatedAt: string;
}

/**
 * The answer to a denied task-augmented `tools/call` (MCP 2025-11-25 tasks): the requester expects
 * a `CreateTaskResult`, so the SPEC's result also carries a task, completed at once, named by the
 * decision. A stock client then asks for its result (`tasks/result`, answered by the gateway with
 * the same tool error), as it would for a tool that ran and failed.
 */
export function taskDenialResult(denied: DenialResult, now: Date): DenialResult & { readonly result: { readonly task: TaskInfo } } {
  const at = now.toISOString();
  const task: TaskInfo = { taskId: denied.result.structuredContent.decision_id, status: 'completed', ttl: DENIED_TASK_TTL_MS, createdAt: at, lastUpdatedAt: at };
  return { ...denied, result: { ...denied.result, task } };
}

/**
 * What a call learns when the stream of its answer is cut (holds.ts): its Mission stopped being
 * active, or its authority no longer permits the call, or the state could not be established again.
 */
export function cutDenial(why: CutWhy): Denial {
  switch (why.cause) {
    case 'authority_changed':
      return new Denial('out_of_authority', { description: "the Mission's authority changed while the call ran, and no longer permits it" });
    case 'state_unavailable':
      return new Denial('state_unavailable', { description: "the Mission's state could not be established again while the call ran" });
    case 'expired':
      return new Denial('mission_terminated', { description: 'the Mission expired while the call ran', extra: { mission_status: 'expired' } });
    case 'state_change':
      if (why.state === 'suspended') return new Denial('mission_suspended', { description: 'the Mission was suspended while the call ran', extra: { mission_status: 'suspended' } });
      return new Denial('mission_terminated', { description: 'the Mission ended while the call ran', extra: { mission_status: why.state } });
  }
}
