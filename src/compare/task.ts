/** A task of a comparison suite: the contract shared with the built-in suites (see docs/compare.md). */
import { PeftkitError } from "../engine/errors.js";

export const TASK_METRICS = ["accuracy", "exact_match", "token_accuracy", "span_f1", "macro_f1", "eval_loss"] as const;
export type TaskMetric = (typeof TASK_METRICS)[number];

export interface CompareTask {
  /** Unique in the suite, [a-z0-9_-]+. */
  name: string;
  description: string;
  /** Model folder (absolute or relative to the suite file). */
  model: string;
  /** JSONL file in one of the record formats of src/train/data. */
  train: string;
  /** JSONL file, same format. */
  eval: string;
  /** The headline metric; higher is better except eval_loss. */
  metric: TaskMetric;
  /** Chance level of the metric, for the report. */
  chance?: number;
  /** Record format; detected when absent. */
  format?: string;
  /** The task's own budget (suite fields max_steps, batch_size, max_length): each wins over the command line's value. */
  maxSteps?: number;
  batchSize?: number;
  maxLength?: number;
}

/** Suite field → task field of the per-task settings. */
export const TASK_SETTINGS = { max_steps: "maxSteps", batch_size: "batchSize", max_length: "maxLength" } as const;

/** A task the harness cannot run (bad suite entry, missing file, eval data without labels, ...). */
export class CompareError extends PeftkitError {}

export const TASK_NAME = /^[a-z0-9_-]+$/;

/** Whether a larger value of the metric is better. */
export function higherIsBetter(metric: string): boolean {
  return metric !== "eval_loss";
}

/** The key of the metric in an eval result (`peftkit eval` prefixes its metrics with eval_). */
export function metricKey(metric: string): string {
  return metric.startsWith("eval_") ? metric : `eval_${metric}`;
}
