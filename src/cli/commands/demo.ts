/**
 * `peftkit demo`: LoRA-fine-tunes the embedded WordNet model on a task it was never trained for
 * (naming the broad kind of a noun from its definition) and shows held-out exact match and
 * sample generations before and after. Offline, a few minutes on 2 cores.
 */
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { demoTask } from "../../data/demo-task.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "../../io/tokenizer.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { datasetFromRecords, type Example } from "../../train/data/index.js";
import { type CompletionItem, normalizeAnswer } from "../../train/evaluate.js";
import { completionItems, runTraining } from "../../train/run.js";
import { PeftModel } from "../../tuners/peft-model.js";
import { PACKAGE_ROOT } from "../../util/paths.js";
import { type CommandSpec, UsageError } from "../args.js";

interface Generator {
  generate(prompts: number[][], opts: { maxNewTokens: number; stop: number[][]; eosTokenId?: number }): Promise<number[][]>;
}

/** Held-out exact match plus the first few generations, for before/after. */
async function score(
  gen: Generator,
  tok: PreTrainedTokenizer,
  items: CompletionItem[],
  nl: number,
  samples: number,
): Promise<{ accuracy: number; lines: string[] }> {
  let hits = 0;
  const lines: string[] = [];
  for (let i = 0; i < items.length; i += 32) {
    const chunk = items.slice(i, i + 32);
    const outs = await gen.generate(
      chunk.map((c) => c.prompt),
      { maxNewTokens: 6, stop: [[nl]], eosTokenId: tok.eosTokenId ?? undefined },
    );
    outs.forEach((o, k) => {
      const text = tok.decode(o.slice(chunk[k].prompt.length), { skipSpecialTokens: true });
      const ok = normalizeAnswer(text) === normalizeAnswer(chunk[k].completion);
      if (ok) hits++;
      if (i + k < samples) {
        const question = tok.decode(chunk[k].prompt, { skipSpecialTokens: true }).split("\n").pop() ?? "";
        lines.push(
          `  ${ok ? "✓" : "✗"} ${question}${JSON.stringify(text.split("\n")[0]).slice(1, -1) || "∅"}   (answer:${chunk[k].completion})`,
        );
      }
    });
  }
  return { accuracy: items.length ? hits / items.length : 0, lines };
}

export const demoCommand: CommandSpec = {
  name: "demo",
  summary: "LoRA-fine-tune the embedded WordNet model on a held-out task and show exact match before and after.",
  usage: "peftkit demo [--output-dir DIR] [--max-seconds S]",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "base model", default: "models/wordnet-llama" },
    { name: "output-dir", type: "string", meta: "DIR", help: "where the adapter goes (replaced on each run)", default: "runs/demo" },
    { name: "max-seconds", type: "number", meta: "S", help: "time budget for training", default: 120, exclusiveMin: 0 },
    { name: "max-steps", type: "int", meta: "N", help: "step budget for training", default: 400, min: 1 },
    { name: "eval-items", type: "int", meta: "N", help: "held-out questions to score", default: 240, min: 1 },
    { name: "r", type: "int", meta: "N", help: "LoRA rank", default: 16, min: 1 },
    { name: "lr", type: "number", meta: "LR", help: "peak learning rate", default: 2e-3, exclusiveMin: 0 },
    { name: "batch-size", type: "int", meta: "N", help: "examples per step", default: 16, min: 1 },
    { name: "seed", type: "int", meta: "S", help: "seed", default: 0, min: 0 },
  ],
  examples: ["npm run demo", "peftkit demo --max-seconds 60"],
  async run(o) {
    const modelDir = existsSync(o.model as string) ? (o.model as string) : join(PACKAGE_ROOT, o.model as string);
    if (!existsSync(join(modelDir, "config.json"))) throw new UsageError(`--model ${o.model}: not a model folder`);
    const t0 = Date.now();
    const tok = await AutoTokenizer.fromPretrained(modelDir);
    const model = await PreTrainedModel.load(modelDir, "causal_lm", { threads: o.threads as number | undefined });
    const task = demoTask({ maxTrain: 8000, maxEval: o.evalItems as number });
    const toExamples = (rows: { prompt: string; completion: string }[], name: string): Example[] =>
      datasetFromRecords(rows, { tokenizer: tok, format: "prompt_completion", name }).examples;
    const train = toExamples(task.train, "demo-train");
    const heldOut = completionItems(toExamples(task.eval, "demo-eval"), tok, task.eval.length);
    const nl = tok.encode("\n", { addSpecialTokens: false })[0];
    console.log("peftkit demo: LoRA fine-tuning of models/wordnet-llama (4M parameters, pretrained by peftkit on WordNet glosses)");
    console.log(
      `task: name the broad kind of a noun from its definition; ${train.length} training pairs, ${heldOut.length} held-out pairs whose definitions the model never saw`,
    );
    const before = await score(model, tok, heldOut, nl, 6);
    console.log(`\nbefore fine-tuning: held-out exact match ${(100 * before.accuracy).toFixed(1)}%`);
    for (const l of before.lines) console.log(l);
    console.log("");
    const out = o.outputDir as string;
    rmSync(out, { recursive: true, force: true });
    const summary = await runTraining({
      outputDir: out,
      model,
      tokenizer: tok,
      peftConfig: {
        peft_type: "LORA",
        task_type: "CAUSAL_LM",
        r: o.r,
        lora_alpha: 2 * (o.r as number),
        lora_dropout: 0,
        target_modules: "all-linear",
      },
      train,
      eval: [],
      batchSize: o.batchSize as number,
      maxSteps: o.maxSteps as number,
      maxSeconds: o.maxSeconds as number,
      lr: o.lr as number,
      schedule: "linear",
      warmup: 20,
      clipNorm: 1,
      seed: o.seed as number,
      logSteps: 25,
      record: { command: "peftkit demo", ...o },
    });
    const peft = PeftModel.fromPretrained(
      await PreTrainedModel.load(modelDir, "causal_lm", { threads: o.threads as number | undefined }),
      out,
    );
    const after = await score(peft, tok, heldOut, nl, 6);
    console.log(`\nafter fine-tuning (${summary.steps} steps): held-out exact match ${(100 * after.accuracy).toFixed(1)}%`);
    for (const l of after.lines) console.log(l);
    console.log(
      `\nheld-out exact match: ${(100 * before.accuracy).toFixed(1)}% → ${(100 * after.accuracy).toFixed(1)}%   (chance ≈ ${(100 / 12).toFixed(1)}%; total ${((Date.now() - t0) / 1000).toFixed(0)} s)`,
    );
    console.log(
      `the adapter is in ${out}; try: npx peftkit generate --model ${o.model} --adapter ${out} --prompt "puppy: a young dog\\npuppy is a kind of"`,
    );
    await model.release();
    await peft.base.release();
    return 0;
  },
};
