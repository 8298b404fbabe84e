import { existsSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../../io/atomic-write.js";
import { DATA_FORMATS, type DataFormat, loadDataset } from "../../train/data/index.js";
import { evalBatches, evaluate } from "../../train/evaluate.js";
import { table } from "../../train/progress.js";
import { completionItems } from "../../train/run.js";
import { type CommandSpec, UsageError } from "../args.js";
import { loadModelAndAdapter, requireDir } from "../load.js";
import { adapterVirtualTokens, effectiveMaxLength } from "../max-length.js";
import { applyTask, TASK_FLAG } from "../task-flag.js";

export const evalCommand: CommandSpec = {
  name: "eval",
  summary:
    "Evaluate a model (optionally with an adapter) on a dataset: loss, perplexity, accuracy and macro-F1, token accuracy, or exact match.",
  usage: "peftkit eval --model DIR [--adapter DIR] --data FILE [--task NAME] [--output FILE]",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "base model folder", required: true },
    {
      name: "adapter",
      type: "string",
      meta: "DIR",
      help: "PEFT adapter folder to apply, or the output of a run that trains base tensors in place (lisa, hft, gradnorm_lorp, full-weight mezo)",
    },
    {
      name: "data",
      type: "string",
      meta: "FILE",
      help: "evaluation data (same formats as train; classification labels must be the adapter's, see label_config.json)",
      required: true,
    },
    { name: "format", type: "string", help: "record format (default: detected)", choices: DATA_FORMATS },
    { name: "batch-size", type: "int", meta: "N", help: "examples per batch", default: 16, min: 1 },
    {
      name: "max-length",
      type: "int",
      meta: "N",
      help: "longest example in tokens (default: 512, or the model's position limit if smaller)",
      min: 1,
    },
    {
      name: "exact-match-limit",
      type: "int",
      meta: "N",
      help: "prompt/completion and chat data: check exact match (of the final assistant turn) on at most N examples (0 = skip)",
      default: 200,
      min: 0,
    },
    TASK_FLAG,
    { name: "on-bad-record", type: "string", help: "what to do with a malformed record", default: "error", choices: ["error", "skip"] },
    {
      name: "output",
      type: "string",
      meta: "FILE",
      help: "write the metrics as JSON here (default: eval_results.json in the adapter folder, else only printed)",
    },
  ],
  examples: ["peftkit eval --model models/wordnet-llama --adapter runs/demo --data eval.jsonl"],
  async run(o) {
    if (!existsSync(o.data as string)) throw new UsageError(`--data ${o.data}: no such file or folder`);
    const soft = adapterVirtualTokens(o.adapter as string | undefined);
    o.maxLength = effectiveMaxLength(requireDir(o.model as string, "--model"), o.maxLength as number | undefined, soft);
    const { model, peft, tokenizer, labels } = await loadModelAndAdapter(o.model as string, {
      adapter: o.adapter as string | undefined,
      threads: o.threads as number | undefined,
      needTokenizer: true,
      trainedTensors: true,
    });
    if (!tokenizer) throw new UsageError("the model has no tokenizer");
    const data = await loadDataset(o.data as string, {
      tokenizer,
      format: o.format as DataFormat | undefined,
      maxLength: o.maxLength as number,
      onBadRecord: o.onBadRecord as "error" | "skip",
      // The model's classes, not the eval file's: a label it does not know is an error at its line.
      labels: labels?.names,
    });
    // Multi-task adapters (POLY): one task for all (--task) or each record's task field.
    applyTask(peft, o.adapter as string | undefined, o.task as string | undefined, data.examples);
    const runner = peft ?? model;
    const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
    const batches = evalBatches(data.examples, o.batchSize as number, padId);
    const metrics = await evaluate(runner, batches, {
      causal: model.head === "causal_lm",
      classification: model.head === "sequence_classification",
      tokenClassification: model.head === "token_classification",
      labelNames: labels?.names,
      completions:
        data.format === "prompt_completion" || data.format === "chat"
          ? completionItems(data.examples, tokenizer, o.exactMatchLimit as number)
          : undefined,
      tokenizer,
    });
    const result = {
      ...metrics,
      examples: data.examples.length,
      skipped: data.skipped.length,
      model: o.model,
      adapter: o.adapter ?? null,
      data: o.data,
      ...(o.task !== undefined ? { task: o.task } : {}),
      ...(labels ? { label_names: labels.names } : {}),
    };
    console.log(
      table(
        Object.entries(metrics).map(([k, v]) => [k, typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : String(v)]),
      ),
    );
    const outFile = (o.output as string | undefined) ?? (o.adapter ? join(o.adapter as string, "eval_results.json") : undefined);
    if (outFile) {
      writeFileAtomic(outFile, `${JSON.stringify(result, null, 2)}\n`);
      console.log(`wrote ${outFile}`);
    }
    await model.release();
    return 0;
  },
};
