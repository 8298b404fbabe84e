/**
 * A compare run of method "graft": grafting has no training step of its own, so the row is
 * fine-tuning of the graftable tensors (every linear layer but the head; embeddings, norms and head
 * frozen) at the run's budget with the `full` row's recipe (full-run.ts), followed by
 * `peftkit graft` at fixed settings (COMPARE_GRAFT) on the training data, the graft put on the
 * base (`peftkit delta apply`) and evaluated on the task's evaluation set. The row's trainable
 * parameters are the graft's entries. Causal-LM tasks only (grafting's scope).
 */
import { join } from "node:path";
import { PreTrainedModel } from "../models/pretrained.js";
import { mergeDeltaSet } from "../sparse/compose.js";
import { loadSparseDeltas } from "../sparse/file.js";
import { GRAFT_FILE, graftableWeights, runGraft } from "../train/graft.js";
import { evaluateTrained, fullTrain } from "./full-run.js";
import type { WorkerResult, WorkerSpec } from "./worker.js";

/**
 * The graft's settings in compare: 1% of the linear weights' entries as the base patch, b = 10,
 * 5 mask updates of at most 16 batches of 8, on the first 256 training examples; the dev set is
 * the last 200 training examples (never the evaluation set); exact match on at most 100 of each.
 * The mask lr is 1e9, not the authors' 1e7: on kind-of (wordnet-llama, 100 steps) the scores
 * barely move in 5 updates at 1e7 and the row kept the base patch alone, exact match 0.000 with
 * 28,999 entries; at 1e9 it scored 0.360 with 437,864 (docs/methods/graft.md).
 */
export const COMPARE_GRAFT = {
  sparsity: 0.01,
  sigmoidBias: 10,
  maskLr: 1e9,
  epochs: 5,
  accumulation: 16,
  batchSize: 8,
  trainSamples: 256,
  devSamples: 200,
  exactMatchLimit: 100,
} as const;

export async function graftFineTune(s: WorkerSpec, onTrained: () => void): Promise<Omit<WorkerResult, "max_rss_kb">> {
  // As the authors' select_trainable_parameters with fix_embeddings/fix_head: only the graftable
  // tensors fine-tune, so τ is zero wherever the graft cannot reach.
  const t = await fullTrain(s, {
    trains: (model) => {
      const graftable = new Set(graftableWeights(model, "all-linear"));
      return (name) => graftable.has(name);
    },
  });
  const finetuned = new Map(t.model.weights);
  await t.model.release();
  if (t.head !== "causal_lm") throw new Error(`graft works on causal language models; this task trains a ${t.head} model`);
  const base = await PreTrainedModel.load(s.model, "causal_lm", { threads: s.threads });
  try {
    const c = COMPARE_GRAFT;
    const n = t.examples.length;
    const started = Date.now();
    const out = join(s.runDir, "graft");
    const r = await runGraft({
      model: base,
      finetuned,
      target: "all-linear",
      train: t.examples.slice(0, c.trainSamples),
      dev: t.examples.slice(Math.max(0, n - c.devSamples)),
      tokenizer: t.tokenizer,
      padId: t.padId,
      batchSize: c.batchSize,
      sparsity: c.sparsity,
      sigmoidBias: c.sigmoidBias,
      maskLr: c.maskLr,
      epochs: c.epochs,
      accumulation: c.accumulation,
      seed: s.seed,
      outputDir: out,
      resume: false,
      exactMatchLimit: c.exactMatchLimit,
      log: (line) => process.stdout.write(`${line}\n`),
    });
    const graftS = (Date.now() - started) / 1000;
    onTrained();
    const file = join(out, GRAFT_FILE);
    for (const [name, w] of mergeDeltaSet(base.weights, { file, set: loadSparseDeltas(file) })) base.weights.set(name, w);
    const eval_metrics = await evaluateTrained({ ...t, model: base });
    return {
      eval_metrics,
      steps: t.steps,
      train_s: t.trainS + graftS,
      tokens_seen: t.tokens,
      trainable_params: r.entries,
      total_params: t.params,
    };
  } finally {
    await base.release();
  }
}
