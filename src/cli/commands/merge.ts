import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type CommandSpec, UsageError } from "../args.js";
import { loadModelAndAdapter } from "../load.js";

const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "chat_template.jinja",
];

export const mergeCommand: CommandSpec = {
  name: "merge",
  summary: "Merge an adapter into its base model and write a full Hugging Face checkpoint folder.",
  usage: "peftkit merge --model DIR --adapter DIR --output-dir DIR [--dtype f32|f16|bf16]",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "base model folder", required: true },
    { name: "adapter", type: "string", meta: "DIR", help: "PEFT adapter folder", required: true },
    { name: "output-dir", type: "string", meta: "DIR", help: "where to write the merged model", required: true },
    { name: "dtype", type: "string", help: "weight dtype of the output", default: "f32", choices: ["f32", "f16", "bf16"] },
    { name: "safe-merge", type: "boolean", help: "refuse to merge if any merged weight is NaN or Inf", default: true },
  ],
  examples: ["peftkit merge --model models/wordnet-llama --adapter runs/demo --output-dir runs/demo-merged"],
  async run(o) {
    const out = o.outputDir as string;
    if (existsSync(join(out, "config.json"))) throw new UsageError(`--output-dir ${out} already holds a model; choose another folder`);
    const { model, peft } = await loadModelAndAdapter(o.model as string, {
      adapter: o.adapter as string,
      threads: o.threads as number | undefined,
    });
    if (!peft) throw new UsageError("--adapter is required");
    const merged = peft.mergeAndUnload({ safeMerge: o.safeMerge as boolean });
    // Write into a temporary folder and rename, so a failed merge leaves no half-written model.
    const tmp = `${out.replace(/\/$/, "")}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    merged.savePretrained(tmp, { dtype: o.dtype as "f32" | "f16" | "bf16" });
    for (const f of TOKENIZER_FILES) if (existsSync(join(o.model as string, f))) copyFileSync(join(o.model as string, f), join(tmp, f));
    rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
    await model.release();
    console.log(`merged ${o.adapter} into ${o.model}: wrote ${out}`);
    return 0;
  },
};
