/**
 * --max-length against the model's position table: an explicit value above it is a usage error
 * (it would crash in ORT mid-run); without one, the default is clamped to it.
 */
import { join } from "node:path";
import { loadConfig } from "../io/hf-folder.js";
import { usablePositions } from "../models/positions.js";
import { UsageError } from "./args.js";

export const DEFAULT_MAX_LENGTH = 512;

export function effectiveMaxLength(modelDir: string, given: number | undefined, fallback = DEFAULT_MAX_LENGTH): number {
  const p = usablePositions(loadConfig(modelDir));
  if (p === null) return given ?? fallback;
  if (given === undefined) return Math.min(fallback, p.limit);
  if (given > p.limit)
    throw new UsageError(
      `--max-length ${given}: the model ${modelDir} takes at most ${p.limit} tokens (${join(modelDir, "config.json")}: ${p.source})`,
    );
  return given;
}
