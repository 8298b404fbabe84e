/**
 * Files of head/FFN pruning (Node only): pruned_backbone.json beside an adapter, and the pruned
 * base model written as an ordinary model folder (config.json + model.safetensors + the
 * tokenizer files of the original), which `peftkit generate` and `eval` load like any other.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { replaceDir, tmpPath, writeFileAtomic } from "../io/atomic-write.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { hasPrunedShape, PRUNED_BACKBONE_FILE, type PrunedBackbone, PruningError, parsePlan, planJson, pruneModel } from "./heads-ffn.js";

/** Files copied from the original folder so the pruned one is a complete model folder. */
const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "chat_template.jinja",
];

export function writePlan(dir: string, plan: PrunedBackbone, extra: Record<string, unknown> = {}): void {
  writeFileAtomic(join(dir, PRUNED_BACKBONE_FILE), `${JSON.stringify(planJson(plan, extra), null, 2)}\n`);
}

/** The plan in `dir`/pruned_backbone.json, or null when the folder has none. */
export function readPlan(dir: string): PrunedBackbone | null {
  const file = join(dir, PRUNED_BACKBONE_FILE);
  if (!existsSync(file)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new PruningError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parsePlan(raw, file);
}

/**
 * The base model an adapter folder was trained on: `model` sliced by the folder's
 * pruned_backbone.json, or `model` itself when there is none or it already has the pruned sizes
 * (a folder written by writePrunedModel).
 */
export function modelForAdapter(model: PreTrainedModel, adapterDir: string): PreTrainedModel {
  const plan = readPlan(adapterDir);
  if (!plan || hasPrunedShape(model, plan)) return model;
  return pruneModel(model, plan);
}

/**
 * Writes the pruned model as a model folder at `dest`, all at once: everything goes to a
 * temporary folder beside it, which then replaces `dest` (io/atomic-write.ts replaceDir).
 * The plan is written too, so the folder says what it was cut from.
 */
export function writePrunedModel(pruned: PreTrainedModel, plan: PrunedBackbone, dest: string, sourceDir: string | null): void {
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = tmpPath(join(dirname(dest), basename(dest)));
  mkdirSync(tmp);
  pruned.savePretrained(tmp);
  writePlan(tmp, plan);
  if (sourceDir) for (const f of TOKENIZER_FILES) if (existsSync(join(sourceDir, f))) copyFileSync(join(sourceDir, f), join(tmp, f));
  replaceDir(tmp, dest);
}
