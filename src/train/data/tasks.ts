/**
 * Task ids of a multi-task dataset: each example's `task` field (a name or an integer) becomes a
 * row of the routing table (Example.taskId), which batches carry as taskIds.
 */
import { resolveTask, type TaskTable } from "../../tuners/task-ids.js";
import { DatasetError } from "./errors.js";
import type { Example } from "./tokenize.js";

/**
 * The routing table a training run builds from its data: the distinct task names in sorted order
 * (row i = names[i]); integer tasks are rows themselves (n = largest + 1). A dataset names its
 * tasks or numbers them, not both. No task field at all: one task (every example gets row 0).
 */
export function taskTableOf(examples: readonly Example[]): { table: TaskTable; count: number } {
  const names = new Set<string>();
  let largest = -1;
  for (const e of examples) {
    if (typeof e.task === "string") names.add(e.task);
    else if (typeof e.task === "number") largest = Math.max(largest, e.task);
  }
  if (names.size && largest >= 0) {
    const num = examples.find((e) => typeof e.task === "number") as Example;
    throw new DatasetError(`${num.source}: field "task" is a number, but other records name their tasks; use names or ids, not both`);
  }
  if (names.size) {
    const sorted = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return { table: { names: sorted }, count: sorted.length };
  }
  return { table: { names: [] }, count: Math.max(1, largest + 1) };
}

/**
 * Sets every example's taskId from its task. `allowMissing`: examples without a task get row 0
 * (single-task data for a routed method). Errors name the record, the task and the table size.
 */
export function assignTaskIds(examples: Example[], table: TaskTable, count: number, allowMissing: boolean): void {
  const anyTask = examples.some((e) => e.task !== undefined);
  for (const e of examples) {
    if (e.task === undefined && allowMissing && !anyTask) e.taskId = 0;
    else e.taskId = resolveTask(e.task, table, count, e.source);
  }
}
