/**
 * The answer to a denied `tools/call` (SPEC section 7): HTTP 200 with a JSON-RPC result for the
 * call's id, a tool error the model can read rather than a transport failure. The text block carries
 * the structured content serialized, as MCP asks of tools that return structured content.
 */
import type { Denial } from '../errors.js';
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
