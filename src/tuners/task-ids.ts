/**
 * The per-example task id channel (issue 15): methods that route by task (POLY/MHR) declare a
 * routing-table size (Tuner.taskCount) and read one id per example (WrapOptions.taskIds, a [B] i32
 * graph input named `task_ids`). Ids are checked here, on the host, before any graph runs: torch
 * would wrap a negative id around and fail late on a large one.
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { PeftConfigError } from "./config.js";

/** The graph input (inference graphs and training steps) holding the batch's task ids. */
export const TASK_IDS_INPUT = "task_ids";

export class TaskIdError extends PeftConfigError {}

/** A [B] i32 tensor of checked ids: every id an integer in [0, n). `who` names the routing table's owner. */
export function taskIdTensor(ids: ArrayLike<number>, n: number, who: string): HostTensor {
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i];
    if (!Number.isInteger(t) || t < 0 || t >= n)
      throw new TaskIdError(`task id ${t} is absent from the routing table of ${who} (${n} task${n === 1 ? "" : "s"}: ids 0..${n - 1})`);
    out[i] = t;
  }
  return hostTensor("i32", [ids.length], out);
}

/**
 * A task table: row i of the routing table is task `names[i]`. Stored beside an adapter as
 * task_table.json (src/io/task-table.ts), a peftkit extension (PEFT stores only n_tasks).
 */
export interface TaskTable {
  names: string[];
}

/**
 * The routing-table row of a task given by name or number: a name must be in the table, a number
 * must be a row of it (n rows; the table may name fewer). Missing (undefined/null) is an error too.
 */
export function resolveTask(task: string | number | null | undefined, table: TaskTable | null, n: number, where: string): number {
  const size = `${n} task${n === 1 ? "" : "s"}${table?.names.length ? `: ${table.names.map((x) => JSON.stringify(x)).join(", ")}` : ""}`;
  if (task === undefined || task === null) throw new TaskIdError(`${where}: no task given; the routing table has ${size}`);
  if (typeof task === "string" && !/^\d+$/.test(task)) {
    const i = table ? table.names.indexOf(task) : -1;
    if (i < 0) throw new TaskIdError(`${where}: task ${JSON.stringify(task)} is absent from the routing table (${size})`);
    return i;
  }
  const id = typeof task === "number" ? task : Number(task);
  if (!Number.isInteger(id) || id < 0 || id >= n)
    throw new TaskIdError(`${where}: task id ${task} is absent from the routing table (${size})`);
  return id;
}
