/**
 * A compare run of LISA/HFT (whole base tensors, `peftkit train --method lisa|hft`): the trained
 * tensors go onto the base model, which is evaluated with `peftkit eval`'s evaluation code.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AutoTokenizer } from "../io/tokenizer.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { type DataFormat, loadDataset } from "../train/data/index.js";
import { evalBatches, evaluate } from "../train/evaluate.js";
import { completionItems } from "../train/run.js";
import { applyTrainedTensors } from "../train/selective-run.js";
import type { WorkerResult, WorkerSpec } from "./worker.js";

export async function selectiveEval(s: WorkerSpec, dir: string): Promise<Omit<WorkerResult, "max_rss_kb">> {
  const tokenizer = await AutoTokenizer.fromPretrained(s.model);
  const ev = await loadDataset(s.eval, {
    tokenizer,
    format: s.format as DataFormat | undefined,
    maxLength: s.maxLength,
    onBadRecord: "error",
  });
  const model = await PreTrainedModel.load(s.model, "causal_lm", { threads: s.threads });
  try {
    const total = [...new Set(model.weights.values())].reduce((a, t) => a + t.data.length, 0);
    applyTrainedTensors(model, dir);
    const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
    const batches = evalBatches(ev.examples, 16, padId);
    const metrics = await evaluate(model, batches, {
      causal: true,
      classification: false,
      completions: ev.format === "prompt_completion" || ev.format === "chat" ? completionItems(ev.examples, tokenizer, 200) : undefined,
      tokenizer,
    });
    const args = JSON.parse(readFileSync(join(dir, "training_args.json"), "utf8")) as {
      result: { steps: number; wallSeconds: number; tokensSeen: number; trainableParams: number };
    };
    return {
      eval_metrics: Object.fromEntries(Object.entries(metrics).filter((e): e is [string, number] => typeof e[1] === "number")),
      steps: args.result.steps,
      train_s: args.result.wallSeconds,
      tokens_seen: args.result.tokensSeen,
      trainable_params: args.result.trainableParams,
      total_params: total,
    };
  } finally {
    await model.release();
  }
}
