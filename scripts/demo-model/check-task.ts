/**
 * Checks that the demo task is learnable from the shipped base model: held-out exact match
 * before, LoRA fine-tuning for a fixed time budget, held-out exact match after.
 *
 *   tsc -p tsconfig.json && node dist/scripts/demo-model/check-task.js [--model DIR --seconds 120 --r 16 --lr 2e-3]
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { demoTask, exactMatch, type PromptCompletion } from "../../src/data/demo-task.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "../../src/io/tokenizer.js";
import { PreTrainedModel } from "../../src/models/pretrained.js";
import { getPeftModel, PeftTrainer } from "../../src/tuners/index.js";
import { Rng } from "../../src/util/rng.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

const { values: args } = parseArgs({
  options: {
    model: { type: "string", default: join(REPO, "models/wordnet-llama") },
    seconds: { type: "string", default: "120" },
    r: { type: "string", default: "16" },
    alpha: { type: "string", default: "32" },
    target: { type: "string", default: "all-linear" },
    lr: { type: "string", default: "2e-3" },
    "batch-size": { type: "string", default: "16" },
    "max-train": { type: "string", default: "20000" },
    "max-eval": { type: "string", default: "300" },
    seed: { type: "string", default: "0" },
  },
});

interface Generator {
  generate(prompts: readonly (readonly number[])[], opts: { maxNewTokens: number; stop: number[][] }): Promise<number[][]>;
}

async function evaluate(
  gen: Generator,
  tok: PreTrainedTokenizer,
  items: PromptCompletion[],
  nl: number,
): Promise<{ accuracy: number; samples: string[] }> {
  let hits = 0;
  const samples: string[] = [];
  const bs = 32;
  for (let i = 0; i < items.length; i += bs) {
    const chunk = items.slice(i, i + bs);
    const prompts = chunk.map((x) => tok.encode(x.prompt, { addSpecialTokens: false }));
    const outs = await gen.generate(prompts, { maxNewTokens: 8, stop: [[nl]] });
    outs.forEach((o, k) => {
      const text = tok.decode(o.slice(prompts[k].length));
      const ok = exactMatch(text, chunk[k].completion);
      if (ok) hits++;
      if (i + k < 6)
        samples.push(
          `${ok ? "✓" : "✗"} ${JSON.stringify(chunk[k].prompt.split("\n")[1])} → ${JSON.stringify(text)} (want ${JSON.stringify(chunk[k].completion)})`,
        );
    });
  }
  return { accuracy: hits / items.length, samples };
}

async function main(): Promise<void> {
  const seconds = Number(args.seconds);
  const bs = Number(args["batch-size"]);
  const lr = Number(args.lr);
  const tok = await AutoTokenizer.fromPretrained(args.model as string);
  const model = await PreTrainedModel.load(args.model as string, "causal_lm");
  const task = demoTask({ maxTrain: Number(args["max-train"]), maxEval: Number(args["max-eval"]) });
  console.log(`task: ${task.train.length} train pairs, ${task.eval.length} held-out pairs`);
  const nl = tok.encode("\n", { addSpecialTokens: false })[0];
  const eos = tok.eosTokenId as number;

  let t = performance.now();
  const before = await evaluate(model, tok, task.eval, nl);
  console.log(`before: exact match ${(before.accuracy * 100).toFixed(1)}%  (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  for (const s of before.samples) console.log(`  ${s}`);

  const peft = getPeftModel(
    model,
    {
      peft_type: "LORA",
      r: Number(args.r),
      lora_alpha: Number(args.alpha),
      target_modules: (args.target as string).includes(",") ? (args.target as string).split(",") : args.target,
      lora_dropout: 0,
    },
    { seed: Number(args.seed) },
  );
  console.log(peft.printTrainableParameters(() => {}));
  t = performance.now();
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, clipNorm: 1 });
  console.log(`compiled LoRA step in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const encoded = task.train.map((x) => {
    const p = tok.encode(x.prompt, { addSpecialTokens: false });
    const c = [...tok.encode(x.completion, { addSpecialTokens: false }), eos];
    return { ids: [...p, ...c], labels: [...p.map(() => -100), ...c] };
  });
  const rng = new Rng(Number(args.seed) + 7);
  const start = performance.now();
  let step = 0;
  let avg = 0;
  while ((performance.now() - start) / 1000 < seconds) {
    const rows = Array.from({ length: bs }, () => encoded[Math.floor(rng.next() * encoded.length)]);
    const len = Math.max(...rows.map((r) => r.ids.length));
    const batch = {
      inputIds: rows.map((r) => [...r.ids, ...new Array(len - r.ids.length).fill(eos)]),
      attentionMask: rows.map((r) => [...r.ids.map(() => 1), ...new Array(len - r.ids.length).fill(0)]),
      labels: rows.map((r) => [...r.labels, ...new Array(len - r.ids.length).fill(-100)]),
    };
    // Warm-up, then linear decay over the time budget.
    const frac = (performance.now() - start) / 1000 / seconds;
    const res = await trainer.train(batch, { lr: lr * Math.min(1, (step + 1) / 20) * Math.max(0.05, 1 - frac) });
    step++;
    avg = step === 1 ? res.loss : 0.95 * avg + 0.05 * res.loss;
    if (step % 25 === 0)
      console.log(`step ${step}  loss ${res.loss.toFixed(4)}  avg ${avg.toFixed(4)}  ${((performance.now() - start) / 1000).toFixed(0)} s`);
  }
  console.log(`trained ${step} steps (${step * bs} examples) in ${((performance.now() - start) / 1000).toFixed(0)} s`);
  await trainer.release();

  t = performance.now();
  const after = await evaluate(peft, tok, task.eval, nl);
  console.log(`after:  exact match ${(after.accuracy * 100).toFixed(1)}%  (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  for (const s of after.samples) console.log(`  ${s}`);
  console.log(`RESULT before ${(before.accuracy * 100).toFixed(1)}%  after ${(after.accuracy * 100).toFixed(1)}%  steps ${step}`);
  await model.release();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
