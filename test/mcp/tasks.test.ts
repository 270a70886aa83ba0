/** DeniedTasks (src/mcp/tasks.ts): the tasks the gateway made for denied task-augmented calls. */
import { describe, expect, it } from 'vitest';
import { Denial } from '../../src/errors.js';
import { denialResult, taskDenialResult } from '../../src/mcp/denial.js';
import { DeniedTasks } from '../../src/mcp/tasks.js';

const made = (n: number) => taskDenialResult(denialResult(n, new Denial('out_of_authority'), `dec_${n}`), new Date(0));
const ask = (taskId: string) => ({ jsonrpc: '2.0', id: 1, method: 'tasks/result', params: { taskId } });

describe('DeniedTasks', () => {
  it("answers only the caller's tasks; one principal's flood pushes out its own oldest, not another's (r16f F4)", () => {
    const tasks = new DeniedTasks();
    tasks.remember(made(0), 'victim', 0);
    expect(tasks.answer(ask('dec_0'), 'someone else', 1)).toBeNull();
    expect(tasks.answer(ask('dec_0'), 'victim', 1)).toMatchObject({ result: { isError: true, structuredContent: { denial_reason: 'out_of_authority' } } });
    for (let i = 1; i <= 10_001; i++) tasks.remember(made(i), 'flooder', 0);
    expect(tasks.answer(ask('dec_0'), 'victim', 1)).not.toBeNull();
    expect(tasks.answer(ask('dec_1'), 'flooder', 1)).toBeNull();
    expect(tasks.answer(ask('dec_10001'), 'flooder', 1)).not.toBeNull();
  });

  it('tasks/get answers the task itself, completed; past its lifetime nothing is answered', () => {
    const tasks = new DeniedTasks();
    tasks.remember(made(5), 'p', 0);
    expect(tasks.answer({ jsonrpc: '2.0', id: 2, method: 'tasks/get', params: { taskId: 'dec_5' } }, 'p', 1)).toMatchObject({ id: 2, result: { taskId: 'dec_5', status: 'completed' } });
    expect(tasks.answer(ask('dec_5'), 'p', 15 * 60 * 1000)).toBeNull();
  });
});
