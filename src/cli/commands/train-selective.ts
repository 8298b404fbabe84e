/**
 * `peftkit train --method lisa|hft|gradnorm_lorp`: whole base tensors train (src/train/selective-run.ts,
 * src/train/gradnorm-run.ts); the
 * output folder holds the changed tensors, not an adapter. Causal-LM data only for now.
 */
import { AutoTokenizer } from "../../io/tokenizer.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { type DataFormat, type Example, loadDataset, splitDataset } from "../../train/data/index.js";
import { GRADNORM_DEFAULTS, type GradNormCompat, GradNormError } from "../../train/gradnorm-projector.js";
import { runGradNorm } from "../../train/gradnorm-run.js";
import { LayerSelectionError } from "../../train/layer-selection.js";
import type { ScheduleName } from "../../train/schedule.js";
import { runSelective, type SelectiveMethod, type TensorRunBasics } from "../../train/selective-run.js";
import { PeftConfigError } from "../../tuners/config.js";
import { type Flags, UsageError } from "../args.js";
import { FORMAT_TASKS } from "./train.js";

/**
 * The data, schedule and output settings of a whole-tensor run (lisa, hft, gradnorm_lorp, mezo)
 * from the flags: without --max-steps, --epochs passes over `train`.
 */
export function tensorRunBasics(
  o: Flags,
  train: Example[],
  tokenizer: { readonly padTokenId: number | null; readonly eosTokenId: number | null },
): TensorRunBasics {
  const batchSize = o.batchSize as number;
  return {
    outputDir: o.outputDir as string,
    train,
    padId: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0,
    batchSize,
    maxSteps: (o.maxSteps as number | undefined) ?? Math.ceil((o.epochs as number) * Math.ceil(train.length / batchSize)),
    lr: o.lr as number,
    schedule: o.schedule as ScheduleName,
    warmup: o.warmup as number,
    seed: o.seed as number,
  };
}

/**
 * The tokenizer and training examples of a whole-tensor run: causal-LM records only, with
 * --eval-fraction held out as `peftkit train` does (from 20 examples up).
 */
export async function causalTrainData(o: Flags, modelDir: string) {
  const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  const data = await loadDataset(o.data as string, {
    tokenizer,
    format: o.format as DataFormat | undefined,
    maxLength: o.maxLength as number,
    onBadRecord: o.onBadRecord as "error" | "skip",
  });
  if (FORMAT_TASKS[data.format].head !== "causal_lm")
    throw new UsageError(`--method ${o.method} trains causal language models; ${o.data} holds ${data.format} records`);
  const ef = o.evalFraction as number;
  // The held-out examples as `peftkit train` takes them: --eval-data, else --eval-fraction of --data.
  let train: Example[] = data.examples;
  let evalSet: Example[] = [];
  if (o.evalData) {
    evalSet = (
      await loadDataset(o.evalData as string, {
        tokenizer,
        format: data.format,
        maxLength: o.maxLength as number,
        onBadRecord: o.onBadRecord as "error" | "skip",
      })
    ).examples;
  } else if (ef > 0 && data.examples.length >= 20) ({ train, eval: evalSet } = splitDataset(data.examples, ef, o.seed as number));
  return { tokenizer, format: data.format, train, eval: evalSet };
}

export async function trainSelective(o: Flags, modelDir: string): Promise<number> {
  if ((o.gradAccum as number) > 1) throw new UsageError(`--grad-accum: --method ${o.method} has no gradient accumulation yet`);
  if (o.pack) throw new UsageError(`--pack: --method ${o.method} does not pack examples yet`);
  if (o.evalData) process.stderr.write(`warning: --method ${o.method} does not evaluate during training; --eval-data is ignored\n`);
  const { tokenizer, train } = await causalTrainData(o, modelDir);
  const model = await PreTrainedModel.load(modelDir, "causal_lm", { threads: o.threads as number | undefined });
  // What every in-place trainer's run takes from the flags.
  const run = {
    model,
    modelPath: modelDir,
    ...tensorRunBasics(o, train, tokenizer),
    clipNorm: (o.clipNorm as number) > 0 ? (o.clipNorm as number) : undefined,
    saveSteps: (o.saveSteps as number) || undefined,
    saveTotalLimit: o.saveTotalLimit as number,
    resume: Boolean(o.resume),
    gradientCheckpointing: Boolean(o.gradientCheckpointing),
    log: (line: string) => process.stdout.write(`${line}\n`),
  };
  try {
    if (o.method === "gradnorm_lorp") {
      const r = await runGradNorm({
        ...run,
        target: o.target as string[] | undefined,
        gradnorm: {
          rank: (o.r as number | undefined) ?? GRADNORM_DEFAULTS.rank,
          updateProjGap: o.gradnormUpdateGap as number,
          scale: o.gradnormScale as number,
          weightDecay: o.weightDecay as number,
          compat: (o.gradnormCompat as GradNormCompat | undefined) ?? null,
          svd: o.gradnormSvd as "exact" | "randomized",
        },
      });
      process.stdout.write(
        `saved ${o.outputDir}/trained_tensors.safetensors (${r.trainable.toLocaleString("en-US")} parameters of the targeted tensors)\n`,
      );
      return 0;
    }
    const r = await runSelective({
      ...run,
      method: o.method as SelectiveMethod,
      weightDecay: o.weightDecay as number,
      lisaLayers: o.lisaLayers as number,
      lisaInterval: o.lisaInterval as number,
      hftStageSteps: o.hftStageSteps as number,
    });
    process.stdout.write(
      `saved ${o.outputDir}/trained_tensors.safetensors (${r.trainable.toLocaleString("en-US")} parameters in the last selection)\n`,
    );
  } catch (e) {
    if (e instanceof LayerSelectionError || e instanceof GradNormError || e instanceof PeftConfigError) throw new UsageError(e.message);
    throw e;
  } finally {
    await model.release();
  }
  return 0;
}
