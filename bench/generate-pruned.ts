/**
 * `peftkit bench generate --attn-pruning-ratio R --ffn-pruning-ratio R`: greedy decoding speed with
 * the KV cache for a model (random weights from an HF config) and for the same model pruned by
 * Light-PEFT's rule (src/tuners/light_peft/plan.ts backbonePlan, src/prune/heads-ffn.ts), with
 * random mask scores standing in for an estimation phase: which heads and neurons go does not
 * change the speed, how many does. The two alternate in every round.
 */
import { readFileSync } from "node:fs";
import { PreTrainedModel } from "../src/models/pretrained.js";
import { prunableShape, pruneModel } from "../src/prune/heads-ffn.js";
import { backbonePlan } from "../src/tuners/light_peft/plan.js";
import { Rng } from "../src/util/rng.js";

export interface PrunedGenerateBenchOptions {
  config: string;
  attnRatio: number;
  ffnRatio: number;
  promptLength: number;
  newTokens: number;
  batch: number;
  repeats: number;
  threads?: number;
}

const params = (m: PreTrainedModel) => {
  const seen = new Set<unknown>();
  let n = 0;
  for (const t of m.weights.values()) {
    if (seen.has(t.data)) continue;
    seen.add(t.data);
    n += t.data.length;
  }
  return n;
};

export async function runPrunedGenerateBench(o: PrunedGenerateBenchOptions): Promise<Record<string, unknown>[]> {
  const config = JSON.parse(readFileSync(o.config, "utf8")) as Record<string, unknown>;
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { threads: o.threads ?? 2, seed: 0 });
  const shape = prunableShape(model, "bench generate --attn-pruning-ratio/--ffn-pruning-ratio");
  const rng = new Rng(7);
  const scores = (n: number) => Array.from({ length: shape.layers }, () => Float32Array.from({ length: n }, () => rng.next()));
  const plan = backbonePlan(shape, scores(shape.heads), scores(shape.intermediate), o.attnRatio, o.ffnRatio);
  const pruned = pruneModel(model, plan);
  const vocab = config.vocab_size as number;
  const prompts = Array.from({ length: o.batch }, (_, b) =>
    Array.from({ length: o.promptLength }, (_, t) => (b * 31 + t * 17 + 5) % vocab),
  );
  const opts = { maxNewTokens: o.newTokens, eosTokenId: [] as number[] };
  const modes: [string, PreTrainedModel][] = [
    ["base", model],
    ["light_peft_pruned", pruned],
  ];
  const times = new Map<string, number[]>(modes.map(([m]) => [m, []]));
  for (const [, m] of modes) await m.generate(prompts, opts);
  for (let i = 0; i < o.repeats; i++) {
    for (const [name, m] of i % 2 ? [...modes].reverse() : modes) {
      const s = performance.now();
      await m.generate(prompts, opts);
      times.get(name)?.push(performance.now() - s);
    }
  }
  const med = (m: string) => {
    const ts = [...(times.get(m) as number[])].sort((a, b) => a - b);
    return ts[Math.floor(ts.length / 2)];
  };
  const baseMs = med("base");
  const rows = modes.map(([name, m]) => ({
    bench: "generate",
    mode: name,
    batch: o.batch,
    prompt_tokens: o.promptLength,
    new_tokens: o.newTokens,
    heads: m.config.num_attention_heads,
    kv_heads: m.config.num_key_value_heads ?? m.config.num_attention_heads,
    intermediate: m.config.intermediate_size,
    params: params(m),
    ms: med(name),
    tokens_per_s: (o.batch * o.newTokens) / (med(name) / 1000),
    vs_base: med(name) / baseMs,
    date: new Date().toISOString(),
  }));
  await pruned.release();
  await model.release();
  return rows;
}
