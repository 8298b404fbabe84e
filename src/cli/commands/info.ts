import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { COMPEFT_WEIGHTS, readCompeftFile } from "../../compress/file.js";
import { readJsonFile } from "../../io/hf-folder.js";
import { describeLabels, LABEL_CONFIG_FILE, parseLabelFields, readLabelConfig } from "../../io/label-config.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import { table } from "../../train/progress.js";
import { fixedTensorTest } from "../../tuners/fixed.js";
import { type CommandSpec, UsageError } from "../args.js";

function describeSafetensors(
  path: string,
  fixed: (key: string) => boolean = () => false,
): { tensors: number; params: number; fixed: number; dtypes: string } {
  const f = SafetensorsFile.open(path);
  try {
    let params = 0;
    let fixedParams = 0;
    const dtypes = new Set<string>();
    for (const e of f.entries) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      params += n;
      if (fixed(e.name)) fixedParams += n;
      dtypes.add(e.dtype);
    }
    return { tensors: f.entries.length, params, fixed: fixedParams, dtypes: [...dtypes].join(", ") };
  } finally {
    f.close();
  }
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`;

export const infoCommand: CommandSpec = {
  name: "info",
  summary: "Describe a Hugging Face model folder or a PEFT adapter folder.",
  usage: "peftkit info DIR",
  flags: [{ name: "dir", type: "string", meta: "DIR", help: "the folder (may also be given as the first argument)" }],
  examples: ["peftkit info models/wordnet-llama", "peftkit info runs/my-adapter"],
  async run(o) {
    const dir = o.dir as string | undefined;
    if (!dir) throw new UsageError("peftkit info: give a folder, e.g. peftkit info models/wordnet-llama");
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`peftkit info: ${dir} is not a folder`);
    const rows: [string, string][] = [];
    if (existsSync(join(dir, "adapter_config.json"))) {
      const cfg = readJsonFile(join(dir, "adapter_config.json"), "adapter config") as Record<string, unknown>;
      rows.push(
        ["kind", "PEFT adapter"],
        ["peft_type", String(cfg.peft_type)],
        ["task_type", String(cfg.task_type)],
        ["base model", String(cfg.base_model_name_or_path)],
      );
      const keys = [
        "r",
        "lora_alpha",
        "use_dora",
        "use_rslora",
        "apply_GS",
        "projection_prng_key",
        "save_projection",
        "energy_threshold",
        "beta",
        "gamma",
      ];
      for (const k of [...keys, "target_modules", "num_virtual_tokens", "modules_to_save"]) {
        if (cfg[k] !== undefined && cfg[k] !== null) rows.push([k, JSON.stringify(cfg[k])]);
      }
      const labels = readLabelConfig(dir);
      if (labels) rows.push(["num_labels", String(labels.names.length)], ["labels", `${describeLabels(labels)} (${LABEL_CONFIG_FILE})`]);
      const w = join(dir, "adapter_model.safetensors");
      if (existsSync(w)) {
        const d = describeSafetensors(w, fixedTensorTest(cfg));
        rows.push(
          ["tensors", String(d.tensors)],
          ["parameters", d.params.toLocaleString("en-US")],
          ...(d.fixed
            ? ([["of which fixed", `${d.fixed.toLocaleString("en-US")} (saved with the adapter, not trained)`]] as [string, string][])
            : []),
          ["dtypes", d.dtypes],
          ["file size", mb(statSync(w).size)],
        );
      }
      const compressed = join(dir, COMPEFT_WEIGHTS);
      if (!existsSync(w) && existsSync(compressed)) {
        const c = readCompeftFile(compressed);
        const entries = [...c.tensors.values()].reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
        rows.push(
          [
            "compressed",
            `ComPEFT (${COMPEFT_WEIGHTS}, docs/formats/compeft.md): density ${c.density}, alpha ${c.alpha}, scope ${c.scope}, ${c.bits} bit${c.bits === 1 ? "" : "s"} per kept entry`,
          ],
          ["tensors", String(c.tensors.size)],
          ["parameters", entries.toLocaleString("en-US")],
          ["file size", mb(statSync(compressed).size)],
        );
      }
    } else if (existsSync(join(dir, "config.json"))) {
      const cfg = readJsonFile(join(dir, "config.json"), "model config") as Record<string, unknown>;
      rows.push(["kind", "model"], ["model_type", String(cfg.model_type)], ["architectures", JSON.stringify(cfg.architectures ?? null)]);
      for (const k of [
        "hidden_size",
        "n_embd",
        "num_hidden_layers",
        "n_layer",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "tie_word_embeddings",
        "torch_dtype",
      ]) {
        if (cfg[k] !== undefined) rows.push([k, JSON.stringify(cfg[k])]);
      }
      const labels = parseLabelFields(cfg, join(dir, "config.json"));
      if (labels) rows.push(["num_labels", String(labels.names.length)], ["labels", describeLabels(labels)]);
      const single = join(dir, "model.safetensors");
      if (existsSync(single)) {
        const d = describeSafetensors(single);
        rows.push(["parameters", d.params.toLocaleString("en-US")], ["dtypes", d.dtypes], ["weights file", mb(statSync(single).size)]);
      } else if (existsSync(join(dir, "model.safetensors.index.json"))) rows.push(["weights", "sharded (model.safetensors.index.json)"]);
      rows.push(["tokenizer", existsSync(join(dir, "tokenizer.json")) ? "tokenizer.json" : "none"]);
      const tc = join(dir, "tokenizer_config.json");
      if (existsSync(tc)) rows.push(["chat template", JSON.parse(readFileSync(tc, "utf8")).chat_template ? "yes" : "no"]);
    } else throw new UsageError(`peftkit info: ${dir} has neither config.json (model) nor adapter_config.json (adapter)`);
    console.log(table(rows));
    return 0;
  },
};
