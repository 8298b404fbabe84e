import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { configLabel as knobLabel, type MethodConfig } from "../../compare/budgets.js";
import { checkTaskData } from "../../compare/check-data.js";
import { trainableCount } from "../../compare/param-count.js";
import { type PlannedRun, runId, settingsHash } from "../../compare/plan.js";
import { threadsPerJob } from "../../compare/pool.js";
import { appendRow, type CompareRow, readRows, repairRows } from "../../compare/rows.js";
import { executeRun, RunFailedError } from "../../compare/runner.js";
import { effectiveSettings } from "../../compare/settings.js";
import { resolveSuite } from "../../compare/suite.js";
import { CompareError, type CompareTask, higherIsBetter } from "../../compare/task.js";
import { writeFileAtomic } from "../../io/atomic-write.js";
import { faultPoint } from "../../io/fault.js";
import { loadConfig } from "../../io/hf-folder.js";
import { usablePositions } from "../../models/positions.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { DEFAULT_SPACE_YAML } from "../../search/default-space.js";
import { cost, type Problem, runSearch, type SearchMethod, type SearchOptions, SearchStateError } from "../../search/engine.js";
import { type ReportContext, type SearchRun, writeSearchReport } from "../../search/report.js";
import {
  configKey,
  configLabel,
  extraTrainArgs,
  parseSpace,
  type SearchConfig,
  type SearchSpace,
  SearchSpaceError,
  targetOf,
  totalCount,
} from "../../search/space.js";
import { appendState, readState, type StateRow } from "../../search/state.js";
import { syntheticProblem, syntheticScore } from "../../search/synthetic.js";
import { methodConfig } from "../../train/methods.js";
import { PeftConfigError } from "../../tuners/config.js";
import { type CommandSpec, type Flags, UsageError } from "../args.js";
import { headFor } from "../load.js";
import { DEFAULT_LR } from "./compare.js";

const KNOB_OPTION = { r: "r", tokens: "numVirtualTokens", bottleneck: "bottleneckSize" } as const;
const KNOB_TRAIN_FLAG = { r: "r", tokens: "num-virtual-tokens", bottleneck: "bottleneck-size" } as const;

export const searchCommand: CommandSpec = {
  name: "search",
  summary: "AutoPEFT: multi-objective search (score vs trainable parameters) over methods, sizes, targets and layers, on top of compare.",
  usage: "peftkit search [--suite NAME|FILE --task NAME] [--space FILE.yaml] --method bo|random --budget N --output-dir DIR [options]",
  flags: [
    {
      name: "suite",
      type: "string",
      meta: "NAME|FILE",
      help: "a built-in suite or a suite .yaml (as peftkit compare)",
      default: "wordnet-bench",
    },
    {
      name: "task",
      type: "string",
      meta: "NAME",
      help: "the suite's task to search on (default: kind-of if the suite has it, else its first task)",
    },
    { name: "space", type: "string", meta: "FILE", help: "the search space YAML (default: the built-in space, docs/search.md)" },
    {
      name: "method",
      type: "string",
      help: "bo: GP + expected hypervolume improvement; random: random search (same initial points)",
      default: "bo",
      choices: ["bo", "random"],
    },
    {
      name: "budget",
      type: "int",
      meta: "N",
      help: "evaluations in total, the initial ones included (rerun with a larger N to extend)",
      default: 20,
      min: 1,
      max: 100_000,
    },
    { name: "n-init", type: "int", meta: "N", help: "initial random configurations (default: max(2, budget / 5))", min: 1, max: 100_000 },
    { name: "seed", type: "int", meta: "N", help: "seed of the proposals (the initial points and the search)", default: 0, min: 0 },
    { name: "train-seed", type: "int", meta: "N", help: "training seed of every evaluation", default: 0, min: 0 },
    {
      name: "jobs",
      type: "int",
      meta: "N",
      help: "evaluations at once = the batch size q of the proposals (pending points); part of the search state",
      default: 1,
      min: 1,
      max: 64,
    },
    {
      name: "max-steps",
      type: "int",
      meta: "N",
      help: "optimizer steps per evaluation (AutoPEFT's low-cost proxy)",
      default: 100,
      min: 1,
      max: 10_000_000,
    },
    { name: "batch-size", type: "int", meta: "N", help: "examples per step", default: 16, min: 1, max: 65_536 },
    { name: "max-length", type: "int", meta: "N", help: "longest example in tokens", default: 256, min: 1, max: 1_000_000 },
    {
      name: "warmup",
      type: "number",
      meta: "N",
      help: "linear warmup: steps (>= 1) or a fraction of --max-steps (< 1)",
      default: 0.1,
      min: 0,
      max: 10_000_000,
    },
    {
      name: "eval-examples",
      type: "int",
      meta: "N",
      help: "evaluate each configuration on the first N examples of the task's evaluation file (a cheaper proxy; the task is named <task>-evalN)",
      min: 1,
    },
    {
      name: "lr",
      type: "number",
      meta: "LR",
      help: "learning rate of every method (default: compare's per-method rate)",
      exclusiveMin: 0,
      max: 10,
    },
    {
      name: "output-dir",
      type: "string",
      meta: "DIR",
      help: "rows.jsonl, runs/, the search state, search.md and front/; rerun to resume",
      required: true,
    },
    {
      name: "synthetic",
      type: "boolean",
      help: "score configurations with a synthetic formula instead of training (a quick look at the search)",
    },
  ],
  examples: [
    "peftkit search --suite wordnet-bench --task kind-of --method bo --budget 20 --max-steps 100 --output-dir search",
    "peftkit search --suite wordnet-bench --task kind-of --method random --budget 20 --max-steps 100 --output-dir search",
    "peftkit search --space space.yaml --method bo --budget 40 --n-init 8 --jobs 2 --output-dir search",
  ],
  run: (o) => runSearchCommand(o),
};

function hash6(v: unknown): string {
  return createHash("sha256").update(JSON.stringify(v)).digest("hex").slice(0, 6);
}

function loadSpace(o: Flags, numLayers: number): { space: SearchSpace; where: string } {
  const file = o.space as string | undefined;
  const where = file ?? "built-in space";
  let raw: unknown;
  if (file === undefined) raw = parseYaml(DEFAULT_SPACE_YAML);
  else {
    if (!existsSync(file)) throw new UsageError(`--space ${file}: no such file`);
    try {
      raw = parseYaml(readFileSync(file, "utf8"));
    } catch (e) {
      throw new UsageError(`--space ${file}: not valid YAML: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  try {
    return { space: parseSpace(raw, where, numLayers), where };
  } catch (e) {
    throw e instanceof SearchSpaceError ? new UsageError(e.message) : e;
  }
}

async function pickTask(o: Flags, outputDir: string): Promise<CompareTask> {
  let suite: { name: string; tasks: CompareTask[] };
  try {
    suite = await resolveSuite(o.suite as string, join(outputDir, "data"));
  } catch (e) {
    throw e instanceof CompareError ? new UsageError(e.message) : e;
  }
  const names = suite.tasks.map((t) => t.name);
  const want = (o.task as string | undefined) ?? (names.includes("kind-of") ? "kind-of" : names[0]);
  const task = suite.tasks.find((t) => t.name === want);
  if (!task) throw new UsageError(`--task: unknown task "${want}" in suite ${suite.name} (tasks: ${names.join(", ")})`);
  try {
    checkTaskData(task);
  } catch (e) {
    throw e instanceof CompareError ? new UsageError(e.message) : e;
  }
  const n = o.evalExamples as number | undefined;
  if (n === undefined) return task;
  const lines = readFileSync(task.eval, "utf8")
    .split("\n")
    .filter((l) => l.trim());
  if (n > lines.length) throw new UsageError(`--eval-examples ${n}: the evaluation file of ${task.name} has ${lines.length} examples`);
  const name = `${task.name}-eval${n}`;
  const path = join(outputDir, "data", `${name}.jsonl`);
  mkdirSync(join(outputDir, "data"), { recursive: true });
  writeFileAtomic(path, `${lines.slice(0, n).join("\n")}\n`);
  return { ...task, name, eval: path };
}

/** Trainable parameters of configurations on the task's model, by attaching each (no training), cached. */
class ConfigCounter {
  private readonly cache = new Map<string, number>();
  private constructor(
    private readonly model: PreTrainedModel,
    private readonly space: SearchSpace,
  ) {}

  static async open(modelDir: string, space: SearchSpace): Promise<ConfigCounter> {
    return new ConfigCounter(await PreTrainedModel.load(modelDir, headFor(modelDir)), space);
  }

  peftConfig(c: SearchConfig): Record<string, unknown> {
    const knob = this.space.methods.find((m) => m.method === c.method)?.knob ?? null;
    const t = targetOf(this.space, c);
    return methodConfig(c.method, {
      ...(knob && c.size !== null ? { [KNOB_OPTION[knob]]: c.size } : {}),
      ...(t !== undefined ? { target: t === "all-linear" ? ["all-linear"] : t } : {}),
      ...(c.layers !== null ? { layersToTransform: c.layers } : {}),
      taskType: this.model.head === "causal_lm" ? "CAUSAL_LM" : "SEQ_CLS",
    });
  }

  count(c: SearchConfig): number {
    const k = configKey(c);
    let n = this.cache.get(k);
    if (n === undefined) {
      n = trainableCount(this.model, this.peftConfig(c));
      this.cache.set(k, n);
    }
    return n;
  }

  /**
   * Counts the largest size of every method and target choice on every layer, so that a target the
   * model does not have fails here, naming the space field; returns the largest count.
   */
  checkAll(where: string): number {
    let max = 0;
    for (const m of this.space.methods) {
      const choices = m.targets ? m.targets.map((_, i) => i) : [null];
      if (m.knob && !m.sizes.length) continue;
      for (const target of choices) {
        const c: SearchConfig = { method: m.method, size: m.knob ? m.sizes[m.sizes.length - 1] : null, target, layers: null };
        try {
          max = Math.max(max, this.count(c));
        } catch (e) {
          if (!(e instanceof PeftConfigError)) throw e;
          const field = target === null ? `methods.${m.method}` : `methods.${m.method}.target_modules[${target}]`;
          throw new UsageError(`${where}: ${field}: ${e.message}`);
        }
      }
    }
    return max;
  }

  release(): Promise<void> {
    return this.model.release();
  }
}

export async function runSearchCommand(o: Flags): Promise<number> {
  const outputDir = resolve(o.outputDir as string);
  mkdirSync(outputDir, { recursive: true });
  const method = o.method as SearchMethod;
  const budget = o.budget as number;
  const nInit = (o.nInit as number | undefined) ?? Math.max(2, Math.round(budget / 5));
  const jobs = o.jobs as number;
  const opts: SearchOptions = { method, budget, nInit, seed: o.seed as number, batchSize: jobs };
  const trainSeed = o.trainSeed as number;
  const command = `peftkit search ${process.argv.slice(3).join(" ")}`;

  let problem: Problem;
  let evaluate: (c: SearchConfig) => Promise<{ params: number; score: number; runId?: string }>;
  let ctx: Omit<ReportContext, "command">;
  let identity: unknown;
  let release = async () => {};
  if (o.synthetic) {
    if (o.space !== undefined) throw new UsageError("--synthetic searches its own space; leave out --space");
    problem = syntheticProblem();
    evaluate = async (c) => ({ params: problem.params(c), score: syntheticScore(c) });
    ctx = {
      title: "peftkit search: synthetic problem",
      about: [`Synthetic scores and parameter counts (src/search/synthetic.ts), ${totalCount(problem.space)} configurations.`],
      metric: "score",
      reference: problem.reference,
      referenceParams: Math.round(10 ** problem.reference.cost),
      trainYaml: null,
    };
    identity = { synthetic: true, nInit, jobs };
  } else {
    // The space file's own errors come first, before the suite's data is written and the model loaded.
    loadSpace(o, 1);
    const task = await pickTask(o, outputDir);
    const modelConfig = loadConfig(task.model);
    const numLayers = Number(modelConfig.num_hidden_layers ?? 0);
    const { space, where } = loadSpace(o, numLayers);
    const counter = await ConfigCounter.open(task.model, space);
    release = () => counter.release();
    let maxParams: number;
    try {
      maxParams = counter.checkAll(where);
    } catch (e) {
      await release();
      throw e;
    }
    const hib = higherIsBetter(task.metric);
    if (!hib && space.reference.score === undefined) {
      await release();
      throw new UsageError(
        `${where}: reference.score is required for a task scored by ${task.metric} (the search maximises −${task.metric})`,
      );
    }
    const referenceParams = space.reference.params ?? Math.round(1.25 * maxParams);
    const reference = { cost: cost(referenceParams), score: space.reference.score ?? 0 };
    problem = { space, params: (c) => counter.count(c), reference };
    const limit = usablePositions(modelConfig)?.limit ?? null;
    const settingsOf = (c: SearchConfig) =>
      effectiveSettings(
        task,
        {
          lr: (o.lr as number | undefined) ?? DEFAULT_LR[c.method],
          maxSteps: o.maxSteps as number,
          runSeconds: null,
          batchSize: o.batchSize as number,
          maxLength: o.maxLength as number,
          warmup: o.warmup as number,
        },
        limit,
        c.method === "prompt" || c.method === "prefix" ? (c.size ?? 0) : 0,
      );
    const plannedRun = (c: SearchConfig): PlannedRun => {
      const knob = space.methods.find((m) => m.method === c.method)?.knob ?? null;
      const mc: MethodConfig = { knob, value: knob ? c.size : null };
      const settings = settingsOf(c);
      const extra = extraTrainArgs(space, c);
      // Without extra options the run is compare's own (same id, so a compare folder's rows are reused).
      const id = extra.length
        ? [task.name, c.method, knobLabel(mc), `x${hash6(extra)}`, `s${trainSeed}`, settingsHash(settings)].join(".")
        : runId(task.name, c.method, mc, trainSeed, settings);
      return { runId: id, task, method: c.method, config: mc, budget: null, seed: trainSeed, settings, extraArgs: extra };
    };
    const rowsPath = join(outputDir, "rows.jsonl");
    const { torn } = repairRows(rowsPath);
    if (torn) process.stderr.write(`${rowsPath}: dropped a torn last line (its run is redone)\n`);
    const cached = new Map<string, CompareRow>(readRows(rowsPath).rows.map((r) => [r.run_id, r]));
    const threads = (o.threads as number | undefined) ?? (jobs > 1 ? threadsPerJob(availableParallelism(), jobs) : undefined);
    evaluate = async (c) => {
      const run = plannedRun(c);
      let row = cached.get(run.runId);
      if (!row) {
        row = {
          ...(await executeRun(run, { outputDir, threads })),
          config: configLabel(space, c).split(" ").slice(1).join(" ") || "default",
        };
        appendRow(rowsPath, row);
        cached.set(run.runId, row);
      }
      const params = counter.count(c);
      if (row.trainable_params !== params)
        process.stderr.write(`note: ${run.runId} trained ${row.trainable_params} parameters, counted ${params} beforehand\n`);
      return { params, score: hib ? row.metric_value : -row.metric_value, runId: run.runId };
    };
    const train = (r: StateRow): Record<string, unknown> => {
      const run = plannedRun(r.config);
      const m = space.methods.find((s) => s.method === r.config.method);
      const t = targetOf(space, r.config);
      return {
        model: task.model,
        data: task.train,
        ...(task.format ? { format: task.format } : {}),
        method: r.config.method,
        ...(m?.knob && r.config.size !== null ? { [KNOB_TRAIN_FLAG[m.knob]]: r.config.size } : {}),
        ...(t !== undefined ? { target: t === "all-linear" ? "all-linear" : t } : {}),
        ...(r.config.layers !== null ? { "layers-to-transform": r.config.layers } : {}),
        lr: run.settings.lr,
        "max-steps": run.settings.maxSteps,
        "batch-size": run.settings.batchSize,
        "max-length": run.settings.maxLength,
        warmup: run.settings.warmup,
        seed: trainSeed,
      };
    };
    ctx = {
      title: `peftkit search: ${task.name}`,
      about: [
        `Task ${task.name} (${task.metric}), model ${task.model}; ${o.maxSteps} steps per evaluation, batch ${o.batchSize}, training seed ${trainSeed}, learning rate ${o.lr ?? "compare's per method"}.`,
        `Space: ${where}, ${totalCount(space).toLocaleString("en-US")} configurations (${space.methods.map((m) => m.method).join(", ")}; ${numLayers} layers).`,
        `Initial random configurations: ${nInit}; batch size q = ${jobs}.`,
      ],
      metric: hib ? task.metric : `−${task.metric}`,
      reference,
      referenceParams,
      trainYaml: train,
    };
    identity = { task: task.name, space, settings: [o.maxSteps, o.batchSize, o.maxLength, o.warmup, o.lr ?? null, trainSeed], nInit, jobs };
  }

  const tag = `search-${hash6(identity)}`;
  const statePath = join(outputDir, `${tag}-${method}-s${opts.seed}.jsonl`);
  let stopping = false;
  const onInt = () => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stderr.write("\ninterrupt: stopping after the evaluations in flight; rerun the same command to resume\n");
  };
  process.on("SIGINT", onInt);
  let failed: string | null = null;
  try {
    const done = readState(statePath);
    console.log(
      `search (${method}, seed ${opts.seed}): budget ${budget}, ${nInit} initial, q ${jobs}; ${done.length} evaluation(s) already in ${statePath}`,
    );
    const runIds = new Map<number, string | undefined>();
    const t0 = performance.now();
    await runSearch(
      problem,
      opts,
      done,
      async (c, index) => {
        const r = await evaluate(c);
        runIds.set(index, r.runId);
        return r;
      },
      (e) => {
        const row: StateRow = {
          ...e,
          label: configLabel(problem.space, e.config),
          ...(runIds.get(e.index) ? { run_id: runIds.get(e.index) } : {}),
        };
        appendState(statePath, row);
        faultPoint("search-evaluation-recorded");
        console.log(
          `[${e.index + 1}/${budget}] ${e.origin} ${row.label}: score ${e.score.toFixed(4)}, ${e.params.toLocaleString("en-US")} trainable (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
        );
      },
      () => stopping,
    );
  } catch (e) {
    if (e instanceof RunFailedError) failed = e.message;
    else if (e instanceof SearchStateError) throw new UsageError(`${statePath}: ${e.message}`);
    else throw e;
  } finally {
    process.off("SIGINT", onInt);
    await release();
  }
  const runs: SearchRun[] = readdirSync(outputDir)
    .flatMap((f) => {
      const m = new RegExp(`^${tag}-(bo|random)-s(\\d+)\\.jsonl$`).exec(f);
      return m ? [{ method: m[1], seed: Number(m[2]), rows: readState(join(outputDir, f)).sort((a, b) => a.index - b.index) }] : [];
    })
    .sort((a, b) => a.method.localeCompare(b.method) || a.seed - b.seed);
  const report = writeSearchReport(outputDir, runs, { ...ctx, command });
  console.log(`wrote ${report}`);
  if (failed) {
    process.stderr.write(`${failed}\nthe search stopped there; rerun the same command to retry it and go on\n`);
    return 1;
  }
  return stopping ? 130 : 0;
}
