import { PeftkitError } from "../../engine/errors.js";

/**
 * A dataset that cannot be read or a record that cannot be used. The message starts with the
 * record's location (`data.jsonl:17: ...`, `data.json: [3]: ...`, `data.parquet: row 5: ...`).
 */
export class DatasetError extends PeftkitError {}

/** "number", "string", "null", "array", "object", ...: the words a user reads in "got ...". */
export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}
