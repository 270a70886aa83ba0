/**
 * Tasks the gateway made for denied task-augmented calls (MCP 2025-11-25 tasks, denial.ts
 * taskDenialResult). The upstream never saw those calls, so the gateway answers `tasks/get` and
 * `tasks/result` naming them itself: the task, completed; its result, the call's tool error.
 * Only for the principal whose call it was, for DENIED_TASK_TTL_MS, at most MAX_TASKS at once and
 * MAX_TASKS_PER_PRINCIPAL per principal.
 */
import type { DenialResult, TaskInfo } from './denial.js';
import { DENIED_TASK_TTL_MS } from './denial.js';

const MAX_TASKS = 10_000;
/** Per principal: one agent's denied calls cannot push out the others' (r16f F4). */
const MAX_TASKS_PER_PRINCIPAL = 100;
const RELATED_TASK = 'io.modelcontextprotocol/related-task';

interface Made {
  readonly task: TaskInfo;
  readonly result: DenialResult['result'];
  readonly principal: string;
  readonly until: number;
}

export class DeniedTasks {
  private readonly made = new Map<string, Made>();
  /** Principal -> its tasks' ids, oldest first. */
  private readonly byPrincipal = new Map<string, string[]>();

  remember(answer: DenialResult & { readonly result: { readonly task: TaskInfo } }, principal: string, now: number): void {
    const { task, ...result } = answer.result;
    this.made.set(task.taskId, { task, result, principal, until: now + DENIED_TASK_TTL_MS });
    let mine = this.byPrincipal.get(principal);
    if (mine === undefined) this.byPrincipal.set(principal, (mine = []));
    mine.push(task.taskId);
    if (mine.length > MAX_TASKS_PER_PRINCIPAL) this.forget(mine.shift()!);
    if (this.made.size > MAX_TASKS) this.forget(this.made.keys().next().value!);
  }

  private forget(taskId: string): void {
    const made = this.made.get(taskId);
    if (made === undefined) return;
    this.made.delete(taskId);
    const mine = this.byPrincipal.get(made.principal);
    if (mine === undefined) return;
    const i = mine.indexOf(taskId);
    if (i !== -1) mine.splice(i, 1);
    if (mine.length === 0) this.byPrincipal.delete(made.principal);
  }

  /** The gateway's answer to one `tasks/get` or `tasks/result` message naming a task it made, or null. */
  answer(message: unknown, principal: string, now: number): unknown {
    if (message === null || typeof message !== 'object' || Array.isArray(message)) return null;
    const m = message as Record<string, unknown>;
    if (m['method'] !== 'tasks/get' && m['method'] !== 'tasks/result') return null;
    const params = m['params'];
    const taskId = params !== null && typeof params === 'object' ? (params as Record<string, unknown>)['taskId'] : undefined;
    const made = typeof taskId === 'string' ? this.made.get(taskId) : undefined;
    if (made === undefined || made.principal !== principal) return null;
    if (made.until <= now) {
      this.forget(made.task.taskId);
      return null;
    }
    const result = m['method'] === 'tasks/get' ? made.task : { ...made.result, _meta: { [RELATED_TASK]: { taskId: made.task.taskId } } };
    return { jsonrpc: '2.0', id: m['id'] ?? null, result };
  }
}
