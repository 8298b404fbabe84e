/**
 * --max-length against the model's position table: an explicit value above it is a usage error
 * (it would crash in ORT mid-run); without one, the default is clamped to it.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../io/hf-folder.js";
import { usablePositions } from "../models/positions.js";
import { UsageError } from "./args.js";

export const DEFAULT_MAX_LENGTH = 512;

/** `virtualTokens`: prompt/prefix soft tokens, which take positions too (0 for other methods). */
export function effectiveMaxLength(modelDir: string, given: number | undefined, virtualTokens = 0, fallback = DEFAULT_MAX_LENGTH): number {
  const p = usablePositions(loadConfig(modelDir));
  if (p === null) return given ?? fallback;
  const room = p.limit - virtualTokens;
  const soft = virtualTokens ? `, ${virtualTokens} of them taken by --num-virtual-tokens` : "";
  if (room < 1)
    throw new UsageError(
      `--num-virtual-tokens ${virtualTokens}: the model ${modelDir} takes at most ${p.limit} tokens (${join(modelDir, "config.json")}: ${p.source})`,
    );
  if (given === undefined) return Math.min(fallback, room);
  if (given > room)
    throw new UsageError(
      `--max-length ${given}: the model ${modelDir} takes at most ${p.limit} tokens${soft} (${join(modelDir, "config.json")}: ${p.source})`,
    );
  return given;
}

/** Soft tokens of a prompt/prefix tuning adapter folder (0 for other adapters or none). */
export function adapterVirtualTokens(adapterDir: string | undefined): number {
  const file = adapterDir === undefined ? "" : join(adapterDir, "adapter_config.json");
  if (!file || !existsSync(file)) return 0;
  try {
    const c = JSON.parse(readFileSync(file, "utf8")) as { peft_type?: string; num_virtual_tokens?: number };
    const soft = c.peft_type === "PROMPT_TUNING" || c.peft_type === "PREFIX_TUNING";
    return soft && typeof c.num_virtual_tokens === "number" ? c.num_virtual_tokens : 0;
  } catch {
    return 0; // loading the adapter reports a bad config with its own message
  }
}
