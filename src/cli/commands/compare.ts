import { accessSync, constants, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import {
  type Budgets,
  COMPARE_METHODS,
  explicitConfigs,
  knobOf,
  type MethodConfig,
  nearestConfigs,
  parseBudgets,
} from "../../compare/budgets.js";
import { checkTaskData, defaultMetric } from "../../compare/check-data.js";
import { ParamCounter } from "../../compare/param-count.js";
import { makePlan, type PlannedRun, type RunSettings } from "../../compare/plan.js";
import { runPool, threadsPerJob } from "../../compare/pool.js";
import { writeReport } from "../../compare/report.js";
import { appendRow, readRows, repairRows } from "../../compare/rows.js";
import { executeRun, RunFailedError } from "../../compare/runner.js";
import { effectiveSettings } from "../../compare/settings.js";
import { builtInSuites, resolveSuite } from "../../compare/suite.js";
import { CompareError, type CompareTask, TASK_METRICS, TASK_NAME, type TaskMetric } from "../../compare/task.js";
import { faultPoint } from "../../io/fault.js";
import { loadConfig } from "../../io/hf-folder.js";
import { usablePositions } from "../../models/positions.js";
import { DATA_FORMATS } from "../../train/data/index.js";
import { type CommandSpec, type Flags, UsageError } from "../args.js";

/**
 * Default peak learning rates per method family for short runs on small models (see docs/compare.md):
 * low-rank adapters 2e-3, bottleneck adapters 1e-3, scaling/bias/norm methods and soft prompts 5e-2,
 * full fine-tuning 3e-4 (measured on models/wordnet-llama, 30-step runs; docs/compare.md has the figures);
 * LoHa and LoKr 2e-2 (kind-of, 100 steps: they learn slowly at LoRA's rate).
 */
export const DEFAULT_LR: Record<string, number> = {
  lora: 2e-3,
  dora: 2e-3,
  rslora: 2e-3,
  pissa: 2e-3,
  // Not measured yet: the low-rank default (LoRA-SB's authors sweep 1e-4 to 5e-3 on GLUE).
  hut: 2e-3,
  soka: 2e-3,
  lora_sb: 2e-3,
  corda: 2e-3,
  loha: 2e-2,
  lokr: 2e-2,
  adapter: 1e-3,
  ia3: 5e-2,
  ssf: 5e-2,
  bitfit: 5e-2,
  ln_tuning: 5e-2,
  prompt: 5e-2,
  prefix: 5e-2,
  hra: 1e-2,
  vera: 5e-2,
  oft: 2e-3,
  boft: 2e-3,
  // Measured on kind-of (100 steps, batch 16, 1 seed; docs/methods/svfit.md, loldu.md).
  svfit: 5e-1,
  kasa: 2e-3,
  loldu: 5e-2,
  // A 30-step trial on models/wordnet-llama (batch 8, target_r 8, init_r 12): loss 10.04 at 2e-3,
  // 6.61 at 1e-2, 1.65 at 3e-2 (LoRA at 2e-3: 1.29). E starts at 0 and A, B at N(0, 0.02²): the
  // update grows from a product of three small factors. Not measured on the suite yet.
  adalora: 2e-2,
  // Not measured: AdaLoRA's (the same zero-E start).
  increlora: 2e-2,
  // Measured on kind-of (100 steps, batch 16, 1 seed; docs/methods/fourierft.md).
  fourierft: 2e-1,
  // Measured on kind-of (100 steps, batch 16, 1 seed; docs/methods/triadaptlora.md).
  triadaptlora: 1e-2,
  // Not measured yet: LoRA's (both train LoRA-style factors).
  pego: 2e-3,
  lora_ggpo: 2e-3,
  // kind-of, 100 steps, batch 16, 1 seed (docs/methods/loca.md): exact match 0.01 at 5e-3 (the
  // authors' GLUE coefficient lr), 0.235 at 5e-2, 0.255 at 2e-1 (LoRA r=8 all-linear at 2e-3: 0.40).
  loca: 2e-1,
  // The authors' 1e-3 over ~6k ViT steps, scaled to a few hundred steps; at 1e-3 the kind-of
  // loss did not move in 37 steps, at 2e-2 it fell 9.4 → 3.1 in 30 (docs/methods/snell.md).
  snell: 2e-2,
  snella: 2e-2,
  // kind-of, 100 steps, batch 16, 1 seed (docs/methods/sft.md): exact match 0.02 at 3e-4, 0.22
  // at 2e-3, 0.395 at 1e-2, 0.355 at 3e-2 (LoRA r=8 all-linear at 2e-3: 0.40).
  spiel: 1e-2,
  // kind-of, 100 steps, batch 16, 1 seed (docs/methods/spt.md): exact match 0.28 at 2e-3, 0.39 at 1e-2.
  spt: 1e-2,
  // Measured on kind-of (100 steps, batch 16, 1 seed; docs/methods/sara.md, id3.md).
  sara: 3e-2,
  id3: 3e-2,
  // kind-of, 100 steps, batch 16, 1 seed (docs/methods/lisa.md, hft.md): LISA γ=2 exact match 0.51
  // at 3e-4, 0.61 at 1e-3, 0.605 at 3e-3; HFT 0.29 at 3e-4, 0.57 at 1e-3, 0.615 at 3e-3, 0.60 at 1e-2.
  lisa: 1e-3,
  hft: 3e-3,
  // kind-of, 100 steps (50 full + 50 sparse), batch 16, 1 seed (docs/methods/lt_sft.md): exact
  // match 0.000 at 3e-4, 0.005 at 1e-3, 0.185 at 1e-2, 0.265 at 3e-2, 0.270 at 1e-1 (eval loss 1.39 vs 1.42).
  lt_sft: 3e-2,
  // kind-of, 100 steps, batch 16, 1 seed, CLI defaults (14,080 values on wordnet-llama;
  // docs/methods/s2ft.md): exact match 0.125 at 1e-2, 0.215 at 5e-2, 0.275 at 2e-1, 0.28 at 5e-1.
  s2ft: 2e-1,
  // kind-of, 100 steps (20 estimation + 80 pruned), batch 16, 1 seed (docs/methods/light_peft.md): exact
  // match 0.09 at 2e-3, 0.165 at 5e-3, 0.34 at 1e-2, 0.155 at 3e-2 (LoRA r=8 all-linear, unpruned, at 2e-3: 0.40).
  light_peft: 1e-2,
  // kind-of, 100 steps, batch 16, 1 seed, CLI defaults (1 of wordnet-llama's 4 layers per step;
  // docs/methods/ist.md): exact match 0.165 at 2e-3, 0.275 at 5e-3, 0.31 at 1e-2, 0.08 at 2e-2. At
  // compare's 300 steps 1e-2 diverges (kind-of 0.355, chat-kind 0.135) where 3e-3 gives 0.51 / 0.43.
  ist: 3e-3,
  // kind-of, 100 steps, batch 16, 1 seed (docs/methods/pat.md): exact match 0.375 at 5e-4, 0.465
  // at 2e-3, 0.20 at 5e-3, 0.08 at 1e-2 (keep_dim 192 of 256; the pruned model scores the same).
  pat: 2e-3,
  // kind-of, 100 steps, batch 16, 1 seed, r 16, all-linear, T 200 (docs/methods/gradnorm_lorp.md):
  // exact match 0.40 at 1e-3, 0.60 at 3e-3, 0.56 at 1e-2 (eval loss 1.17, 0.80, 0.71).
  gradnorm_lorp: 3e-3,
  // kind-of, 100 steps, batch 16, 1 seed, attention q/k/v/o masked (docs/methods/ramt.md): exact
  // match 0.355 at 1e-3, 0.51 at 1e-2, 0.53 at 3e-2, 0.505 at 1e-1.
  ramt: 3e-2,
  // kind-of, 100 steps, batch 16, 1 seed, CLI defaults (r 16, α 32, N 16 on q, v: 57,472 values;
  // docs/methods/dsee.md): exact match 0.195 at 2e-3, 0.245 at 5e-3, 0.27 at 1e-2, 0.12 at 3e-2.
  dsee: 1e-2,
  // kind-of, 300 steps, batch 16, 1 seed, CLI defaults (r 8, 4 skills, 1 split, all-linear; one task, so
  // n_tasks 1; docs/methods/poly.md): exact match 0.57 at 5e-3, 0.625 at 1e-2, 0.675 at 2e-2, 0.215 at 4e-2. Its
  // scaling is 1/r (no alpha), 16× below the CLI LoRA's 2: hence the higher rate.
  poly: 2e-2,
  // kind-of, 300 steps, batch 16, 1 seed (docs/methods/mezo.md): eval loss from 9.46 (base) to
  // mezo_lora 8.98 / 8.28 / 8.44 at 1e-3 / 1e-2 / 3e-2 (exact match 0: ZO needs far more than 300
  // steps; `--max-steps` gives longer rows). mezo (all weights): 9.27 / 8.88 at 1e-5 / 3e-5.
  // sparse_mezo takes mezo's rate (measured only at 1e-5 for 100 steps: 9.45).
  mezo: 3e-5,
  sparse_mezo: 3e-5,
  mezo_lora: 1e-2,
  // kind-of, 300 steps, batch 16, 1 seed, CLI defaults (1 bit, Lloyd–Max, r 8 all-linear, s 1;
  // docs/methods/lowbit.md): exact match 0.435 at 1e-3, 0.655 at 3e-3, 0.625 at 1e-2.
  lowbit: 3e-3,
  full: 3e-4,
  // Full fine-tuning's rate: graft rows fine-tune fully, then graft (docs/methods/graft.md).
  graft: 3e-4,
};

export const compareCommand: CommandSpec = {
  name: "compare",
  summary: "Compare PEFT methods on a suite of tasks or your own data: a JSONL row per run, report.md with mean ± std and Pareto plots.",
  usage: "peftkit compare (--suite NAME|FILE.yaml | --model DIR --data FILE --eval-data FILE) --output-dir DIR [options]",
  flags: [
    {
      name: "suite",
      type: "string",
      meta: "NAME|FILE",
      help: "a built-in suite by name, or a suite .yaml file ({name, tasks: [...]}, see docs/compare.md)",
    },
    { name: "model", type: "string", meta: "DIR", help: "your own task: the base model folder" },
    { name: "data", type: "string", meta: "FILE", help: "your own task: training data (.jsonl etc., the formats of peftkit train)" },
    { name: "eval-data", type: "string", meta: "FILE", help: "your own task: evaluation data, same format" },
    {
      name: "metric",
      type: "string",
      help: "your own task: headline metric (default: accuracy for classification, exact_match for prompt/completion, else eval_loss)",
      choices: TASK_METRICS,
    },
    { name: "format", type: "string", help: "your own task: record format (default: detected)", choices: DATA_FORMATS },
    { name: "task-name", type: "string", meta: "NAME", help: "your own task: its name in rows and the report", default: "task" },
    {
      name: "tasks",
      type: "list",
      meta: "LIST",
      help: "only these tasks of the suite, comma-separated (default: all)",
    },
    {
      name: "methods",
      type: "list",
      meta: "LIST",
      help: `methods to compare, comma-separated: ${COMPARE_METHODS.join(", ")} (full = full fine-tuning; graft = full fine-tuning, then grafting at 1%)`,
      default: [...COMPARE_METHODS],
    },
    {
      name: "budgets",
      type: "string",
      meta: "SPEC",
      help: 'configurations: "r=4,8,16;tokens=10,20;bottleneck=16,64" or "params=10k,100k" (nearest configuration per method)',
    },
    {
      name: "jobs",
      type: "int",
      meta: "N",
      help: "runs at once, each in its own process with floor(cores / N) threads unless --threads is given",
      default: 1,
      min: 1,
      max: 64,
    },
    { name: "seeds", type: "int", meta: "N", help: "seeds per configuration (0..N-1)", default: 1, min: 1, max: 1000 },
    { name: "max-steps", type: "int", meta: "N", help: "optimizer steps per run", default: 100, min: 1, max: 10_000_000 },
    {
      name: "time-budget",
      type: "number",
      meta: "S",
      help: "stop each run's training after S seconds (then evaluate)",
      exclusiveMin: 0,
      max: 604_800,
    },
    {
      name: "warmup",
      type: "number",
      meta: "N",
      help: "linear warmup of every run: steps (>= 1) or a fraction of --max-steps (< 1); post-LayerNorm encoders collapse to one class without it",
      default: 0.1,
      min: 0,
      max: 10_000_000,
    },
    { name: "batch-size", type: "int", meta: "N", help: "examples per step", default: 8, min: 1, max: 65_536 },
    {
      name: "max-length",
      type: "int",
      meta: "N",
      help: "longest example in tokens (at most the model's positions: lower per task if needed)",
      default: 256,
      min: 1,
      max: 1_000_000,
    },
    {
      name: "lr",
      type: "number",
      meta: "LR",
      help: "peak learning rate for every method (default: per method family, see docs/compare.md)",
      exclusiveMin: 0,
      max: 10,
    },
    {
      name: "output-dir",
      type: "string",
      meta: "DIR",
      help: "where rows.jsonl, report.md, plots/ and runs/ go; rerun with the same arguments to resume",
      required: true,
    },
    {
      name: "calibration-data",
      type: "string",
      meta: "FILE",
      help: "methods that initialise from data (corda, lora_sb, spt): the file to calibrate on (default: each task's training file)",
    },
    {
      name: "calibration-samples",
      type: "int",
      meta: "N",
      help: "examples of the calibration file to use (default: the method's, 256 for corda, 170 for lora_sb, 512 for spt)",
      min: 1,
      max: 10_000_000,
    },
    { name: "report-only", type: "boolean", help: "only regenerate report.md and the plots from rows.jsonl" },
    { name: "dry-run", type: "boolean", help: "print the planned runs (ids, learning rates, what is already done) and stop" },
  ],
  examples: [
    "peftkit compare --suite suite.yaml --methods lora,ia3,prompt,full --budgets 'r=4,16;tokens=10,40' --seeds 3 --output-dir cmp",
    "peftkit compare --model models/wordnet-llama --data train.jsonl --eval-data eval.jsonl --methods lora,dora --budgets params=50k --output-dir cmp",
  ],
  run: (o) => runCompare(o),
};

/** The output folder, created and checked writable; one line on failure. */
function prepareOutputDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error("not a folder"), { code: "ENOTDIR" });
    accessSync(dir, constants.W_OK);
    const probe = join(dir, `.write-test-${process.pid}`);
    writeFileSync(probe, "");
    rmSync(probe);
  } catch (e) {
    throw new UsageError(`--output-dir ${dir}: not a writable folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** One compare per folder at a time: a second one would run the same ids and append twice. */
function takeLock(dir: string): () => void {
  const lock = join(dir, ".compare.lock");
  if (existsSync(lock)) {
    const pid = Number(readFileSync(lock, "utf8").trim());
    let alive = false;
    try {
      if (Number.isInteger(pid) && pid > 0) {
        process.kill(pid, 0);
        alive = pid !== process.pid;
      }
    } catch {
      alive = false;
    }
    if (alive)
      throw new UsageError(`--output-dir ${dir}: another compare (pid ${pid}) is using it; wait for it or remove ${lock} if it is gone`);
  }
  writeFileSync(lock, `${process.pid}\n`);
  return () => rmSync(lock, { force: true });
}

/** The suite's tasks named by --tasks, in the suite's order; an unknown name is an error. */
function onlyTasks(suite: { name: string; tasks: CompareTask[] }, names: string[] | undefined): { name: string; tasks: CompareTask[] } {
  if (names === undefined) return suite;
  const known = suite.tasks.map((t) => t.name);
  for (const n of names)
    if (!known.includes(n)) throw new UsageError(`--tasks: unknown task "${n}" in suite ${suite.name} (tasks: ${known.join(", ")})`);
  return { ...suite, tasks: suite.tasks.filter((t) => names.includes(t.name)) };
}

async function tasksOf(o: Flags, outputDir: string): Promise<{ name: string; tasks: CompareTask[] }> {
  const own = o.model !== undefined || o.data !== undefined || o.evalData !== undefined;
  if (o.suite !== undefined && own) throw new UsageError("give either --suite or --model/--data/--eval-data, not both");
  if (o.suite !== undefined)
    return onlyTasks(await resolveSuite(o.suite as string, join(outputDir, "data")), o.tasks as string[] | undefined);
  if (o.tasks !== undefined) throw new UsageError("--tasks picks tasks of a --suite");
  if (!own)
    throw new UsageError(
      `give --suite NAME|FILE.yaml (built-in: ${Object.keys(builtInSuites).join(", ") || "none yet"}) or --model DIR --data FILE --eval-data FILE`,
    );
  for (const f of ["model", "data", "eval-data"] as const) {
    const v = o[f === "eval-data" ? "evalData" : f];
    if (v === undefined) throw new UsageError(`--${f} is required with --model/--data/--eval-data`);
    if (!existsSync(v as string)) throw new UsageError(`--${f} ${v}: no such file or folder`);
  }
  const name = o.taskName as string;
  if (!TASK_NAME.test(name)) throw new UsageError(`--task-name "${name}" must match [a-z0-9_-]+`);
  const task: CompareTask = {
    name,
    description: "",
    model: resolve(o.model as string),
    train: resolve(o.data as string),
    eval: resolve(o.evalData as string),
    metric: (o.metric as TaskMetric | undefined) ?? "eval_loss",
    ...(o.format ? { format: o.format as string } : {}),
  };
  if (o.metric === undefined) task.metric = defaultMetric(checkTaskData(task));
  return { name, tasks: [task] };
}

async function configsFor(
  tasks: readonly CompareTask[],
  methods: readonly string[],
  b: Budgets,
): Promise<(t: CompareTask, m: string) => { config: MethodConfig; budget: string | null }[]> {
  if (!b.params.length) return (_t, m) => explicitConfigs(m, b).map((config) => ({ config, budget: null }));
  const counter = new ParamCounter();
  const chosen = new Map<string, { config: MethodConfig; budget: string | null }[]>();
  try {
    for (const t of tasks)
      for (const m of methods) {
        const knob = knobOf(m);
        if (knob === null) {
          chosen.set(`${t.name}\u0000${m}`, [{ config: { knob: null, value: null }, budget: null }]);
          continue;
        }
        const counts = await counter.candidates(t.model, m);
        const picks = b.params.map((target) => ({ target, value: nearestConfigs(counts, [target])[0] }));
        const seen = new Map<number, string[]>();
        for (const p of picks) seen.set(p.value, [...(seen.get(p.value) ?? []), `params=${p.target}`]);
        chosen.set(
          `${t.name}\u0000${m}`,
          [...seen].map(([value, budgets]) => ({ config: { knob, value }, budget: budgets.join(",") })),
        );
      }
  } finally {
    await counter.release();
  }
  return (t, m) => chosen.get(`${t.name}\u0000${m}`) ?? [];
}

export async function runCompare(o: Flags): Promise<number> {
  const outputDir = resolve(o.outputDir as string);
  const rowsPath = join(outputDir, "rows.jsonl");
  if (o.reportOnly) {
    if (!existsSync(rowsPath)) throw new UsageError(`--report-only: ${rowsPath} does not exist`);
    const { rows } = readRows(rowsPath);
    writeReport(outputDir, rows, { command: "peftkit compare --report-only" });
    console.log(`wrote ${join(outputDir, "report.md")} from ${rows.length} row(s)`);
    return 0;
  }
  const methods = o.methods as string[];
  if (!methods.length) throw new UsageError("--methods: give at least one method");
  for (const m of methods)
    if (!(COMPARE_METHODS as readonly string[]).includes(m))
      throw new UsageError(`--methods: unknown method "${m}" (methods: ${COMPARE_METHODS.join(", ")})`);
  let budgets: Budgets;
  try {
    budgets = parseBudgets(o.budgets as string | undefined);
  } catch (e) {
    throw e instanceof CompareError ? new UsageError(e.message) : e;
  }
  if (o.calibrationData !== undefined && !existsSync(o.calibrationData as string))
    throw new UsageError(`--calibration-data ${o.calibrationData}: no such file or folder`);
  prepareOutputDir(outputDir);
  let suite: { name: string; tasks: CompareTask[] };
  try {
    suite = await tasksOf(o, outputDir);
    for (const t of suite.tasks) checkTaskData(t);
  } catch (e) {
    throw e instanceof CompareError ? new UsageError(e.message) : e;
  }
  const limits = new Map(suite.tasks.map((t) => [t.name, usablePositions(loadConfig(t.model))?.limit ?? null]));
  const settings = (t: CompareTask, m: string, c: MethodConfig): RunSettings =>
    effectiveSettings(
      t,
      {
        lr: (o.lr as number | undefined) ?? DEFAULT_LR[m],
        maxSteps: o.maxSteps as number,
        runSeconds: (o.timeBudget as number | undefined) ?? null,
        batchSize: o.batchSize as number,
        maxLength: o.maxLength as number,
        warmup: o.warmup as number,
      },
      limits.get(t.name) ?? null,
      c.knob === "tokens" ? (c.value ?? 0) : 0,
    );
  const plan = makePlan({
    tasks: suite.tasks,
    methods: [...new Set(methods)],
    configs: await configsFor(suite.tasks, methods, budgets),
    seeds: o.seeds as number,
    settings,
  });
  if (o.dryRun) {
    const done = new Set(readRows(rowsPath).rows.map((r) => r.run_id));
    for (const r of plan)
      console.log(
        `${done.has(r.runId) ? "done" : "todo"} ${r.runId} lr=${r.settings.lr} steps=${r.settings.maxSteps} batch=${r.settings.batchSize} max_length=${r.settings.maxLength}${r.budget ? ` (${r.budget})` : ""}`,
      );
    return 0;
  }
  const release = takeLock(outputDir);
  let stopping = false;
  const onInt = () => {
    if (stopping) process.exit(130);
    stopping = true;
    // A Ctrl-C from the terminal reaches the run's process too: it stops, and gets no row.
    process.stderr.write(
      "\ninterrupt: stopping; rerun the same command to resume (the current run is redone). Ctrl-C again quits at once\n",
    );
  };
  process.on("SIGINT", onInt);
  const failures: string[] = [];
  try {
    const { rows, torn } = repairRows(rowsPath);
    if (torn) process.stderr.write(`${rowsPath}: dropped a torn last line (a run killed while writing it; it is redone)\n`);
    const done = new Set(rows.map((r) => r.run_id));
    const todo = plan.filter((r) => !done.has(r.runId));
    const kept = rows.filter((r) => !plan.some((p) => p.runId === r.run_id)).length;
    console.log(
      `compare ${suite.name}: ${plan.length} run(s) planned (${suite.tasks.length} task(s) × ${methods.length} method(s) × configurations × ${o.seeds} seed(s)); ${plan.length - todo.length} already done, ${todo.length} to run${kept ? `; ${kept} row(s) of other runs kept` : ""}`,
    );
    const jobs = o.jobs as number;
    const threads = (o.threads as number | undefined) ?? (jobs > 1 ? threadsPerJob(availableParallelism(), jobs) : undefined);
    let finished = 0;
    // One whole line per finished run: with --jobs > 1 runs end in any order.
    const say = (run: PlannedRun, what: string) =>
      console.log(`[${++finished}/${todo.length}] ${run.runId} (lr ${run.settings.lr}) ... ${what}`);
    await runPool(
      todo,
      jobs,
      () => stopping,
      async (run) => {
        try {
          // Only this process appends to rows.jsonl, one whole line per run, so runs ending together cannot interleave.
          const row = await executeRun(run, {
            outputDir,
            threads,
            calibrationData: o.calibrationData as string | undefined,
            calibrationSamples: o.calibrationSamples as number | undefined,
          });
          appendRow(rowsPath, row);
          faultPoint("compare-row-written");
          say(
            run,
            `${row.metric} ${row.metric_value.toFixed(4)}, ${row.trainable_params.toLocaleString("en-US")} trainable, ${row.wall_s.toFixed(1)} s, ${row.peak_rss_mb} MB`,
          );
        } catch (e) {
          if (!(e instanceof RunFailedError)) throw e;
          if (stopping) {
            say(run, "interrupted");
            return;
          }
          say(run, "failed");
          process.stderr.write(`${e.message}\n`);
          failures.push(run.runId);
        }
      },
    );
  } finally {
    process.off("SIGINT", onInt);
    release();
  }
  const all = readRows(rowsPath).rows;
  const chance = Object.fromEntries(suite.tasks.map((t) => [t.name, t.chance]));
  writeReport(outputDir, all, {
    title: `peftkit compare: ${suite.name}`,
    chance,
    planned: plan.map((r: PlannedRun) => r.runId),
    command: `peftkit compare ${process.argv.slice(3).join(" ")}`,
  });
  console.log(`wrote ${join(outputDir, "report.md")} (${all.length} row(s) in ${rowsPath})`);
  if (failures.length) {
    process.stderr.write(
      `${failures.length} run(s) failed (see their log.txt under ${join(outputDir, "runs")}); rerun the same command to retry them\n`,
    );
    return 1;
  }
  return stopping ? 130 : 0;
}
