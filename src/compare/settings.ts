/**
 * The effective settings of a task's runs: the task's own fields (suite max_steps, batch_size,
 * max_length) win over the command line's values, and the max length never exceeds the model's
 * usable positions (longer inputs would index past its position table).
 */
import type { RunSettings } from "./plan.js";
import type { CompareTask } from "./task.js";

/** The command line's values, before the task's own fields and the model's limits apply. */
export type CommandSettings = RunSettings;

/**
 * `virtualTokens`: soft tokens of prompt/prefix tuning, which take positions too (prompt tokens
 * sit in the sequence; a prefix shifts the real tokens' positions), so they come off the limit.
 */
export function effectiveSettings(task: CompareTask, cli: CommandSettings, positions: number | null, virtualTokens = 0): RunSettings {
  return {
    lr: cli.lr,
    maxSteps: task.maxSteps ?? cli.maxSteps,
    runSeconds: cli.runSeconds,
    warmup: cli.warmup,
    batchSize: task.batchSize ?? cli.batchSize,
    maxLength: Math.max(
      1,
      Math.min(task.maxLength ?? cli.maxLength, positions === null ? Number.POSITIVE_INFINITY : positions - virtualTokens),
    ),
  };
}
