/**
 * Checks, before any run starts, that a task's train and eval files agree on their record format
 * (an eval file without labels for a classification task fails here, in one line, rather than
 * in every run). Reads the first record of each JSONL file; other file kinds are left to the loader.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { type DataFormat, formatOfFields } from "../train/data/index.js";
import { CompareError, type CompareTask, type TaskMetric } from "./task.js";

/** The first non-empty line of a file and its line number (reads at most 1 MB). */
function firstLine(path: string): { line: string; n: number } | null {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(1 << 20);
    const len = readSync(fd, buf, 0, buf.length, 0);
    const lines = buf.subarray(0, len).toString("utf8").split("\n");
    for (const [i, l] of lines.entries()) if (l.trim()) return { line: l, n: i + 1 };
    return null;
  } finally {
    closeSync(fd);
  }
}

/** The record format of a JSONL file's first record; null when the file is not JSONL or unreadable as such. */
export function jsonlFormat(path: string, where: string): { format: DataFormat | null; fields: string[]; line: number } | null {
  if (!/\.jsonl$/i.test(path)) return null;
  const first = firstLine(path);
  if (!first) throw new CompareError(`${where} ${path}: no records`);
  let value: unknown;
  try {
    value = JSON.parse(first.line);
  } catch {
    throw new CompareError(`${where} ${path}: line ${first.n}: not valid JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new CompareError(`${where} ${path}: line ${first.n}: a record must be a JSON object`);
  const v = value as Record<string, unknown>;
  return { format: formatOfFields(v), fields: Object.keys(v), line: first.n };
}

const LABEL_FIELD: Partial<Record<string, string>> = { classification: "label" };

/** Throws a one-line CompareError when the eval file cannot be scored like the train file. */
export function checkTaskData(task: CompareTask): DataFormat | null {
  const train = jsonlFormat(task.train, `task ${task.name}: train`);
  const ev = jsonlFormat(task.eval, `task ${task.name}: eval`);
  const trainFormat = (task.format as DataFormat | undefined) ?? train?.format ?? null;
  if (!ev || !trainFormat) return trainFormat;
  const field = LABEL_FIELD[trainFormat];
  if (field && !ev.fields.includes(field))
    throw new CompareError(
      `task ${task.name}: eval ${task.eval}: line ${ev.line}: no "${field}" field, but the task is ${trainFormat} (its train data has labels); the eval file needs them to be scored`,
    );
  if (!task.format && ev.format !== null && ev.format !== trainFormat)
    throw new CompareError(
      `task ${task.name}: eval ${task.eval}: line ${ev.line}: records are ${ev.format} but the train data is ${trainFormat}`,
    );
  return trainFormat;
}

/** The natural headline metric of a record format, for a user's own task without --metric. */
export function defaultMetric(format: DataFormat | null): TaskMetric {
  if (format === "classification") return "accuracy";
  if (format === "prompt_completion") return "exact_match";
  return "eval_loss";
}
