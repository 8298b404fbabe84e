/**
 * rows.jsonl: one JSON line per finished run. A row is appended with one write and an fsync, so
 * after a crash the file holds whole rows plus at most one torn last line, which reading drops
 * (and `repairRows` cuts off before the next append).
 */
import * as fs from "node:fs";
import { dirname } from "node:path";
import { fsyncDir } from "../io/atomic-write.js";
import { CompareError } from "./task.js";

export interface CompareRow {
  run_id: string;
  task: string;
  method: string;
  /** "r=8", "tokens=20", "bottleneck=32" or "default". */
  config: string;
  /** The --budgets entry that chose the configuration (e.g. "params=100k"), or null. */
  budget: string | null;
  seed: number;
  trainable_params: number;
  total_params: number;
  metric: string;
  metric_value: number;
  /** Every metric of the evaluation (eval_loss, eval_accuracy, ...). */
  eval_metrics: Record<string, number>;
  /** Child process wall time: load, train and evaluate. */
  wall_s: number;
  train_s: number;
  tokens_per_s: number;
  peak_rss_mb: number;
  steps: number;
  lr: number;
  /** The run's effective budget (task fields and the model's position limit applied); absent in older rows. */
  max_steps?: number;
  batch_size?: number;
  max_length?: number;
  /** Linear warmup (steps, or a fraction of max_steps); absent in rows written before it existed. */
  warmup?: number;
  started_at: string;
  finished_at: string;
  peftkit_version: string;
}

/** Appends one row durably: a single write of the whole line, then fsync. */
export function appendRow(path: string, row: CompareRow): void {
  appendJsonLine(path, row);
}

/**
 * Appends `value` as one JSON line: a single write, then fsync (and the folder's, for a new file),
 * so a crash leaves at most a torn last line. Also search's state files (src/search/state.ts).
 */
export function appendJsonLine(path: string, value: unknown): void {
  const fresh = !fs.existsSync(path);
  const fd = fs.openSync(path, "a");
  try {
    fs.writeSync(fd, `${JSON.stringify(value)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  if (fresh) fsyncDir(dirname(path));
}

export interface ReadRows {
  rows: CompareRow[];
  /** Byte length of the whole lines; a torn tail starts here. */
  validBytes: number;
  torn: boolean;
}

/** The rows of a file (none if absent). A torn last line is dropped; a bad line elsewhere is an error. */
export function readRows(path: string): ReadRows {
  if (!fs.existsSync(path)) return { rows: [], validBytes: 0, torn: false };
  const buf = fs.readFileSync(path);
  const end = buf.lastIndexOf(0x0a) + 1;
  const lines = buf.subarray(0, end).toString("utf8").split("\n");
  lines.pop();
  const rows: CompareRow[] = [];
  let validBytes = 0;
  for (const [i, line] of lines.entries()) {
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      // A crash can only tear the text after the last newline (a row and its newline are one
      // write), so a whole line that does not parse was not written by a compare.
      throw new CompareError(`${path}: line ${i + 1} is not a JSON row; remove it or choose another --output-dir`);
    }
    if (typeof row !== "object" || row === null || typeof (row as CompareRow).run_id !== "string")
      throw new CompareError(`${path}: line ${i + 1}: not a compare row (no run_id)`);
    rows.push(row as CompareRow);
    validBytes += Buffer.byteLength(line) + 1;
  }
  return { rows, validBytes, torn: end < buf.length };
}

/** Cuts a torn tail off the file so the next row starts on a line of its own; returns the rows. */
export function repairRows(path: string): ReadRows {
  const r = readRows(path);
  if (r.torn) {
    fs.truncateSync(path, r.validBytes);
    const fd = fs.openSync(path, "r+");
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  return r;
}
