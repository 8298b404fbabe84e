/**
 * search-<space hash>-<method>-s<seed>.jsonl: one JSON line per finished evaluation, appended with one
 * write and an fsync (as compare's rows.jsonl); a torn last line is dropped on reading.
 */
import * as fs from "node:fs";
import { appendJsonLine } from "../compare/rows.js";
import { type Evaluation, SearchStateError } from "./engine.js";

export interface StateRow extends Evaluation {
  /** The compare run behind the evaluation (its row in rows.jsonl); absent for --synthetic. */
  run_id?: string;
  label: string;
}

export function appendState(path: string, row: StateRow): void {
  appendJsonLine(path, row);
}

/** The rows of a state file; a torn last line is cut off so the next append starts a line. */
export function readState(path: string): StateRow[] {
  if (!fs.existsSync(path)) return [];
  const buf = fs.readFileSync(path);
  const end = buf.lastIndexOf(0x0a) + 1;
  if (end < buf.length) fs.truncateSync(path, end);
  const lines = buf.subarray(0, end).toString("utf8").split("\n").filter(Boolean);
  return lines.map((l, i) => {
    try {
      return JSON.parse(l) as StateRow;
    } catch {
      throw new SearchStateError(`${path}: line ${i + 1} is not a search row; remove it or choose another --output-dir`);
    }
  });
}
