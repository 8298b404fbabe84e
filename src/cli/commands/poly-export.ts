import { existsSync } from "node:fs";
import { join } from "node:path";
import { readTaskTable } from "../../io/task-table.js";
import { PeftModel } from "../../tuners/peft-model.js";
import type { PolyConfig } from "../../tuners/poly/config.js";
import { loraConfigOfPoly, polyToLoraTensors } from "../../tuners/poly/export.js";
import { resolveTask, TaskIdError } from "../../tuners/task-ids.js";
import { type CommandSpec, UsageError } from "../args.js";
import { loadModelAndAdapter } from "../load.js";

export const polyExportCommand: CommandSpec = {
  name: "poly-export",
  summary:
    "Write one task's mixture of a POLY/MHR adapter (eval-mode routing), or the average of its skills (MHR-μ), as a plain LoRA folder.",
  usage: "peftkit poly-export --model DIR --adapter DIR (--task NAME|ID | --mean) --output-dir DIR",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "base model folder", required: true },
    { name: "adapter", type: "string", meta: "DIR", help: "POLY adapter folder", required: true },
    { name: "task", type: "string", meta: "NAME|ID", help: "the task: a name of the adapter's task_table.json or a row number" },
    { name: "mean", type: "boolean", help: "the skills averaged with weights 1/n_skills (MHR-μ) instead of a task's mixture" },
    { name: "output-dir", type: "string", meta: "DIR", help: "where the LoRA adapter goes", required: true },
  ],
  examples: ["peftkit poly-export --model models/wordnet-llama --adapter runs/poly --task kind-of --output-dir runs/poly-kind-of"],
  async run(o) {
    if ((o.task === undefined) === !o.mean) throw new UsageError("give exactly one of --task NAME|ID and --mean");
    if (existsSync(join(o.outputDir as string, "adapter_config.json")))
      throw new UsageError(`--output-dir ${o.outputDir} already holds an adapter`);
    const { model, peft } = await loadModelAndAdapter(o.model as string, { adapter: o.adapter as string });
    const a = peft?.adapter(peft.activeAdapters[0]);
    if (!peft || !a || a.tuner.peftType !== "POLY") throw new UsageError(`--adapter ${o.adapter}: not a POLY adapter`);
    const c = a.config as unknown as PolyConfig;
    let task: number | "mean" = "mean";
    if (o.task !== undefined) {
      try {
        task = resolveTask(o.task as string, readTaskTable(o.adapter as string), c.nTasks, "--task");
      } catch (e) {
        if (e instanceof TaskIdError) throw new UsageError(e.message);
        throw e;
      }
    }
    const tensors = polyToLoraTensors(peft.info, c, a.tensors, task);
    const lora = new PeftModel(peft.unload());
    lora.addAdapter("default", loraConfigOfPoly(c));
    lora.setAdapterTensors("default", tensors);
    lora.savePretrained(o.outputDir as string);
    console.log(
      `wrote ${o.outputDir} (LoRA r=${c.r}, lora_alpha 1, ${task === "mean" ? "the skills' average" : `task ${o.task} (row ${task})`})`,
    );
    await model.release();
    return 0;
  },
};
