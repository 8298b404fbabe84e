/**
 * `peftkit bench generate --prune-hidden F`: greedy decoding speed with the KV cache for a model
 * and the same model with its hidden size pruned to round(F·hidden) channels by
 * src/prune/hidden-size.ts (PAT's merge; random weights, the first channels kept: the speed does
 * not depend on which). The two alternate in every round, so warm-up and drift favour neither.
 */
import { readFileSync } from "node:fs";
import { PreTrainedModel } from "../src/models/pretrained.js";
import { pruneHiddenSize } from "../src/prune/hidden-size.js";

export interface PrunedGenerateBenchOptions {
  config: string;
  share: number;
  promptLength: number;
  newTokens: number;
  batch: number;
  repeats: number;
  threads?: number;
}

export async function runPrunedGenerateBench(o: PrunedGenerateBenchOptions): Promise<Record<string, unknown>[]> {
  const config = JSON.parse(readFileSync(o.config, "utf8")) as Record<string, unknown>;
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { threads: o.threads ?? 2, seed: 0 });
  const hidden = config.hidden_size as number;
  const kept = Math.round(o.share * hidden);
  const pruned = pruneHiddenSize(
    model,
    Array.from({ length: kept }, (_, j) => j),
  );
  const vocab = config.vocab_size as number;
  const prompts = Array.from({ length: o.batch }, (_, b) =>
    Array.from({ length: o.promptLength }, (_, t) => (b * 31 + t * 17 + 5) % vocab),
  );
  const opts = { maxNewTokens: o.newTokens, eosTokenId: [] as number[] };
  const modes: [string, PreTrainedModel][] = [
    ["base", model],
    ["pruned_hidden", pruned],
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
  const params = (m: PreTrainedModel) => {
    let n = 0;
    const seen = new Set<unknown>();
    for (const t of m.weights.values()) {
      if (seen.has(t)) continue;
      seen.add(t);
      n += t.data.length;
    }
    return n;
  };
  const baseMs = med("base");
  await model.release();
  await pruned.release();
  const row = (mode: string, m: PreTrainedModel, ms: number) => ({
    bench: "generate",
    mode,
    hidden_size: (m.config.hidden_size as number) ?? hidden,
    parameters: params(m),
    batch: o.batch,
    prompt_tokens: o.promptLength,
    new_tokens: o.newTokens,
    ms,
    tokens_per_s: (o.batch * o.newTokens) / (ms / 1000),
    speedup_vs_base: baseMs / ms,
    date: new Date().toISOString(),
  });
  return [row("base", model, baseMs), row("pruned_hidden", pruned, med("pruned_hidden"))];
}
