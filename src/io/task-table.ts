/**
 * The routing table of a multi-task adapter (POLY/MHR): `task_table.json` beside the adapter (and in
 * each checkpoint-N/), a peftkit extension since PEFT stores only n_tasks:
 *
 * ```json
 * { "format": "peftkit-task-table", "version": 1, "tasks": ["chat-kind", "define-lemma", "kind-of"] }
 * ```
 *
 * Row i of every routing table is task `tasks[i]`. Data records and `--task` name a task or give its
 * row number; an adapter trained on integer task ids has an empty list (rows are their own names).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { PeftkitError } from "../engine/errors.js";
import type { TaskTable } from "../tuners/task-ids.js";
import { writeFileAtomic } from "./atomic-write.js";
import { readJsonFile } from "./hf-folder.js";

export const TASK_TABLE_FILE = "task_table.json";
const FORMAT = "peftkit-task-table";

export class TaskTableError extends PeftkitError {}

export function writeTaskTable(dir: string, table: TaskTable): void {
  writeFileAtomic(join(dir, TASK_TABLE_FILE), `${JSON.stringify({ format: FORMAT, version: 1, tasks: table.names }, null, 2)}\n`);
}

/** The table beside an adapter, or null when the folder has none. */
export function readTaskTable(dir: string): TaskTable | null {
  const path = join(dir, TASK_TABLE_FILE);
  if (!existsSync(path)) return null;
  const raw = readJsonFile(path, "task table") as Record<string, unknown>;
  if (raw?.format !== FORMAT) throw new TaskTableError(`${path}: field "format" must be "${FORMAT}"`);
  const tasks = raw.tasks;
  if (!Array.isArray(tasks) || !tasks.every((t) => typeof t === "string"))
    throw new TaskTableError(`${path}: field "tasks" must be a list of task names`);
  if (new Set(tasks).size !== tasks.length) throw new TaskTableError(`${path}: field "tasks" names a task twice`);
  return { names: [...(tasks as string[])] };
}
