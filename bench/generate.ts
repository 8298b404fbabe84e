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
  const time = async (gen: () => Promise<unknown>) => {
    await gen();
    const ts: number[] = [];
    for (let i = 0; i < o.repeats; i++) {
      const s = performance.now();
      await gen();
      ts.push(performance.now() - s);
    }
    return [...ts].sort((a, b) => a - b)[Math.floor(ts.length / 2)];
  };
  const base = await time(() => model.generate(prompts, opts));
  const peft = PeftModel.create(
    model,
    { ...methodConfig("lora", { r: o.r, alpha: 2 * o.r, target: o.target }), init_lora_weights: false },
    { seed: 1 },
  );
  const unmerged = await time(() => peft.generate(prompts, opts));
  peft.mergeAdapter();
  const merged = await time(() => peft.generate(prompts, opts));
  await model.release();
  const row = (mode: string, ms: number) => ({
    bench: "generate",
    mode,
    batch: o.batch,
    prompt_tokens: o.promptLength,
    new_tokens: o.newTokens,
    ms,
    tokens_per_s: (o.batch * o.newTokens) / (ms / 1000),
    vs_merged: ms / merged,
    date: new Date().toISOString(),
  });
  return [row("base", base), row("lora_unmerged", unmerged), row("lora_merged", merged)];
}
