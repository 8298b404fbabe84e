/**
 * `peftkit train --method mezo|sparse_mezo [--zo-over METHOD]`: zeroth-order training
 * (src/train/zo/). Without --zo-over the model's own weights train (all, or the linears --target
 * names) and the output folder holds the changed tensors; with --zo-over the adapter of that
 * method trains and the output is an adapter folder. Causal-LM data only.
 */
import type { PreTrainedTokenizer } from "../../io/tokenizer.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import type { DataFormat, Example } from "../../train/data/index.js";
import { evalBatches } from "../../train/evaluate.js";
import { gradNormTargets } from "../../train/gradnorm-run.js";
import { completionItems } from "../../train/run.js";
import type { EvalSource } from "../../train/trainer.js";
import { runZo, type ZoMethod } from "../../train/zo/run.js";
import { checkSparsity, ZoSparsityError } from "../../train/zo/sparse.js";
import { PeftConfigError } from "../../tuners/config.js";
import { calibrationRequest, PeftModel } from "../../tuners/peft-model.js";
import { type Flags, UsageError } from "../args.js";
import { causalTrainData, tensorRunBasics } from "./train-selective.js";

export async function trainZo(o: Flags, modelDir: string, peftConfig: Record<string, unknown> | null): Promise<number> {
  const method = o.method as ZoMethod;
  if ((o.gradAccum as number) > 1)
    throw new UsageError(
      `--grad-accum ${o.gradAccum}: --method ${method} takes one batch per step (the authors assert gradient_accumulation_steps == 1)`,
    );
  if (o.pack) throw new UsageError(`--pack: --method ${method} does not pack examples yet`);
  if (o.earlyStoppingPatience !== undefined)
    throw new UsageError(`--early-stopping-patience: --method ${method} evaluates (--eval-steps) but does not stop early`);
  const eps = o.zoEps as number;
  if (!(eps > 0) || !Number.isFinite(eps)) throw new UsageError(`--zo-eps ${eps}: want a positive number`);
  let sparsity: number | null = null;
  if (method === "sparse_mezo") {
    sparsity = (o.zoSparsity as number | undefined) ?? ZO_SPARSITY_DEFAULT;
    try {
      checkSparsity(sparsity);
    } catch (e) {
      if (e instanceof ZoSparsityError) throw new UsageError(e.message);
      throw e;
    }
  } else if (o.zoSparsity !== undefined) throw new UsageError(`--zo-sparsity is for --method sparse_mezo, not ${method}`);
  if (o.optimizer !== "adamw" || (o.clipNorm as number) !== 1)
    process.stderr.write(`warning: --method ${method} is ZO-SGD; --optimizer and --clip-norm are ignored\n`);
  const { tokenizer, format, train, eval: held } = await causalTrainData(o, modelDir);
  const model = await PreTrainedModel.load(modelDir, "causal_lm", { threads: o.threads as number | undefined });
  try {
    let peft: PeftModel | null = null;
    let trains: ((n: string) => boolean) | undefined;
    const target = (o.target as string[] | undefined) ?? null;
    if (peftConfig) {
      if (calibrationRequest(model, peftConfig))
        throw new UsageError(`--zo-over ${o.zoOver}: a method that initialises from data is not supported with --method ${method}`);
      peft = PeftModel.create(model, peftConfig, { seed: o.seed as number });
    } else if (target) {
      let names: Set<string>;
      try {
        names = new Set(gradNormTargets(model, target));
      } catch (e) {
        if (e instanceof PeftConfigError) throw new UsageError(e.message);
        throw e;
      }
      trains = (n) => names.has(n);
    }
    const r = await runZo({
      method,
      model,
      modelPath: modelDir,
      peft,
      zoOver: (o.zoOver as string | undefined) ?? null,
      trains,
      target: peftConfig ? null : target,
      ...tensorRunBasics(o, train, tokenizer),
      eps,
      sparsity,
      split: Boolean(o.zoSplit),
      weightDecay: o.weightDecay as number,
      saveSteps: (o.saveSteps as number) || undefined,
      saveTotalLimit: o.saveTotalLimit as number,
      logSteps: o.logSteps as number,
      resume: Boolean(o.resume),
      record: { ...o, data_format: format, train_examples: train.length, peft_config: peftConfig },
      log: (line) => process.stdout.write(`${line}\n`),
      evaluation: held.length
        ? { source: evalSource(held, tokenizer, o, format), tokenizer, every: o.evalSteps as number | undefined }
        : undefined,
    });
    process.stdout.write(
      `saved ${o.outputDir}/${peftConfig ? "adapter_model.safetensors" : "trained_tensors.safetensors"} (${r.trainable.toLocaleString("en-US")} parameters trained by ${method})\n`,
    );
  } finally {
    await model.release();
  }
  return 0;
}

/** --zo-sparsity's default (Sparse MeZO's paper gives none; docs/methods/mezo.md). */
export const ZO_SPARSITY_DEFAULT = 0.75;

/**
 * The held-out examples as `peftkit train` evaluates them: loss batches at --batch-size, and exact
 * match by generation on up to 200 prompt/completion or chat examples.
 */
function evalSource(examples: Example[], tokenizer: PreTrainedTokenizer, o: Flags, format: DataFormat): EvalSource {
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const batches = evalBatches(examples, o.batchSize as number, padId);
  const generative = format === "prompt_completion" || format === "chat";
  return { batches, completions: generative ? completionItems(examples, tokenizer, 200) : undefined };
}
