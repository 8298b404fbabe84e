/** Loading a model (and optionally an adapter) the way every CLI command does. */

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig, readJsonFile } from "../io/hf-folder.js";
import { defaultLabelNames, type LabelConfig, labelConfig, parseLabelFields, readLabelConfig } from "../io/label-config.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "../io/tokenizer.js";
import type { TaskHead } from "../models/architecture.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { architectureFor } from "../models/registry.js";
import { modelForAdapter } from "../prune/heads-ffn-files.js";
import { mergeDeltaSet } from "../sparse/compose.js";
import { loadSparseDeltas } from "../sparse/file.js";
import type { SparseDeltaSet } from "../sparse/format.js";
import { withWeights } from "../train/dsee-prune.js";
import { applyTrainedTensors, SELECTIVE_CONFIG_FILE } from "../train/selective-run.js";
import { modulesToSaveKeys } from "../tuners/modules-to-save.js";
import { PeftModel } from "../tuners/peft-model.js";
import { weightsFingerprint } from "../util/fingerprint.js";
import { UsageError } from "./args.js";

const TASK_HEADS: Record<string, TaskHead> = {
  CAUSAL_LM: "causal_lm",
  SEQ_CLS: "sequence_classification",
  TOKEN_CLS: "token_classification",
  FEATURE_EXTRACTION: "base",
};

/** The head a transformers class name implies (config.json "architectures"), e.g. LlamaForSequenceClassification. */
const ARCHITECTURE_HEADS: [RegExp, TaskHead][] = [
  [/ForSequenceClassification$/, "sequence_classification"],
  [/ForTokenClassification$/, "token_classification"],
  [/ForImageClassification$/, "image_classification"],
  [/(ForCausalLM|LMHeadModel)$/, "causal_lm"],
];

const CLASSIFICATION_HEADS: readonly TaskHead[] = ["sequence_classification", "token_classification", "image_classification"];

export function requireDir(path: string | undefined, flag: string): string {
  if (!path) throw new UsageError(`${flag} is required`);
  if (!existsSync(path)) throw new UsageError(`${flag} ${path}: no such folder`);
  return path;
}

/**
 * The head to load: from the adapter's task_type, else the model's config.json "architectures"
 * (so a merged classifier loads as one), else the natural one for the model type.
 */
export function headFor(modelDir: string, adapterDir?: string, numLabels?: number): TaskHead {
  if (adapterDir && existsSync(join(adapterDir, "adapter_config.json"))) {
    const cfg = JSON.parse(readFileSync(join(adapterDir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    const head = TASK_HEADS[String(cfg.task_type)];
    if (head) return head;
  }
  if (numLabels !== undefined) return "sequence_classification";
  const cfg = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as Record<string, unknown>;
  const archs = Array.isArray(cfg.architectures) ? cfg.architectures.map(String) : [];
  const type = String(cfg.model_type);
  const heads = architectureFor(type)?.heads ?? [];
  for (const [pattern, head] of ARCHITECTURE_HEADS) if (heads.includes(head) && archs.some((a) => pattern.test(a))) return head;
  if (type === "bert" || type === "roberta") return "sequence_classification";
  if (type === "vit") return "image_classification";
  return "causal_lm";
}

/**
 * The classes of a classification adapter: its label_config.json; for an adapter trained before
 * peftkit wrote that file, the label_names of its training_args.json; else null (the model's
 * config.json then decides, as for a model without adapter).
 */
export function adapterLabels(adapterDir: string): LabelConfig | null {
  const saved = readLabelConfig(adapterDir);
  if (saved) return saved;
  const argsPath = join(adapterDir, "training_args.json");
  if (!existsSync(argsPath)) return null;
  const names = (readJsonFile(argsPath, "training arguments") as Record<string, unknown>).label_names;
  return Array.isArray(names) && names.length > 0 && names.every((n) => typeof n === "string") ? labelConfig(names) : null;
}

export interface Loaded {
  model: PreTrainedModel;
  peft: PeftModel | null;
  tokenizer: PreTrainedTokenizer | null;
  /** A classification model's classes (the adapter's, else the model's config.json, else LABEL_i); null for other heads. */
  labels: LabelConfig | null;
}

export async function loadModelAndAdapter(
  modelDir: string,
  opts: {
    adapter?: string;
    threads?: number;
    numLabels?: number;
    head?: TaskHead;
    needTokenizer?: boolean;
    /**
     * Also accept, as --adapter, the output of a run that trains base tensors in place (LISA, HFT,
     * GradNormLoRP, full-weight MeZO: trained_tensors.safetensors + selective_config.json): the
     * tensors go onto the model, and `peft` is null.
     */
    trainedTensors?: boolean;
  } = {},
): Promise<Loaded> {
  requireDir(modelDir, "--model");
  if (opts.adapter) requireDir(opts.adapter, "--adapter");
  let labels = opts.adapter ? adapterLabels(opts.adapter) : null;
  const numLabels = opts.numLabels ?? labels?.names.length;
  const head = opts.head ?? headFor(modelDir, opts.adapter, numLabels);
  const loaded = await PreTrainedModel.load(modelDir, head, { threads: opts.threads, numLabels, warnNewlyInitialized: !opts.adapter });
  // A Light-PEFT adapter was trained on a pruned base: slice it as its pruned_backbone.json says.
  const model = opts.adapter ? withBaseDelta(modelForAdapter(loaded, opts.adapter), opts.adapter) : loaded;
  if (!CLASSIFICATION_HEADS.includes(head)) labels = null;
  else {
    // The count the model was built with (config.json id2label, else num_labels, else 2), named as config.json names them.
    const n = (model.archConfig as { numLabels: number }).numLabels;
    if (labels === null || labels.names.length !== n) {
      const declared = parseLabelFields(loadConfig(modelDir), join(modelDir, "config.json"));
      labels = labelConfig(declared && declared.names.length === n ? declared.names : defaultLabelNames(n));
    }
  }
  const inPlace =
    opts.trainedTensors &&
    opts.adapter !== undefined &&
    !existsSync(join(opts.adapter, "adapter_config.json")) &&
    existsSync(join(opts.adapter, SELECTIVE_CONFIG_FILE));
  if (inPlace) applyTrainedTensors(model, opts.adapter as string);
  const peft = opts.adapter && !inPlace ? PeftModel.fromPretrained(model, opts.adapter) : null;
  if (peft) warnUnsuppliedHead(model, peft);
  let tokenizer: PreTrainedTokenizer | null = null;
  if (existsSync(join(modelDir, "tokenizer.json"))) tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  else if (opts.needTokenizer) throw new UsageError(`${modelDir}: no tokenizer.json; this command needs the model's tokenizer`);
  return { model, peft, tokenizer, labels };
}

/**
 * An adapter trained on a base with a sparse delta merged in (DSEE's pruned base) names that delta
 * file, beside it, in adapter_config.json "base_delta": the model with the delta applied (checked
 * against the base's fingerprint).
 */
function withBaseDelta(model: PreTrainedModel, adapterDir: string): PreTrainedModel {
  const cfgPath = join(adapterDir, "adapter_config.json");
  if (!existsSync(cfgPath)) return model;
  const file = (JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>).base_delta;
  if (typeof file !== "string" || file === "") return model;
  const path = join(adapterDir, file);
  if (!existsSync(path)) throw new UsageError(`${cfgPath}: base_delta ${file} is not in ${adapterDir}`);
  const set = loadSparseDeltas(path);
  // A model the delta was already applied to (`peftkit delta apply`): zero at every pruned position.
  if (set.baseModel !== weightsFingerprint(model.weights) && alreadyApplied(model, set)) return model;
  return withWeights(model, mergeDeltaSet(model.weights, { set, file: path }));
}

function alreadyApplied(model: PreTrainedModel, set: SparseDeltaSet): boolean {
  for (const [name, d] of set.deltas) {
    const w = model.weights.get(name)?.data;
    // The delta is −W at the pruned positions, so W + delta is exactly 0 there.
    if (!w || d.indices.some((p) => Number(w[p]) !== 0)) return false;
  }
  return true;
}

/** Head weights neither the checkpoint nor the adapter's modules_to_save supplies. */
function warnUnsuppliedHead(model: PreTrainedModel, peft: PeftModel): void {
  const supplied = new Set<string>();
  for (const name of peft.activeAdapters) {
    const mts = peft.adapter(name).config.modulesToSave ?? null;
    for (const weight of modulesToSaveKeys(peft.info, mts).keys()) supplied.add(weight);
  }
  const missing = model.newlyInitialized.filter((w) => !supplied.has(w));
  if (missing.length) {
    process.emitWarning(
      `${model.dir}: newly initialised ${model.head} head weights (in neither the checkpoint nor the adapter): ${missing.join(", ")}; train them before use`,
    );
  }
}
