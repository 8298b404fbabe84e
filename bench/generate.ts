/**
 * `peftkit bench generate`: greedy decoding speed with the KV cache for the base model, the same
 * model with an unmerged LoRA adapter, and with the adapter merged.
 */
import { readFileSync } from "node:fs";
import { PreTrainedModel } from "../src/models/pretrained.js";
import { methodConfig } from "../src/train/methods.js";
import { PeftModel } from "../src/tuners/peft-model.js";

export interface GenerateBenchOptions {
  config: string;
  r: number;
  target: string[];
  promptLength: number;
  newTokens: number;
  batch: number;
  repeats: number;
  threads?: number;
}

export async function runGenerateBench(o: GenerateBenchOptions): Promise<Record<string, unknown>[]> {
  const config = JSON.parse(readFileSync(o.config, "utf8")) as Record<string, unknown>;
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { threads: o.threads ?? 2, seed: 0 });
  const vocab = config.vocab_size as number;
  const prompts = Array.from({ length: o.batch }, (_, b) =>
    Array.from({ length: o.promptLength }, (_, t) => (b * 31 + t * 17 + 5) % vocab),
  );
  const opts = { maxNewTokens: o.newTokens, eosTokenId: [] as number[] };
  // Two copies of the model: one keeps the adapter unmerged (and runs the base with it disabled),
  // the other has the same adapter merged. The three modes alternate in every round, so warm-up
  // and drift in machine speed do not favour whichever runs last.
  const loraConfig = { ...methodConfig("lora", { r: o.r, alpha: 2 * o.r, target: o.target }), init_lora_weights: false };
  const peft = PeftModel.create(model, loraConfig, { seed: 1 });
  const other = PreTrainedModel.fromConfig(config, "causal_lm", { threads: o.threads ?? 2, seed: 0 });
  const merged = PeftModel.create(other, loraConfig, { seed: 1 }).mergeAndUnload();
  const modes: [string, () => Promise<unknown>][] = [
    ["base", () => peft.disableAdapter(() => peft.generate(prompts, opts))],
    ["lora_unmerged", () => peft.generate(prompts, opts)],
    ["lora_merged", () => merged.generate(prompts, opts)],
  ];
  const times = new Map<string, number[]>(modes.map(([m]) => [m, []]));
  for (const [, run] of modes) await run();
  for (let i = 0; i < o.repeats; i++) {
    for (const [m, run] of i % 2 ? [...modes].reverse() : modes) {
      const s = performance.now();
      await run();
      times.get(m)?.push(performance.now() - s);
    }
  }
  const med = (m: string) => {
    const ts = [...(times.get(m) as number[])].sort((a, b) => a - b);
    return ts[Math.floor(ts.length / 2)];
  };
  const [base, unmerged, mergedMs] = ["base", "lora_unmerged", "lora_merged"].map(med);
  await model.release();
  await other.release();
  const row = (mode: string, ms: number) => ({
    bench: "generate",
    mode,
    batch: o.batch,
    prompt_tokens: o.promptLength,
    new_tokens: o.newTokens,
    ms,
    tokens_per_s: (o.batch * o.newTokens) / (ms / 1000),
    vs_merged: ms / mergedMs,
    date: new Date().toISOString(),
  });
  return [row("base", base), row("lora_unmerged", unmerged), row("lora_merged", mergedMs)];
}
