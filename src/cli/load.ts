/** Loading a model (and optionally an adapter) the way every CLI command does. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AutoTokenizer, type PreTrainedTokenizer } from "../io/tokenizer.js";
import type { TaskHead } from "../models/architecture.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { PeftModel } from "../tuners/peft-model.js";
import { UsageError } from "./args.js";

const TASK_HEADS: Record<string, TaskHead> = {
  CAUSAL_LM: "causal_lm",
  SEQ_CLS: "sequence_classification",
  TOKEN_CLS: "token_classification",
  FEATURE_EXTRACTION: "base",
};

export function requireDir(path: string | undefined, flag: string): string {
  if (!path) throw new UsageError(`${flag} is required`);
  if (!existsSync(path)) throw new UsageError(`${flag} ${path}: no such folder`);
  return path;
}

/** The head to load: from the adapter's task_type, else the natural one for the model type. */
export function headFor(modelDir: string, adapterDir?: string, numLabels?: number): TaskHead {
  if (adapterDir && existsSync(join(adapterDir, "adapter_config.json"))) {
    const cfg = JSON.parse(readFileSync(join(adapterDir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    const head = TASK_HEADS[String(cfg.task_type)];
    if (head) return head;
  }
  if (numLabels !== undefined) return "sequence_classification";
  const cfg = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as Record<string, unknown>;
  const type = String(cfg.model_type);
  if (type === "bert" || type === "roberta") return "sequence_classification";
  if (type === "vit") return "image_classification";
  return "causal_lm";
}

export interface Loaded {
  model: PreTrainedModel;
  peft: PeftModel | null;
  tokenizer: PreTrainedTokenizer | null;
}

export async function loadModelAndAdapter(
  modelDir: string,
  opts: { adapter?: string; threads?: number; numLabels?: number; head?: TaskHead; needTokenizer?: boolean } = {},
): Promise<Loaded> {
  requireDir(modelDir, "--model");
  if (opts.adapter) requireDir(opts.adapter, "--adapter");
  const head = opts.head ?? headFor(modelDir, opts.adapter, opts.numLabels);
  const model = await PreTrainedModel.load(modelDir, head, { threads: opts.threads, numLabels: opts.numLabels });
  const peft = opts.adapter ? PeftModel.fromPretrained(model, opts.adapter) : null;
  let tokenizer: PreTrainedTokenizer | null = null;
  if (existsSync(join(modelDir, "tokenizer.json"))) tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  else if (opts.needTokenizer) throw new UsageError(`${modelDir}: no tokenizer.json; this command needs the model's tokenizer`);
  return { model, peft, tokenizer };
}
