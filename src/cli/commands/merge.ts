import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fsyncFile, replaceDir, tmpPath, writeFileAtomic } from "../../io/atomic-write.js";
import { loadConfig } from "../../io/hf-folder.js";
import { type LabelConfig, labelConfigFields } from "../../io/label-config.js";
import type { TaskHead } from "../../models/architecture.js";
import { pruneHiddenSize } from "../../prune/hidden-size.js";
import { patKeptChannels } from "../../tuners/pat/index.js";
import { type CommandSpec, UsageError } from "../args.js";
import { loadModelAndAdapter } from "../load.js";

const HEAD_CLASS_SUFFIX: Partial<Record<TaskHead, string>> = {
  sequence_classification: "ForSequenceClassification",
  token_classification: "ForTokenClassification",
  image_classification: "ForImageClassification",
};

/**
 * config.json of a merged classifier, as transformers writes a fine-tuned one: num_labels,
 * id2label and label2id, and "architectures" naming the classification class (LlamaForCausalLM
 * → LlamaForSequenceClassification), which is also how peftkit picks the head when loading it.
 */
export function classifierConfig(config: Record<string, unknown>, head: TaskHead, labels: LabelConfig): Record<string, unknown> {
  const suffix = HEAD_CLASS_SUFFIX[head];
  const out: Record<string, unknown> = { ...config, ...labelConfigFields(labels) };
  const archs = Array.isArray(config.architectures) ? config.architectures.map(String) : [];
  if (suffix && !archs.some((a) => a.endsWith(suffix))) {
    const stem = archs[0]?.replace(/(For[A-Z]\w*|LMHeadModel|Model)$/, "");
    if (stem) out.architectures = [`${stem}${suffix}`];
  }
  return out;
}

export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "chat_template.jinja",
];

export const mergeCommand: CommandSpec = {
  name: "merge",
  summary: "Merge an adapter into its base model and write a full Hugging Face checkpoint folder.",
  usage: "peftkit merge --model DIR --adapter DIR --output-dir DIR [--dtype f32|f16|bf16] [--prune]",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "base model folder", required: true },
    { name: "adapter", type: "string", meta: "DIR", help: "PEFT adapter folder", required: true },
    { name: "output-dir", type: "string", meta: "DIR", help: "where to write the merged model", required: true },
    { name: "dtype", type: "string", help: "weight dtype of the output", default: "f32", choices: ["f32", "f16", "bf16"] },
    { name: "safe-merge", type: "boolean", help: "refuse to merge if any merged weight is NaN or Inf", default: true },
    {
      name: "prune",
      type: "boolean",
      help: "PAT adapters: also remove the hidden channels the learned mask drops, writing a smaller model (hidden_size = kept channels)",
      default: false,
    },
  ],
  examples: [
    "peftkit merge --model models/wordnet-llama --adapter runs/demo --output-dir runs/demo-merged",
    "peftkit merge --model models/wordnet-llama --adapter runs/pat --output-dir runs/pat-pruned --prune",
  ],
  async run(o) {
    const out = o.outputDir as string;
    if (existsSync(join(out, "config.json"))) throw new UsageError(`--output-dir ${out} already holds a model; choose another folder`);
    const { model, peft, labels } = await loadModelAndAdapter(o.model as string, {
      adapter: o.adapter as string,
      threads: o.threads as number | undefined,
    });
    if (!peft) throw new UsageError("--adapter is required");
    const keep = o.prune ? patKeptChannels(peft, peft.activeAdapters[0]) : null;
    const full = peft.mergeAndUnload({ safeMerge: o.safeMerge as boolean });
    const merged = keep ? pruneHiddenSize(full, keep) : full;
    // Write into a temporary folder and rename, so a failed merge leaves no half-written model.
    const tmp = tmpPath(out.replace(/\/$/, ""));
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    merged.savePretrained(tmp, { dtype: o.dtype as "f32" | "f16" | "bf16" });
    if (labels)
      writeFileAtomic(join(tmp, "config.json"), `${JSON.stringify(classifierConfig(loadConfig(tmp), model.head, labels), null, 2)}\n`);
    for (const f of TOKENIZER_FILES) {
      if (!existsSync(join(o.model as string, f))) continue;
      copyFileSync(join(o.model as string, f), join(tmp, f));
      fsyncFile(join(tmp, f));
    }
    replaceDir(tmp, out);
    await model.release();
    const pruned = keep ? ` (hidden_size ${(model.config.hidden_size as number) ?? "?"} → ${keep.length})` : "";
    console.log(`merged ${o.adapter} into ${o.model}${pruned}: wrote ${out}`);
    return 0;
  },
};
