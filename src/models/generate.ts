/**
 * Autoregressive decoding with a KV cache. One compiled graph serves prefill and every decode
 * step: past keys/values have a symbolic length ("past", 0 at prefill) and the graph returns the
 * logits of the last position plus the grown cache.
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import { ModelError } from "../nn/context.js";
import { Rng } from "../util/rng.js";
import type { KeyValue } from "./architecture.js";
import { type PreTrainedModel, traceModelGraph } from "./pretrained.js";

export interface GenerateOptions {
  /** New tokens per row (default 20). */
  maxNewTokens?: number;
  /** 0 or absent: greedy. Otherwise sample from softmax(logits / temperature). */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampler (default 0): the same seed gives the same tokens. */
  seed?: number;
  /** Token(s) that end a row; default the config's eos_token_id. */
  eosTokenId?: number | number[];
  /** Token used for left padding and finished rows; default the config's pad, else the first eos, else 0. */
  padTokenId?: number;
  /** Token sequences that end a row when generated (the sequence is kept). */
  stop?: number[][];
}

/** Picks the next token from one row of logits. */
export function pickToken(logits: Float32Array, opts: GenerateOptions, rand: () => number): number {
  const temp = opts.temperature ?? 0;
  if (!(temp > 0)) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let idx = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  if (opts.topK && opts.topK > 0) idx = idx.slice(0, opts.topK);
  const max = logits[idx[0]];
  let probs = idx.map((i) => Math.exp((logits[i] - max) / temp));
  let total = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / total);
  if (opts.topP !== undefined && opts.topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < probs.length && (keep === 0 || cum < opts.topP)) cum += probs[keep++];
    idx = idx.slice(0, keep);
    probs = probs.slice(0, keep);
    total = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / total);
  }
  let r = rand();
  for (let i = 0; i < probs.length; i++) {
    r -= probs[i];
    if (r <= 0) return idx[i];
  }
  return idx[idx.length - 1];
}

function decodeGraph(model: PreTrainedModel) {
  const shape = model.arch.decoderShape?.(model.archConfig);
  if (!shape || model.head !== "causal_lm")
    throw new ModelError(`generate() needs a causal LM with a KV cache; this is a ${model.modelType} ${model.head} model`);
  const decls: Record<string, { dtype: "i64" | "f32"; shape: (number | string)[] }> = {
    input_ids: { dtype: "i64", shape: ["batch", "seq"] },
    attention_mask: { dtype: "i64", shape: ["batch", "past+seq"] },
    position_ids: { dtype: "i64", shape: ["batch", "seq"] },
    cache_position: { dtype: "i64", shape: ["seq"] },
  };
  for (let i = 0; i < shape.layers; i++) {
    decls[`past.${i}.key`] = { dtype: "f32", shape: ["batch", shape.kvHeads, "past", shape.headDim] };
    decls[`past.${i}.value`] = { dtype: "f32", shape: ["batch", shape.kvHeads, "past", shape.headDim] };
  }
  return {
    shape,
    build: () => {
      const g = traceModelGraph(model, decls, (ctx, t) => {
        const past: KeyValue[] = [];
        for (let i = 0; i < shape.layers; i++) past.push({ key: t[`past.${i}.key`], value: t[`past.${i}.value`] });
        const out = model.arch.forward(
          ctx,
          model.archConfig,
          { inputIds: t.input_ids, attentionMask: t.attention_mask, positionIds: t.position_ids, cachePosition: t.cache_position, past },
          "causal_lm",
        );
        const o: Record<string, Tensor> = { logits: (out.logits as Tensor).select(1, -1) };
        (out.present ?? []).forEach((kv, i) => {
          o[`present.${i}.key`] = kv.key;
          o[`present.${i}.value`] = kv.value;
        });
        return o;
      });
      // All runs but the prefill see one token per row.
      g.smallTensors = true;
      return g;
    },
  };
}

const i64 = (shape: number[], values: number[]) =>
  hostTensor(
    "i64",
    shape,
    BigInt64Array.from(values, (v) => BigInt(v)),
  );

/** Generates for a batch of prompts (any lengths: they are left-padded); returns prompt + new tokens per row. */
export async function generate(
  model: PreTrainedModel,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions = {},
): Promise<number[][]> {
  if (prompts.length === 0 || prompts.some((p) => p.length === 0)) throw new ModelError("generate: every prompt needs at least one token");
  const special = model.arch.specialTokens(model.archConfig);
  const eos = new Set(opts.eosTokenId === undefined ? special.eos : Array.isArray(opts.eosTokenId) ? opts.eosTokenId : [opts.eosTokenId]);
  const pad = opts.padTokenId ?? special.pad ?? special.eos[0] ?? 0;
  const maxNew = opts.maxNewTokens ?? 20;
  const { shape, build } = decodeGraph(model);
  const exec = await model.executor("generate", build);
  const b = prompts.length;
  const t0 = Math.max(...prompts.map((p) => p.length));
  const ids: number[] = [];
  const mask: number[] = [];
  const pos: number[] = [];
  for (const p of prompts) {
    const padN = t0 - p.length;
    for (let j = 0; j < t0; j++) {
      const real = j >= padN;
      ids.push(real ? p[j - padN] : pad);
      mask.push(real ? 1 : 0);
      pos.push(real ? j - padN : 1);
    }
  }
  const maskRows = prompts.map((_, i) => mask.slice(i * t0, (i + 1) * t0));
  const realCount = prompts.map((p) => p.length);
  let past: Record<string, HostTensor> = {};
  for (let i = 0; i < shape.layers; i++) {
    past[`past.${i}.key`] = hostTensor("f32", [b, shape.kvHeads, 0, shape.headDim], new Float32Array(0));
    past[`past.${i}.value`] = hostTensor("f32", [b, shape.kvHeads, 0, shape.headDim], new Float32Array(0));
  }
  const out = prompts.map((p) => [...p]);
  const done = prompts.map(() => false);
  const rng = new Rng(opts.seed ?? 0);
  const rand = () => rng.next();
  let step = { ids: i64([b, t0], ids), pos: i64([b, t0], pos), cache: Array.from({ length: t0 }, (_, j) => j) };
  let total = t0;
  for (let n = 0; n < maxNew && done.some((d) => !d); n++) {
    const feeds = {
      input_ids: step.ids,
      attention_mask: i64([b, total], maskRows.flat()),
      position_ids: step.pos,
      cache_position: i64([step.cache.length], step.cache),
      ...past,
    };
    const res = await exec.run(model.feedsFor(exec.graph, feeds));
    const next: HostTensor[] = [];
    const presents: Record<string, HostTensor> = {};
    exec.graph.outputs.forEach((o, i) => {
      if (o.name === "logits") next.push(res[i]);
      else presents[o.name.replace("present.", "past.")] = res[i];
    });
    past = presents;
    const logits = next[0].data as Float32Array;
    const vocab = next[0].shape[1];
    const chosen: number[] = [];
    for (let r = 0; r < b; r++) {
      if (done[r]) {
        chosen.push(pad);
        continue;
      }
      const tok = pickToken(logits.subarray(r * vocab, (r + 1) * vocab), opts, rand);
      out[r].push(tok);
      chosen.push(tok);
      // A stop sequence counts only within the new tokens (as vLLM's stop strings): a prompt
      // that ends with its first tokens must not stop the row early.
      const fresh = out[r].length - prompts[r].length;
      const stops = (s: readonly number[]) =>
        s.length > 0 && s.length <= fresh && s.every((v, k) => out[r][out[r].length - s.length + k] === v);
      if (eos.has(tok) || (opts.stop ?? []).some(stops)) done[r] = true;
    }
    for (let r = 0; r < b; r++) maskRows[r].push(1);
    step = {
      ids: i64([b, 1], chosen),
      pos: i64(
        [b, 1],
        realCount.map((c) => c + n),
      ),
      cache: [total],
    };
    total += 1;
  }
  return out;
}
