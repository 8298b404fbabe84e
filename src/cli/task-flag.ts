/**
 * `--task` of `peftkit eval` and `generate`, for adapters that route by task (POLY/MHR): the task
 * by name (a row of the adapter's task_table.json) or by row number. Without it, eval data whose
 * records have a `task` field are routed per record; a routing table of one row needs neither.
 */
import { readTaskTable } from "../io/task-table.js";
import { assignTaskIds, type Example } from "../train/data/index.js";
import type { PeftModel } from "../tuners/peft-model.js";
import { resolveTask, TaskIdError, type TaskTable } from "../tuners/task-ids.js";
import { type FlagSpec, UsageError } from "./args.js";

export const TASK_FLAG: FlagSpec = {
  name: "task",
  type: "string",
  meta: "NAME|ID",
  help: "adapters that route by task (poly): the task, by its name in the adapter's task_table.json or its row (default: each record's task field)",
};

/** The routing table of the loaded adapter, when it routes by task. */
function routing(peft: PeftModel | null, adapterDir: string | undefined): { size: number; table: TaskTable | null } | null {
  if (!peft || !adapterDir) return null;
  const a = peft.adapter(peft.activeAdapters[0]);
  const size = a.tuner.taskCount?.(a.config);
  return size === undefined ? null : { size, table: readTaskTable(adapterDir) };
}

/**
 * Applies --task (every call of this command is that task), or routes `examples` by their task
 * fields. A wrong --task is a usage error naming the task and the table size.
 */
export function applyTask(peft: PeftModel | null, adapterDir: string | undefined, task: string | undefined, examples?: Example[]): void {
  const r = routing(peft, adapterDir);
  if (task !== undefined) {
    if (!r) throw new UsageError(`--task ${task}: the adapter does not route by task`);
    try {
      peft?.useTask(resolveTask(task, r.table, r.size, "--task"));
    } catch (e) {
      if (e instanceof TaskIdError) throw new UsageError(e.message);
      throw e;
    }
    return;
  }
  if (r && examples?.some((e) => e.task !== undefined)) assignTaskIds(examples, r.table ?? { names: [] }, r.size, false);
}
