/**
 * How `peftkit train --method poly` sets up a run (issue 15; docs/methods/poly.md):
 * - the routing table from the data's `task` fields (src/train/data/tasks.ts), n_tasks from it;
 * - `--poly-finetune full` (default): every tensor trains; with `--poly-from DIR` the skills start
 *   from a trained POLY adapter and the routers are new rows for this data's tasks, U(−1e-3, 1e-3)
 *   (mttl's resize_module_logits);
 * - `z` (MHR-z): the skills of `--poly-from` stay fixed, only the routers train;
 * - `mu` (MHR-μ / Poly-μ): the skills of `--poly-from` averaged with weights 1/n_skills become one
 *   ordinary LoRA (rank r, lora_alpha 1), which trains; the task field is not needed.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readJsonFile } from "../io/hf-folder.js";
import { normalizeKeys } from "../tuners/config.js";
import type { PeftModel } from "../tuners/peft-model.js";
import { parsePolyConfig } from "../tuners/poly/config.js";
import { loraConfigOfPoly, polyToLoraTensors } from "../tuners/poly/export.js";
import type { TaskTable } from "../tuners/task-ids.js";
import { assignTaskIds, type Example, taskTableOf } from "./data/index.js";
import { TrainingArgsError } from "./schedule.js";

export type PolyFinetune = "full" | "z" | "mu";
export const POLY_FINETUNES: readonly PolyFinetune[] = ["full", "z", "mu"];

export interface PolyRun {
  peftConfig: Record<string, unknown>;
  taskTable?: TaskTable;
  freeze?: (key: string) => boolean;
  lrScale?: (key: string) => number;
  prepareAdapter?: (peft: PeftModel) => void;
}

const SOURCE = "__poly_source__";

/** The source POLY adapter's normalised config (adapter_config.json of --poly-from). */
function sourceConfig(dir: string): Record<string, unknown> {
  const path = join(dir, "adapter_config.json");
  if (!existsSync(path)) throw new TrainingArgsError(`--poly-from ${dir}: no adapter_config.json`);
  const raw = normalizeKeys(readJsonFile(path, "adapter config") as Record<string, unknown>, path);
  if (raw.peft_type !== "POLY") throw new TrainingArgsError(`--poly-from ${dir}: a ${String(raw.peft_type)} adapter, not POLY`);
  return raw;
}

/**
 * The run's adapter config and hooks. `given` is the config the flags make (r, n_skills, n_splits,
 * targets); `nTasks` a larger table size asked for with --poly-n-tasks.
 */
export function preparePolyRun(
  given: Record<string, unknown>,
  opts: { finetune: PolyFinetune; from?: string; nTasks?: number; routerLr?: number; lr: number },
  train: Example[],
  evalSet: Example[],
): PolyRun {
  const { finetune, from } = opts;
  if (finetune !== "full" && !from)
    throw new TrainingArgsError(`--poly-finetune ${finetune} starts from trained skills: give --poly-from DIR (a POLY adapter folder)`);
  const src = from ? sourceConfig(from) : null;
  if (finetune === "mu") {
    const c = parsePolyConfig(src as Record<string, unknown>, `--poly-from ${from}`);
    return {
      peftConfig: { ...loraConfigOfPoly(c), base_model_name_or_path: given.base_model_name_or_path ?? null },
      prepareAdapter: (peft) => {
        const s = peft.loadAdapter(from as string, SOURCE);
        peft.setAdapterTensors("default", polyToLoraTensors(peft.info, c, s.tensors, "mean"));
        peft.deleteAdapter(SOURCE);
      },
    };
  }
  const { table, count } = taskTableOf([...train, ...evalSet]);
  if (opts.nTasks !== undefined && opts.nTasks < count)
    throw new TrainingArgsError(`--poly-n-tasks ${opts.nTasks} is smaller than the ${count} tasks of the data`);
  const nTasks = opts.nTasks ?? count;
  assignTaskIds(train, table, nTasks, true);
  assignTaskIds(evalSet, table, nTasks, true);
  const peftConfig = src ? { ...src, n_tasks: nTasks, inference_mode: false } : { ...given, n_tasks: nTasks };
  return {
    peftConfig,
    taskTable: table,
    freeze: finetune === "z" ? (k) => !k.endsWith(".poly_router.module_logits") : undefined,
    // mttl's module_logits_learning_rate: the routers' own rate, as a multiple of the run's.
    lrScale:
      opts.routerLr !== undefined ? (k) => (k.endsWith(".poly_router.module_logits") ? (opts.routerLr as number) / opts.lr : 1) : undefined,
    prepareAdapter: src
      ? (peft) => {
          // The skills from the source; the routers stay the fresh rows creation drew for this data's tasks.
          const s = peft.loadAdapter(from as string, SOURCE);
          const t = new Map(peft.adapter("default").tensors);
          for (const [k, v] of s.tensors) if (!k.endsWith(".poly_router.module_logits")) t.set(k, v);
          peft.setAdapterTensors("default", t);
          peft.deleteAdapter(SOURCE);
        }
      : undefined,
  };
}
