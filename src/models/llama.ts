/**
 * LLaMA-family decoders: llama (SmolLM, TinyLlama, Llama 3.x), mistral (sliding window), qwen2
 * (q/k/v biases, sliding window on the upper layers when enabled). Follows transformers'
 * modeling_llama.py: RMSNorm in f32, rotary with rotate_half, grouped-query attention, SwiGLU MLP,
 * optional tied embeddings.
 */
import { hostTensor } from "../engine/ir/host.js";
import * as F from "../engine/trace/composites.js";
import { concat, constant, iota, type Tensor } from "../engine/trace/tensor.js";
import { checkpoint } from "../engine/trace/trace.js";
import { applyRotary, attend, mergeHeads, type RotaryTables, rotaryTables, slidingWindow, splitHeads } from "../nn/attention.js";
import type { ForwardContext } from "../nn/context.js";
import { linears, ModelError } from "../nn/context.js";
import { lastTokenPool } from "../nn/pooling.js";
import {
  causalSquare,
  layerPrefixes,
  maskWithOnes,
  prependSeq,
  realTokenPositions,
  softPromptPass,
  withLeadingKeys,
} from "../nn/prompt.js";
import {
  type ArchInputs,
  type Architecture,
  type ArchOutputs,
  decoderHeadLinears,
  type KeyValue,
  linearLayerPaths,
  type TaskHead,
} from "./architecture.js";
import { type Activation, activate, activationName, ConfigReader, type RawConfig } from "./config.js";

export interface LlamaConfig {
  modelType: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  eps: number;
  ropeTheta: number;
  /** Inverse rotary frequencies [headDim/2], rope scaling applied, rounded to f32 as torch has them. */
  invFreq: Float32Array;
  tied: boolean;
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  act: Activation;
  numLabels: number;
  bos: number[];
  eos: number[];
  pad: number | null;
  /** Per layer: the sliding window in key slots, or null for full causal attention. */
  windows: (number | null)[];
}

/**
 * Which layers attend through a sliding window, as transformers decides it. Mistral: every layer,
 * `sliding_window` defaulting to 4096 when the field is missing (MistralConfig) and null meaning
 * full attention; a `layer_types` field is ignored, as MistralModel does. Qwen2: the window exists
 * only with `use_sliding_window: true`, and applies to the layers whose `layer_types` entry is
 * "sliding_attention", by default those with index >= `max_window_layers` (Qwen2Config). Llama has
 * no window.
 */
function layerWindows(r: ConfigReader, modelType: string, layers: number): (number | null)[] {
  if (modelType === "mistral") return new Array<number | null>(layers).fill(r.positiveIntOrNull("sliding_window", 4096));
  if (modelType !== "qwen2") return new Array<number | null>(layers).fill(null);
  const window = r.bool("use_sliding_window", false) ? r.positiveIntOrNull("sliding_window", 4096) : null;
  const given = r.strList("layer_types");
  if (!given) {
    const first = r.int("max_window_layers", 28);
    return Array.from({ length: layers }, (_, i) => (window !== null && i >= first ? window : null));
  }
  if (given.length !== layers)
    throw new ModelError(`config.json: "layer_types" has ${given.length} entries, num_hidden_layers is ${layers}`);
  return given.map((t, i) => {
    if (t === "full_attention") return null;
    if (t !== "sliding_attention")
      throw new ModelError(`config.json: layer_types[${i}] is "${t}" (supported: full_attention, sliding_attention)`);
    if (window === null)
      throw new ModelError(
        `config.json: layer_types[${i}] is "sliding_attention" but there is no window (needs use_sliding_window: true and a sliding_window)`,
      );
    return window;
  });
}

/** inv_freq with rope_scaling, following transformers' modeling_rope_utils. */
export function ropeInvFreq(r: ConfigReader, headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const base = Array.from({ length: half }, (_, i) => Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / headDim))));
  const scaling = r.obj("rope_scaling");
  if (!scaling) return Float32Array.from(base);
  const type = (scaling.rope_type ?? scaling.type) as string | undefined;
  const factor = scaling.factor as number;
  if (type === "default") return Float32Array.from(base);
  if (typeof factor !== "number" || !(factor > 0))
    throw new ModelError(`config.json: rope_scaling.factor must be a positive number, got ${JSON.stringify(factor)}`);
  if (type === "linear") return Float32Array.from(base, (f) => f / factor);
  if (type === "llama3") {
    const low = scaling.low_freq_factor as number;
    const high = scaling.high_freq_factor as number;
    const oldCtx = scaling.original_max_position_embeddings as number;
    for (const [k, v] of Object.entries({ low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: oldCtx })) {
      if (typeof v !== "number" || !(v > 0))
        throw new ModelError(`config.json: rope_scaling.${k} must be a positive number, got ${JSON.stringify(v)}`);
    }
    const lowWavelen = oldCtx / low;
    const highWavelen = oldCtx / high;
    return Float32Array.from(base, (f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return f / factor;
      const smooth = (oldCtx / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  throw new ModelError(`config.json: rope_scaling type "${type}" is not supported (supported: linear, llama3)`);
}

function parseConfig(raw: RawConfig, opts: { numLabels?: number }): LlamaConfig {
  const r = new ConfigReader(raw);
  const modelType = r.str("model_type");
  const hidden = r.int("hidden_size");
  const heads = r.int("num_attention_heads");
  const kvHeads = r.int("num_key_value_heads", heads);
  r.divisible("num_attention_heads", heads, "num_key_value_heads", kvHeads);
  const headDim = r.has("head_dim") ? r.int("head_dim") : hidden / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new ModelError(`config.json: head dimension ${headDim} must be an even integer`);
  const ropeTheta = r.num("rope_theta", 10000);
  const qwen = modelType === "qwen2";
  const attentionBias = r.bool("attention_bias", false);
  const idToLabel = r.obj("id2label");
  const layers = r.int("num_hidden_layers");
  return {
    modelType,
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    intermediate: r.int("intermediate_size"),
    vocab: r.int("vocab_size"),
    eps: r.num("rms_norm_eps", 1e-6),
    ropeTheta,
    invFreq: ropeInvFreq(r, headDim, ropeTheta),
    tied: r.bool("tie_word_embeddings", false),
    qkvBias: qwen || attentionBias,
    oBias: !qwen && attentionBias,
    mlpBias: r.bool("mlp_bias", false),
    act: activationName(r.str("hidden_act", "silu")),
    numLabels: opts.numLabels ?? (idToLabel ? Object.keys(idToLabel).length : r.int("num_labels", 2)),
    bos: r.intList("bos_token_id"),
    eos: r.intList("eos_token_id"),
    pad: r.has("pad_token_id") ? r.int("pad_token_id") : null,
    windows: layerWindows(r, modelType, layers),
  };
}

const P = "model.";

function layerLinears(c: LlamaConfig, i: number): Record<string, [number, number, boolean]> {
  const p = `${P}layers.${i}.`;
  return {
    [`${p}self_attn.q_proj`]: [c.heads * c.headDim, c.hidden, c.qkvBias],
    [`${p}self_attn.k_proj`]: [c.kvHeads * c.headDim, c.hidden, c.qkvBias],
    [`${p}self_attn.v_proj`]: [c.kvHeads * c.headDim, c.hidden, c.qkvBias],
    [`${p}self_attn.o_proj`]: [c.hidden, c.heads * c.headDim, c.oBias],
    [`${p}mlp.gate_proj`]: [c.intermediate, c.hidden, c.mlpBias],
    [`${p}mlp.up_proj`]: [c.intermediate, c.hidden, c.mlpBias],
    [`${p}mlp.down_proj`]: [c.hidden, c.intermediate, c.mlpBias],
  };
}

function expectedWeights(c: LlamaConfig, head: TaskHead): Map<string, number[]> {
  const w = new Map<string, number[]>();
  w.set(`${P}embed_tokens.weight`, [c.vocab, c.hidden]);
  for (let i = 0; i < c.layers; i++) {
    w.set(`${P}layers.${i}.input_layernorm.weight`, [c.hidden]);
    w.set(`${P}layers.${i}.post_attention_layernorm.weight`, [c.hidden]);
    for (const [path, [out, inp, bias]] of Object.entries(layerLinears(c, i))) {
      w.set(`${path}.weight`, [out, inp]);
      if (bias) w.set(`${path}.bias`, [out]);
    }
  }
  w.set(`${P}norm.weight`, [c.hidden]);
  if (head === "causal_lm") w.set("lm_head.weight", [c.vocab, c.hidden]);
  if (head === "sequence_classification") w.set("score.weight", [c.numLabels, c.hidden]);
  // transformers' LlamaForTokenClassification: nn.Linear(hidden, num_labels) with a bias, on every token.
  if (head === "token_classification") {
    w.set("score.weight", [c.numLabels, c.hidden]);
    w.set("score.bias", [c.numLabels]);
  }
  return w;
}

/**
 * Causal + padding mask [B, T, S]: query i (absolute position cachePosition[i]) may see key j when
 * j <= cachePosition[i] and the key is not padding.
 */
function decoderMask(inputs: ArchInputs, seqLen: Tensor): Tensor {
  const mask = inputs.attentionMask;
  const cachePos = queryCachePositions(inputs, seqLen);
  const keyCount = mask ? mask.shape[1] : seqLen.shape[1];
  const keys = iota([1, keyCount], 1);
  const causal = keys.le(cachePos.unsqueeze(-1)).unsqueeze(0);
  if (!mask) return causal;
  return causal.and(mask.ne(0).unsqueeze(1));
}

/** Cache positions [T] of the queries: given while decoding with a cache, else 0..T−1. */
function queryCachePositions(inputs: ArchInputs, seqLen: Tensor): Tensor {
  return inputs.cachePosition ?? iota([seqLen.shape[1]], 0);
}

/**
 * The mask of each layer: `allowed` [B|1, T, S] as it is, or narrowed to the layer's sliding
 * window, built once per distinct window. `querySlots` [T] are the queries' slots on the key axis
 * (prompt-learning rows counted), which is what the window is measured in.
 */
function layerMasks(c: LlamaConfig, allowed: Tensor | null, querySlots: Tensor): (layer: number) => Tensor | null {
  const byWindow = new Map<number, Tensor>();
  return (layer) => {
    const w = c.windows[layer];
    if (w === null || !allowed) return allowed;
    let m = byWindow.get(w);
    if (!m) {
      m = slidingWindow(allowed, querySlots, w);
      byWindow.set(w, m);
    }
    return m;
  };
}

/**
 * One decoder layer. `lead` holds key/value rows placed before this layer's own keys (prefix
 * tuning's prefix, soft-prompt tokens); `allowed` already covers them. Returns the new hidden
 * state and the layer's own keys/values (with the past), which is what the KV cache keeps.
 */
function decoderLayer(
  ctx: ForwardContext,
  c: LlamaConfig,
  i: number,
  h: Tensor,
  rot: RotaryTables,
  allowed: Tensor | null,
  lead: KeyValue | null,
  past: KeyValue | undefined,
): { h: Tensor; kv: KeyValue } {
  const p = `${P}layers.${i}.`;
  const x = F.rmsNorm(h, ctx.weight(`${p}input_layernorm.weight`), c.eps);
  const [qy, ky, vy] = linears(ctx, [`${p}self_attn.q_proj`, `${p}self_attn.k_proj`, `${p}self_attn.v_proj`], x, [
    c.heads * c.headDim,
    c.kvHeads * c.headDim,
    c.kvHeads * c.headDim,
  ]);
  const q = applyRotary(splitHeads(qy, c.heads, c.headDim), rot);
  let k = applyRotary(splitHeads(ky, c.kvHeads, c.headDim), rot);
  let v = splitHeads(vy, c.kvHeads, c.headDim);
  k = ctx.hook({ kind: "key", layer: i, path: `${p}self_attn.k_proj` }, k);
  v = ctx.hook({ kind: "value", layer: i, path: `${p}self_attn.v_proj` }, v);
  if (past) {
    k = concat([past.key, k], 2);
    v = concat([past.value, v], 2);
  }
  const keys = lead ? prependSeq(lead.key, k, 2) : k;
  const values = lead ? prependSeq(lead.value, v, 2) : v;
  const attn = attend(q, keys, values, allowed, 1 / Math.sqrt(c.headDim));
  const o = ctx.hook({ kind: "attention_output", layer: i }, ctx.linear(`${p}self_attn.o_proj`, mergeHeads(attn)));
  const h1 = h.add(o);
  const x2 = ctx.hook({ kind: "mlp_input", layer: i }, F.rmsNorm(h1, ctx.weight(`${p}post_attention_layernorm.weight`), c.eps));
  const [gate, up] = linears(ctx, [`${p}mlp.gate_proj`, `${p}mlp.up_proj`], x2, [c.intermediate, c.intermediate]);
  const gated = activate(gate, c.act).mul(up);
  const hidden = ctx.hook({ kind: "mlp_hidden", layer: i, path: `${p}mlp.down_proj` }, gated);
  const m = ctx.hook({ kind: "mlp_output", layer: i }, ctx.linear(`${p}mlp.down_proj`, hidden));
  return { h: h1.add(m), kv: { key: k, value: v } };
}

/**
 * Prompt-learning inputs: a prefix of n key/value rows per layer shifts the positions of the real
 * tokens by n (transformers counts the cache), and n soft tokens take positions 0..n−1 just before
 * each row's first real token, whose positions (given ones skip left padding) shift by n — see
 * realTokenPositions; this keeps a left-padded row equal to the row alone. Soft tokens come first
 * and see only each other, so in a causal decoder their keys/values do not depend on the input:
 * they are computed in a pass of their own and then act as a prefix, which also serves cached
 * decoding.
 */
function forward(ctx: ForwardContext, c: LlamaConfig, inputs: ArchInputs, head: TaskHead): ArchOutputs {
  const ids = inputs.inputIds;
  if (!ids) throw new ModelError(`${c.modelType}: forward needs inputIds`);
  const [b, t] = ids.shape;
  let h = ctx.embedding(`${P}embed_tokens`, ids);
  h = ctx.hook({ kind: "embeddings", x: h }, h);
  const invFreq = constant(hostTensor("f32", [c.headDim / 2], c.invFreq));
  const { prefixes, length: pre } = layerPrefixes(ctx, c.layers, ids);
  const soft = ctx.softPrompt(ids);
  const n = soft ? soft.dim(1) : 0;
  let leads: (KeyValue | null)[] = prefixes;
  let promptHidden: Tensor | null = null;
  if (soft) {
    const rot = rotaryTables(iota([b, n], 1).add(pre), invFreq);
    const allowedP = layerMasks(c, withLeadingKeys(causalSquare(n), pre), iota([n], 0).add(pre));
    const pass = softPromptPass(c.layers, prefixes, ctx.hook({ kind: "embeddings", x: soft }, soft), (i, hp, lead) =>
      decoderLayer(ctx, c, i, hp, rot, allowedP(i), lead, undefined),
    );
    leads = pass.leads;
    promptHidden = pass.hidden;
  }
  const positions = realTokenPositions(b, t, pre, n, inputs.positionIds, inputs.cachePosition);
  const rot = rotaryTables(positions, invFreq);
  const allowed = layerMasks(c, withLeadingKeys(decoderMask(inputs, ids), pre + n), queryCachePositions(inputs, ids).add(pre + n));
  const present: KeyValue[] = [];
  for (let i = 0; i < c.layers; i++) {
    const r = checkpoint(() => decoderLayer(ctx, c, i, h, rot, allowed(i), leads[i], inputs.past?.[i]));
    h = r.h;
    present.push(r.kv);
  }
  if (promptHidden) h = prependSeq(promptHidden, h, 1);
  h = F.rmsNorm(h, ctx.weight(`${P}norm.weight`), c.eps);
  const out: ArchOutputs = { lastHiddenState: h, present };
  if (head === "causal_lm") out.logits = ctx.linear("lm_head", h);
  if (head === "sequence_classification") {
    const mask = inputs.attentionMask ? maskWithOnes(inputs.attentionMask, n) : undefined;
    out.logits = ctx.linear("score", lastTokenPool(h, mask));
  }
  if (head === "token_classification") out.logits = ctx.linear("score", h);
  return out;
}

export const LLAMA: Architecture<LlamaConfig> = {
  name: "llama",
  modelTypes: ["llama", "mistral", "qwen2"],
  heads: ["base", "causal_lm", "sequence_classification", "token_classification"],
  basePrefix: () => P,
  parseConfig,
  expectedWeights,
  ignorable: (n) => n.endsWith("rotary_emb.inv_freq"),
  tiedWeights: (c, head) => (head === "causal_lm" && c.tied ? new Map([["lm_head.weight", `${P}embed_tokens.weight`]]) : new Map()),
  forward,
  decoderShape: (c) => ({ layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim }),
  specialTokens: (c) => ({ bos: c.bos, eos: c.eos, pad: c.pad }),
  linearLayers: (c, head) => linearLayerPaths(c.layers, (i) => layerLinears(c, i), decoderHeadLinears(head)),
  fanInFanOut: false,
};
