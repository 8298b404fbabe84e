/**
 * One run of a compare, in a child process of its own (so its peak RSS is its own): train with
 * `peftkit train`'s command code (or full fine-tuning), evaluate with `peftkit eval`'s, then
 * write result.json. Started by runner.ts with an IPC channel; exits when the parent dies.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseFlags } from "../cli/args.js";
import { evalCommand } from "../cli/commands/eval.js";
import { trainCommand } from "../cli/commands/train.js";
import { writeFileAtomic } from "../io/atomic-write.js";
import { installNodeCompileCache } from "../io/compile-cache.js";
import { faultPoint } from "../io/fault.js";
import { SafetensorsFile } from "../io/safetensors.js";
import { CONVERTED_DIR } from "../train/run.js";
import { SELECTIVE_CONFIG_FILE } from "../train/selective-run.js";
import { fullFineTune } from "./full-run.js";
import { graftFineTune } from "./graft-run.js";
import { selectiveEval } from "./selective-eval.js";

export interface WorkerSpec {
  kind: "peft" | "full" | "graft";
  runDir: string;
  /** peft: the `peftkit train` arguments (without --output-dir). */
  trainArgs: string[];
  model: string;
  train: string;
  eval: string;
  format?: string;
  maxLength: number;
  batchSize: number;
  lr: number;
  maxSteps: number;
  /** Warmup steps (>= 1) or fraction of maxSteps (< 1). */
  warmup: number;
  runSeconds: number | null;
  seed: number;
  /** ORT intra-op threads (training and evaluation); all cores when absent. */
  threads?: number;
}

export interface WorkerResult {
  eval_metrics: Record<string, number>;
  steps: number;
  train_s: number;
  tokens_seen: number;
  trainable_params: number;
  total_params: number;
  max_rss_kb: number;
}

function numel(file: string): number {
  const f = SafetensorsFile.open(file);
  try {
    return f.entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
  } finally {
    f.close();
  }
}

function numbers(o: Record<string, unknown>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter((e): e is [string, number] => typeof e[1] === "number"));
}

async function peftRun(s: WorkerSpec): Promise<Omit<WorkerResult, "max_rss_kb">> {
  const adapterDir = join(s.runDir, "adapter");
  const code = await trainCommand.run(parseFlags([...s.trainArgs, "--output-dir", adapterDir], trainCommand));
  if (code !== 0) throw new Error(`training stopped early (exit code ${code})`);
  tell("trained");
  faultPoint("compare-worker-trained");
  // LISA/HFT: trained base tensors, not an adapter
  if (existsSync(join(adapterDir, SELECTIVE_CONFIG_FILE))) return selectiveEval(s, adapterDir);
  const evalFile = join(s.runDir, "eval.json");
  const evalArgs = [
    "--model",
    s.model,
    "--adapter",
    // PiSSA/OLoRA/CorDA adapters need their residual base; their plain-LoRA form applies to the original one.
    existsSync(join(adapterDir, CONVERTED_DIR)) ? join(adapterDir, CONVERTED_DIR) : adapterDir,
    "--data",
    s.eval,
    "--output",
    evalFile,
    "--max-length",
    String(s.maxLength),
  ];
  if (s.format) evalArgs.push("--format", s.format);
  if (s.threads !== undefined) evalArgs.push("--threads", String(s.threads));
  const ecode = await evalCommand.run(parseFlags(evalArgs, evalCommand));
  if (ecode !== 0) throw new Error(`evaluation failed (exit code ${ecode})`);
  const evalResult = JSON.parse(readFileSync(evalFile, "utf8")) as Record<string, unknown>;
  const args = JSON.parse(readFileSync(join(adapterDir, "training_args.json"), "utf8")) as {
    result: { steps: number; wallSeconds: number; tokensSeen: number; trainableParams?: number };
  };
  // The trainer's count: saved tensors a method never trains (VeRA's projections) are not in it.
  const trainable = args.result.trainableParams ?? numel(join(adapterDir, "adapter_model.safetensors"));
  return {
    eval_metrics: numbers(evalResult),
    steps: args.result.steps,
    train_s: args.result.wallSeconds,
    tokens_seen: args.result.tokensSeen,
    trainable_params: trainable,
    total_params: numel(join(s.model, "model.safetensors")) + trainable,
  };
}

/** Whether the compare that started this process is gone (process.send stays defined once its channel closed). */
const orphaned = (): boolean => process.send !== undefined && !process.connected;

/** Tells the compare how far the run got; a compare that is gone meanwhile ends this process. */
function tell(phase: string): void {
  if (orphaned()) process.exit(137);
  // With a callback a closed channel is reported here, not as an uncaught 'error' on process.
  process.send?.({ phase }, undefined, undefined, (e: Error | null) => {
    if (e) process.exit(137);
  });
}

async function main(): Promise<void> {
  // The compare died (killed, or Ctrl-C): stop too, so a rerun does not race an orphan.
  process.on("disconnect", () => process.exit(137));
  // It may have died while this module was loading: the channel closed then, before the handler
  // above existed, and no "disconnect" will come. Such an orphan must not start the run.
  if (orphaned()) process.exit(137);
  // Runs of a compare share their graphs' shapes often: the compile cache saves ORT's optimizer.
  installNodeCompileCache();
  const spec = JSON.parse(readFileSync(process.argv[2], "utf8")) as WorkerSpec;
  const r =
    spec.kind === "full"
      ? await fullFineTune(spec, () => tell("trained"))
      : spec.kind === "graft"
        ? await graftFineTune(spec, () => tell("trained"))
        : await peftRun(spec);
  const result: WorkerResult = { ...r, max_rss_kb: process.resourceUsage().maxRSS };
  writeFileAtomic(join(spec.runDir, "result.json"), `${JSON.stringify(result, null, 2)}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`peftkit compare run: ${msg.split("\n")[0]}\n`);
    if (process.env.PEFTKIT_COMPARE_VERBOSE && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  },
);
