export interface CompareTask {
  name: string;            // "lexname", unique in the suite, [a-z0-9_-]+
  description: string;
  model: string;           // model folder (absolute or relative to the suite file)
  train: string;           // JSONL file in one of the formats above
  eval: string;            // JSONL file, same format
  metric: "accuracy" | "exact_match" | "token_accuracy" | "macro_f1" | "eval_loss";  // the headline metric, higher is better except eval_loss
  chance?: number;         // chance level of the metric, for the report
  format?: string;         // record format; detected when absent
}
