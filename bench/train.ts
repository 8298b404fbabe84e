/**
 * `peftkit bench train`: N timed training steps of a model built from an HF config with random
 * weights, after one warm-up step. Reports median step time, tokens/s, peak RSS, achieved GFLOP/s
 * (analytic FLOPs), the fraction of the engine's matmul peak, and compile time.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ortCompileStats, ortCreateTime } from "../src/engine/exec/onnx/session.js";
import { hostTensor } from "../src/engine/ir/host.js";
import { PreTrainedModel } from "../src/models/pretrained.js";
import { FullTrainer } from "../src/train/full-finetune.js";
import { GradNormTrainer } from "../src/train/gradnorm-lorp.js";
import { gradNormTargets } from "../src/train/gradnorm-run.js";
import { methodConfig } from "../src/train/methods.js";
import { hftPolicy, lisaPolicy, SelectiveTrainer } from "../src/train/selective.js";
import { ZoTrainer } from "../src/train/zo/trainer.js";
import { PeftModel } from "../src/tuners/peft-model.js";
import { PeftTrainer } from "../src/tuners/train.js";
import { matmulRows } from "./engine.js";
import { llamaShape, trainStepFlops } from "./flops.js";

export interface TrainBenchOptions {
  config: string;
  method: string;
  /** spiel: the density (default 0.01). */
  density?: number;
  /** s2ft: the ratios (absent ones: the method's defaults). */
  s2ftRatios?: { v?: number; o?: number; u?: number; d?: number };
  r: number;
  target: string[];
  batch: number;
  seq: number;
  steps: number;
  full?: boolean;
  /** An inference-only forward with the loss of the same batch (no backward, no update): MeZO's memory baseline. */
  inference?: boolean;
  /** mezo: the two forwards as two runs of a one-forward graph (ZoStepDefinition.split). */
  zoSplit?: boolean;
  /** gradnorm_lorp: the projector's rank (default: r). */
  rank?: number;
  /** lisa: γ, the layers trained at a time (default 2). */
  lisaLayers?: number;
  gradientCheckpointing?: boolean;
  /** Compile the step with batch and seq as concrete dims (OrtOptions.staticShapes). */
  staticShapes?: boolean;
  threads?: number;
  /** Matmul peak in GFLOP/s; measured (best engine matmul over 1024–4096) when absent. */
  peak?: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function runTrainBench(o: TrainBenchOptions): Promise<Record<string, unknown>> {
  const config = JSON.parse(readFileSync(o.config, "utf8")) as Record<string, unknown>;
  const threads = o.threads ?? 2;
  const w0 = performance.now();
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { threads, seed: 0, staticShapes: o.staticShapes });
  const weightsMs = performance.now() - w0;
  const vocab = config.vocab_size as number;
  const ids = Array.from({ length: o.batch }, (_, b) => Array.from({ length: o.seq }, (_, t) => (b * 7919 + t * 104729) % vocab));
  const inputIds = hostTensor("i64", [o.batch, o.seq], BigInt64Array.from(ids.flat(), BigInt));
  const batch = { inputIds, labels: inputIds };
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let train: (i: number) => Promise<{ loss: number }>;
  let release: () => Promise<void>;
  let trainable: number;
  let selective: SelectiveTrainer | null = null;
  let gradnorm: GradNormTrainer | null = null;
  if (o.inference) {
    const f = await ZoTrainer.inference(model);
    train = async () => ({ loss: await f.loss(batch) });
    release = () => f.release();
    trainable = 0;
  } else if (!o.full && (o.method === "mezo" || o.method === "sparse_mezo")) {
    // Full-weight MeZO: two forwards in one graph, then the in-place host update (src/train/zo/step.ts).
    const t = await ZoTrainer.full(model, { sparsity: o.method === "sparse_mezo" ? 0.75 : undefined, split: o.zoSplit });
    train = async (i) => {
      const r = await t.train(batch, { lr: 1e-6, eps: 1e-3, seed: i });
      return { loss: r.lossPlus };
    };
    release = () => t.release();
    trainable = t.trainedParameters();
  } else if (!o.full && (o.method === "lisa" || o.method === "hft")) {
    // The selection switches right after the timed steps (LISA: interval = steps + 1; HFT: a stage
    // per steps + 1), so one more step measures what a switch costs.
    const layout = SelectiveTrainer.layout(model);
    const policy =
      o.method === "lisa"
        ? lisaPolicy(layout, 0, { layers: o.lisaLayers ?? 2, interval: o.steps + 1 })
        : hftPolicy(layout, 0, { stageSteps: o.steps + 1 });
    const t = SelectiveTrainer.create(model, policy, { optimizer: { kind: "adamw" }, gradientCheckpointing: o.gradientCheckpointing });
    selective = t;
    await t.prepare();
    train = (i) => t.train(batch, { lr: 1e-5, seed: i });
    release = () => t.release();
    trainable = t.trainedParameters();
  } else if (!o.full && o.method === "gradnorm_lorp") {
    // The warm-up step is a projector refresh (step 0), the timed steps are not, and the step after
    // them is again (T = steps + 1): it measures a refresh with the step's session already cached.
    const t = GradNormTrainer.create(model, gradNormTargets(model, o.target), {
      rank: o.rank ?? o.r,
      updateProjGap: o.steps + 1,
      gradientCheckpointing: o.gradientCheckpointing,
    });
    gradnorm = t;
    train = (i) => t.train(batch, { lr: 1e-5, seed: i });
    release = () => t.release();
    trainable = t.trainedParameters();
  } else if (o.full) {
    const t = await FullTrainer.create(model, { optimizer: { kind: "adamw" }, gradientCheckpointing: o.gradientCheckpointing });
    train = (i) => t.train(batch, { lr: 1e-5, seed: i });
    release = () => t.release();
    trainable = [...new Set(model.weights.values())].reduce((a, w) => a + w.data.length, 0);
  } else {
    const peft = PeftModel.create(
      model,
      methodConfig(o.method, { r: o.r, alpha: 2 * o.r, dropout: 0, target: o.target, density: o.density, s2ftRatios: o.s2ftRatios }),
      { seed: 0 },
    );
    const t = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, gradientCheckpointing: o.gradientCheckpointing });
    // A method's passes between steps (IST's importance rounds) run on the same batch.
    t.usePassBatches(() => batch);
    train = (i) => t.train(batch, { lr: 1e-4, seed: i });
    release = () => t.release();
    trainable = peft.parameterCounts().trainable;
  }
  const compileMs = performance.now() - t0;
  // CPU time of compilation: robust to other jobs on the machine, unlike wall time (tracing, emission
  // and ORT's session creation run on one thread).
  const cpu = process.cpuUsage(cpu0);
  const compileCpuMs = (cpu.user + cpu.system) / 1000;
  const warm = performance.now();
  await train(0);
  // performance.now() counts from the start of this process.
  const startToFirstStepMs = performance.now();
  const firstStepMs = performance.now() - warm;
  const times: number[] = [];
  let loss = Number.NaN;
  for (let i = 1; i <= o.steps; i++) {
    const s = performance.now();
    loss = (await train(i)).loss;
    times.push(performance.now() - s);
  }
  let switchFields: Record<string, number> = {};
  if (gradnorm) {
    // resident (not peak) size after the timed steps: the peak includes the warm-up's refresh
    const rssNow = process.memoryUsage().rss;
    const first = { ...gradnorm.refreshStats };
    const s = performance.now();
    const res = await train(o.steps + 1);
    const st = gradnorm.refreshStats;
    const r = (res as { refresh?: { gradientSeconds: number; svdSeconds: number } }).refresh;
    switchFields = {
      // the step after the timed ones, a refresh: gradient graph (built and run), host SVDs, the
      // step's session rebuilt, and the step
      refresh_step_ms: performance.now() - s,
      refresh_gradient_ms: (r?.gradientSeconds ?? Number.NaN) * 1000,
      refresh_svd_ms: (r?.svdSeconds ?? Number.NaN) * 1000,
      // the warm-up step's refresh (cold compile cache for the gradient graph)
      first_refresh_gradient_ms: first.gradientSeconds * 1000,
      first_refresh_svd_ms: first.svdSeconds * 1000,
      refreshes: st.refreshes,
      rss_after_timed_steps_mb: rssNow / 1e6,
      optimizer_state_elements: gradnorm.optimizerElements(),
      rank: gradnorm.opts.rank,
    };
  }
  if (selective) {
    const rssBefore = process.resourceUsage().maxRSS * 1024;
    const s = performance.now();
    await train(o.steps + 1);
    switchFields = {
      // the step after the timed ones: a new selection's step built (compiled or loaded) and run
      switch_step_ms: performance.now() - s,
      switch_build_ms: selective.switchStats.lastSeconds * 1000,
      peak_rss_before_switch_mb: rssBefore / 1e6,
    };
  }
  await release();
  await model.release();
  const stepMs = median(times);
  const rssBytes = process.resourceUsage().maxRSS * 1024;
  const shape = llamaShape(config);
  const lowRank = !o.full && ["lora", "dora", "rslora", "pissa"].includes(o.method);
  // (MeZO and the inference forward: the analytic count is a backprop step's; read step_ms, not gflops, for them)
  const flops = trainStepFlops(shape, o.batch, o.seq, { rank: lowRank ? o.r : undefined, full: o.full });
  const peak = o.peak ?? Math.max(...(await matmulRows(threads)).map((r) => r.gflops));
  const gflops = flops / stepMs / 1e6;
  return {
    bench: "train",
    method: o.inference ? "inference" : o.full ? "full" : o.method,
    ...(o.zoSplit ? { zo_split: true } : {}),
    gradient_checkpointing: Boolean(o.gradientCheckpointing),
    static_shapes: Boolean(o.staticShapes),
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
    weights_ms: weightsMs,
    compile_ms: compileMs,
    compile_cpu_ms: compileCpuMs,
    first_step_ms: firstStepMs,
    start_to_first_step_ms: startToFirstStepMs,
    // ORT sessions built by the optimizer vs loaded from the compile cache, in this process
    sessions_optimized: ortCompileStats().optimized,
    sessions_from_cache: ortCompileStats().fromCache,
    // ORT session creation (cache reads included): in compile_ms, or with static shapes in first_step_ms
    session_create_ms: ortCreateTime().wallMs,
    session_create_cpu_ms: ortCreateTime().cpuMs,
    trainable_params: trainable,
    ...switchFields,
    loss,
    threads,
    cpu: cpus()[0]?.model ?? "unknown",
    date: new Date().toISOString(),
  };
}

/**
 * Start-up cost: runs the same benchmark in two fresh processes sharing a new, empty compile cache
 * (PEFTKIT_CACHE), so the first is cold and the second warm, and reports process start to the end
 * of the first training step for each, with its parts. The random weights of a config-only model
 * are generated in-process (weights_ms); a model loaded from disk pays its file read instead.
 */
export async function runStartupBench(o: TrainBenchOptions): Promise<Record<string, unknown>> {
  const cli = resolve(dirname(fileURLToPath(import.meta.url)), "../src/cli/main.js");
  const dir = mkdtempSync(join(tmpdir(), "peftkit-startup-"));
  const args = ["bench", "train", "--config", o.config, "--method", o.method, "--r", String(o.r), "--target", o.target.join(",")];
  args.push("--batch", String(o.batch), "--seq", String(o.seq), "--steps", "1", "--peak", "1", "--json");
  if (o.full) args.push("--full");
  if (o.lisaLayers !== undefined) args.push("--lisa-layers", String(o.lisaLayers));
  if (o.rank !== undefined) args.push("--rank", String(o.rank));
  if (o.gradientCheckpointing) args.push("--gradient-checkpointing");
  if (o.staticShapes) args.push("--static-shapes");
  if (o.threads) args.push("--threads", String(o.threads));
  const run = () => {
    const r = spawnSync(process.execPath, [cli, ...args], {
      encoding: "utf8",
      env: { ...process.env, PEFTKIT_CACHE: dir },
      maxBuffer: 1 << 24,
    });
    if (r.status !== 0) throw new Error(`peftkit ${args.join(" ")} failed:\n${r.stderr}`);
    return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}") as Record<string, number>;
  };
  try {
    const cold = run();
    const warm = run();
    const pick = (r: Record<string, number>, p: string) => ({
      [`${p}_start_to_first_step_ms`]: r.start_to_first_step_ms,
      [`${p}_weights_ms`]: r.weights_ms,
      [`${p}_compile_ms`]: r.compile_ms,
      [`${p}_compile_cpu_ms`]: r.compile_cpu_ms,
      [`${p}_first_step_ms`]: r.first_step_ms,
      [`${p}_sessions_optimized`]: r.sessions_optimized,
      [`${p}_sessions_from_cache`]: r.sessions_from_cache,
      [`${p}_session_create_ms`]: r.session_create_ms,
      [`${p}_session_create_cpu_ms`]: r.session_create_cpu_ms,
      // the loss of the step after the first: the same across cold/warm and static/dynamic shapes
      [`${p}_loss`]: r.loss,
    });
    return {
      bench: "train_startup",
      method: o.full ? "full" : o.method,
      r: o.full ? null : o.r,
      target: o.target.join(","),
      batch: o.batch,
      seq: o.seq,
      static_shapes: Boolean(o.staticShapes),
      ...pick(cold, "cold"),
      ...pick(warm, "warm"),
      // the steady step time of the warm process, to tell start-up overhead from one step's work
      step_ms: warm.step_ms,
      threads: cold.threads,
      cpu: cpus()[0]?.model ?? "unknown",
      date: new Date().toISOString(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
