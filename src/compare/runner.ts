/**
 * Runs one planned run in a child process (worker.ts) and turns its result into a row. The run's
 * folder, output-dir/runs/<run_id>/, is wiped first: a folder without a row is an unfinished run.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileAtomic } from "../io/atomic-write.js";
import { faultPoint } from "../io/fault.js";
import { loadConfig } from "../io/hf-folder.js";
import { CALIBRATION_SAMPLES } from "../train/methods.js";
import { zoCompareArgs } from "../train/zo/compare.js";
import { PACKAGE_ROOT } from "../util/paths.js";
import { endOrphan, recordWorkerPid } from "./orphan.js";
import type { PlannedRun } from "./plan.js";
import type { CompareRow } from "./rows.js";
import { CompareError, metricKey } from "./task.js";
import type { WorkerResult, WorkerSpec } from "./worker.js";

const WORKER = fileURLToPath(new URL("./worker.js", import.meta.url));

export const PEFTKIT_VERSION: string = (() => {
  try {
    return String((JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version);
  } catch {
    return "unknown";
  }
})();

export interface RunnerOptions {
  outputDir: string;
  threads?: number;
  logSteps?: number;
  /** Methods that initialise from data (corda): their --calibration-data; default the task's training file. */
  calibrationData?: string;
  calibrationSamples?: number;
}

/** A run that did not finish; the compare goes on with the others and a rerun retries it. */
export class RunFailedError extends CompareError {}

/**
 * Targets compare names where PEFT has no default: LN tuning knows no BERT-family layer norms
 * (PEFT, like `peftkit train`, then asks for target_modules), so on those encoders it tunes every
 * LayerNorm (embeddings, attention output, block output), the analogue of its decoder defaults.
 */
const COMPARE_TARGETS: Record<string, Record<string, string>> = { ln_tuning: { bert: "LayerNorm", roberta: "LayerNorm" } };

/** The `--target` compare adds for a method on a model, or null (the method's own default). */
export function compareTarget(method: string, modelDir: string): string | null {
  const modelType = String(loadConfig(modelDir).model_type);
  return COMPARE_TARGETS[method]?.[modelType] ?? null;
}

const KNOB_FLAG = { r: "--r", tokens: "--num-virtual-tokens", bottleneck: "--bottleneck-size" } as const;

/** The `peftkit train` arguments of a run (the output folder is added by the worker). */
export function trainArgs(run: PlannedRun, o: RunnerOptions): string[] {
  const s = run.settings;
  const method = zoCompareArgs(run.method) ?? ["--method", run.method];
  const a = ["--model", run.task.model, "--data", run.task.train, ...method, "--seed", String(run.seed)];
  a.push("--lr", String(s.lr), "--max-steps", String(s.maxSteps), "--batch-size", String(s.batchSize), "--max-length", String(s.maxLength));
  a.push("--warmup", String(s.warmup));
  // No evaluation inside training (the worker evaluates with peftkit eval) and one final save.
  a.push("--eval-fraction", "0", "--save-steps", "0", "--log-steps", String(o.logSteps ?? 10));
  if (run.config.knob !== null) a.push(KNOB_FLAG[run.config.knob], String(run.config.value));
  if (run.extraArgs) a.push(...run.extraArgs);
  const target = compareTarget(run.method, run.task.model);
  if (target !== null) a.push("--target", target);
  if (run.task.format) a.push("--format", run.task.format);
  if (s.runSeconds !== null) a.push("--max-seconds", String(s.runSeconds));
  if (o.threads !== undefined) a.push("--threads", String(o.threads));
  if (run.method in CALIBRATION_SAMPLES) {
    a.push("--calibration-data", o.calibrationData ? resolve(o.calibrationData) : run.task.train);
    if (o.calibrationSamples !== undefined) a.push("--calibration-samples", String(o.calibrationSamples));
  }
  return a;
}

function lastLines(file: string, n: number): string {
  if (!existsSync(file)) return "";
  const lines = readFileSync(file, "utf8").trimEnd().split("\n");
  const err = lines.filter((l) => l.startsWith("peftkit"));
  return (err.length ? err.slice(-1) : lines.slice(-n)).join(" | ");
}

export async function executeRun(run: PlannedRun, o: RunnerOptions): Promise<CompareRow> {
  const runDir = resolve(o.outputDir, "runs", run.runId);
  await endOrphan(runDir, WORKER);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const spec: WorkerSpec = {
    kind: run.method === "full" || run.method === "graft" ? run.method : "peft",
    runDir,
    trainArgs: run.method === "full" || run.method === "graft" ? [] : trainArgs(run, o),
    model: run.task.model,
    train: run.task.train,
    eval: run.task.eval,
    format: run.task.format,
    maxLength: run.settings.maxLength,
    batchSize: run.settings.batchSize,
    lr: run.settings.lr,
    maxSteps: run.settings.maxSteps,
    warmup: run.settings.warmup,
    runSeconds: run.settings.runSeconds,
    seed: run.seed,
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
  };
  const specPath = join(runDir, "spec.json");
  writeFileAtomic(specPath, `${JSON.stringify(spec, null, 2)}\n`);
  const logPath = join(runDir, "log.txt");
  const log = openSync(logPath, "a");
  const startedAt = new Date();
  const t0 = performance.now();
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done, fail) => {
    const child = spawn(process.execPath, [WORKER, specPath], { stdio: ["ignore", log, log, "ipc"], env: process.env });
    // Before anything else can happen: a compare killed from here on leaves a worker a rerun can find.
    if (child.pid !== undefined) recordWorkerPid(runDir, child.pid);
    faultPoint("compare-run-spawned");
    child.on("message", (m: { phase?: string }) => {
      // A crash test kills the compare here, while the child is between training and evaluation.
      if (m?.phase === "trained") faultPoint("compare-run-trained");
    });
    child.on("error", fail);
    child.on("exit", (code, signal) => done({ code, signal }));
  });
  closeSync(log);
  const wall = (performance.now() - t0) / 1000;
  const resultPath = join(runDir, "result.json");
  if (exit.code !== 0 || !existsSync(resultPath)) {
    const why = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
    throw new RunFailedError(`run ${run.runId} failed (${why}): ${lastLines(logPath, 2) || "no output"} (log: ${logPath})`);
  }
  const r = JSON.parse(readFileSync(resultPath, "utf8")) as WorkerResult;
  const key = metricKey(run.task.metric);
  const value = r.eval_metrics[key];
  if (typeof value !== "number")
    throw new RunFailedError(
      `run ${run.runId}: the evaluation gave no ${key} for task ${run.task.name} (it gave ${Object.keys(r.eval_metrics).join(", ")}); check the task's metric against its data format`,
    );
  return {
    run_id: run.runId,
    task: run.task.name,
    method: run.method,
    config: run.config.knob === null ? "default" : `${run.config.knob}=${run.config.value}`,
    budget: run.budget,
    seed: run.seed,
    trainable_params: r.trainable_params,
    total_params: r.total_params,
    metric: run.task.metric,
    metric_value: value,
    eval_metrics: r.eval_metrics,
    wall_s: Math.round(wall * 1000) / 1000,
    train_s: Math.round(r.train_s * 1000) / 1000,
    tokens_per_s: Math.round(r.tokens_seen / Math.max(r.train_s, 1e-3)),
    peak_rss_mb: Math.round(r.max_rss_kb / 1024),
    steps: r.steps,
    lr: run.settings.lr,
    max_steps: run.settings.maxSteps,
    batch_size: run.settings.batchSize,
    max_length: run.settings.maxLength,
    warmup: run.settings.warmup,
    started_at: startedAt.toISOString(),
    finished_at: new Date().toISOString(),
    peftkit_version: PEFTKIT_VERSION,
  };
}
