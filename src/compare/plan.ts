/**
 * The plan: every (task, method, configuration, seed) of a compare, each with a stable run id
 * that also carries a short hash of the training settings, so that a rerun with other settings
 * (steps, learning rate, ...) gets new ids instead of reusing rows trained differently.
 */
import { createHash } from "node:crypto";
import { configLabel, type MethodConfig } from "./budgets.js";
import type { CompareTask } from "./task.js";

/** Settings that change what a run computes (and so its id). */
export interface RunSettings {
  lr: number;
  maxSteps: number;
  /** Per-run training time cap in seconds, or null. */
  runSeconds: number | null;
  batchSize: number;
  maxLength: number;
  /** Linear warmup: steps (>= 1) or a fraction of the steps (< 1), as `peftkit train --warmup`. */
  warmup: number;
}

export interface PlannedRun {
  runId: string;
  task: CompareTask;
  method: string;
  config: MethodConfig;
  /** The --budgets entry that chose the configuration, e.g. "params=100k"; null otherwise. */
  budget: string | null;
  seed: number;
  settings: RunSettings;
  /** More `peftkit train` arguments (peftkit search: --target, --layers-to-transform); part of the run id's hash there. */
  extraArgs?: string[];
}

/** Six hex digits of a hash of the settings (key order fixed). */
export function settingsHash(s: RunSettings): string {
  const canonical = JSON.stringify([s.lr, s.maxSteps, s.runSeconds, s.batchSize, s.maxLength, s.warmup]);
  return createHash("sha256").update(canonical).digest("hex").slice(0, 6);
}

export function runId(task: string, method: string, config: MethodConfig, seed: number, settings: RunSettings): string {
  return [task, method, configLabel(config), `s${seed}`, settingsHash(settings)].join(".");
}

export interface PlanInput {
  tasks: readonly CompareTask[];
  methods: readonly string[];
  /** The configurations of a method on a task (with the budget that chose each). */
  configs: (task: CompareTask, method: string) => { config: MethodConfig; budget: string | null }[];
  seeds: number;
  /** The effective settings of a method's runs on a task (task fields and model limits applied). */
  settings: (task: CompareTask, method: string, config: MethodConfig) => RunSettings;
}

/** Runs in order task → method → configuration → seed. */
export function makePlan(p: PlanInput): PlannedRun[] {
  const runs: PlannedRun[] = [];
  for (const task of p.tasks)
    for (const method of p.methods) {
      for (const { config, budget } of p.configs(task, method)) {
        const settings = p.settings(task, method, config);
        for (let seed = 0; seed < p.seeds; seed++)
          runs.push({ runId: runId(task.name, method, config, seed, settings), task, method, config, budget, seed, settings });
      }
    }
  return runs;
}
