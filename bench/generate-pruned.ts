/**
 * `peftkit bench generate` with --attn-pruning-ratio / --ffn-pruning-ratio (Light-PEFT's structural
 * pruning, src/prune/heads-ffn.ts) and/or --prune-hidden F (PAT's, src/prune/hidden-size.ts):
 * greedy decoding speed with the KV cache for a model (random weights from an HF config) against
 * the same model pruned. Random mask scores stand in for an estimation phase, and the first
 * channels are the kept ones: which units go does not change the speed, how many does. The two
 * models alternate in every round, so warm-up and drift favour neither.
 */
import { readFileSync } from "node:fs";
import { PreTrainedModel } from "../src/models/pretrained.js";
import { prunableShape, pruneModel } from "../src/prune/heads-ffn.js";
import { pruneHiddenSize } from "../src/prune/hidden-size.js";
import { backbonePlan } from "../src/tuners/light_peft/plan.js";
import { Rng } from "../src/util/rng.js";

export interface PrunedGenerateBenchOptions {
  config: string;
  /** Light-PEFT: share of heads (in whole KV groups) and of FFN neurons pruned in every layer. */
  attnRatio?: number;
  ffnRatio?: number;
  /** PAT: share of the hidden (residual-stream) channels kept. */
  hiddenShare?: number;
  promptLength: number;
  newTokens: number;
  batch: number;
  repeats: number;
  threads?: number;
}

/** Parameters counted once per storage, so tied embedding and head count once. */
function parameterCount(m: PreTrainedModel): number {
  const seen = new Set<unknown>();
  let n = 0;
  for (const t of m.weights.values()) {
    if (seen.has(t.data)) continue;
    seen.add(t.data);
    n += t.data.length;
  }
  return n;
}

function pruned(model: PreTrainedModel, o: PrunedGenerateBenchOptions): PreTrainedModel {
  let out = model;
  if (o.attnRatio !== undefined || o.ffnRatio !== undefined) {
    const shape = prunableShape(model, "bench generate --attn-pruning-ratio/--ffn-pruning-ratio");
    const rng = new Rng(7);
    const scores = (n: number) => Array.from({ length: shape.layers }, () => Float32Array.from({ length: n }, () => rng.next()));
    const plan = backbonePlan(shape, scores(shape.heads), scores(shape.intermediate), o.attnRatio ?? 0, o.ffnRatio ?? 0);
    out = pruneModel(out, plan);
  }
  if (o.hiddenShare !== undefined) {
    const kept = Math.round(o.hiddenShare * (out.config.hidden_size as number));
    out = pruneHiddenSize(
      out,
      Array.from({ length: kept }, (_, j) => j),
    );
  }
  return out;
}

export async function runPrunedGenerateBench(o: PrunedGenerateBenchOptions): Promise<Record<string, unknown>[]> {
  const config = JSON.parse(readFileSync(o.config, "utf8")) as Record<string, unknown>;
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { threads: o.threads ?? 2, seed: 0 });
  const small = pruned(model, o);
  const vocab = config.vocab_size as number;
  const prompts = Array.from({ length: o.batch }, (_, b) =>
    Array.from({ length: o.promptLength }, (_, t) => (b * 31 + t * 17 + 5) % vocab),
  );
  const opts = { maxNewTokens: o.newTokens, eosTokenId: [] as number[] };
  const modes: [string, PreTrainedModel][] = [
    ["base", model],
    ["pruned", small],
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
    hidden_size: m.config.hidden_size,
    heads: m.config.num_attention_heads,
    kv_heads: m.config.num_key_value_heads ?? m.config.num_attention_heads,
    intermediate: m.config.intermediate_size,
    params: parameterCount(m),
    ms: med(name),
    tokens_per_s: (o.batch * o.newTokens) / (med(name) / 1000),
    speedup_vs_base: baseMs / med(name),
    date: new Date().toISOString(),
  }));
  await small.release();
  await model.release();
  return rows;
}
