/**
 * `peftkit bench train`: N timed training steps of a model built from an HF config with random
 * weights, after one warm-up step. Reports median step time, tokens/s, peak RSS, achieved GFLOP/s
 * (analytic FLOPs), the fraction of the engine's matmul peak, and compile time.
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { hostTensor } from "../src/engine/ir/host.js";
import { PreTrainedModel } from "../src/models/pretrained.js";
import { FullTrainer } from "../src/train/full-finetune.js";
import { methodConfig } from "../src/train/methods.js";
import { PeftModel } from "../src/tuners/peft-model.js";
import { PeftTrainer } from "../src/tuners/train.js";
import { matmulRows } from "./engine.js";
import { llamaShape, trainStepFlops } from "./flops.js";

export interface TrainBenchOptions {
  config: string;
  method: string;
  r: number;
  target: string[];
  batch: number;
  seq: number;
  steps: number;
  full?: boolean;
  gradientCheckpointing?: boolean;
  threads?: number;
  /** Matmul peak in GFLOP/s; measured (best engine matmul over 1024–4096) when absent. */
  peak?: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function runTrainBench(o: TrainBenchOptions): Promise<Record<string, unknown>> {
  const config = JSON.parse(readFileSync(o.config, "utf8")) as Record<string, unknown>;
  const threads = o.threads ?? 2;
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { threads, seed: 0 });
  const vocab = config.vocab_size as number;
  const ids = Array.from({ length: o.batch }, (_, b) => Array.from({ length: o.seq }, (_, t) => (b * 7919 + t * 104729) % vocab));
  const inputIds = hostTensor("i64", [o.batch, o.seq], BigInt64Array.from(ids.flat(), BigInt));
  const batch = { inputIds, labels: inputIds };
  const t0 = performance.now();
  let train: (i: number) => Promise<{ loss: number }>;
  let release: () => Promise<void>;
  let trainable: number;
  if (o.full) {
    const t = await FullTrainer.create(model, { optimizer: { kind: "adamw" }, gradientCheckpointing: o.gradientCheckpointing });
    train = (i) => t.train(batch, { lr: 1e-5, seed: i });
    release = () => t.release();
    trainable = [...new Set(model.weights.values())].reduce((a, w) => a + w.data.length, 0);
  } else {
    const peft = PeftModel.create(model, methodConfig(o.method, { r: o.r, alpha: 2 * o.r, dropout: 0, target: o.target }), { seed: 0 });
    const t = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, gradientCheckpointing: o.gradientCheckpointing });
    train = (i) => t.train(batch, { lr: 1e-4, seed: i });
    release = () => t.release();
    trainable = peft.parameterCounts().trainable;
  }
  const compileMs = performance.now() - t0;
  const warm = performance.now();
  await train(0);
  const firstStepMs = performance.now() - warm;
  const times: number[] = [];
  let loss = Number.NaN;
  for (let i = 1; i <= o.steps; i++) {
    const s = performance.now();
    loss = (await train(i)).loss;
    times.push(performance.now() - s);
  }
  await release();
  await model.release();
  const stepMs = median(times);
  const rssBytes = process.resourceUsage().maxRSS * 1024;
  const shape = llamaShape(config);
  const lowRank = !o.full && ["lora", "dora", "rslora", "pissa"].includes(o.method);
  const flops = trainStepFlops(shape, o.batch, o.seq, { rank: lowRank ? o.r : undefined, full: o.full });
  const peak = o.peak ?? Math.max(...(await matmulRows(threads)).map((r) => r.gflops));
  const gflops = flops / stepMs / 1e6;
  return {
    bench: "train",
    method: o.full ? "full" : o.method,
    gradient_checkpointing: Boolean(o.gradientCheckpointing),
    r: o.full ? null : o.r,
    target: o.target.join(","),
    batch: o.batch,
    seq: o.seq,
    steps: o.steps,
    step_ms: stepMs,
    tokens_per_s: (o.batch * o.seq) / (stepMs / 1000),
    peak_rss_mb: rssBytes / 1e6,
    analytic_gflop: flops / 1e9,
    gflops,
    matmul_peak_gflops: peak,
    fraction_of_peak: gflops / peak,
    compile_ms: compileMs,
    first_step_ms: firstStepMs,
    trainable_params: trainable,
    loss,
    threads,
    cpu: cpus()[0]?.model ?? "unknown",
    date: new Date().toISOString(),
  };
}
