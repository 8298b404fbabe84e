/**
 * GPT-2 (modeling_gpt2.py): learned positions, pre-norm blocks, fused c_attn Conv1D whose weights
 * are stored [in, out], gelu_new MLP, lm_head tied to wte.
 */
import * as F from "../engine/trace/composites.js";
import { concat, iota, type Tensor } from "../engine/trace/tensor.js";
import { checkpoint } from "../engine/trace/trace.js";
import { attend, mergeHeads, splitHeads } from "../nn/attention.js";
import { type ForwardContext, ModelError } from "../nn/context.js";
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

export interface Gpt2Config {
  hidden: number;
  layers: number;
  heads: number;
  inner: number;
  vocab: number;
  positions: number;
  eps: number;
  act: Activation;
  scaleByInverseLayer: boolean;
  numLabels: number;
  bos: number[];
  eos: number[];
  pad: number | null;
  /** lm_head.weight is wte.weight (transformers' default for GPT-2). */
  tied: boolean;
}

const P = "transformer.";

function parseConfig(raw: RawConfig, opts: { numLabels?: number }): Gpt2Config {
  const r = new ConfigReader(raw);
  const hidden = r.int("n_embd");
  const heads = r.int("n_head");
  r.divisible("n_embd", hidden, "n_head", heads);
  const idToLabel = r.obj("id2label");
  return {
    hidden,
    layers: r.int("n_layer"),
    heads,
    inner: r.has("n_inner") ? r.int("n_inner") : 4 * hidden,
    vocab: r.int("vocab_size"),
    positions: r.int("n_positions", 1024),
    eps: r.num("layer_norm_epsilon", 1e-5),
    act: activationName(r.str("activation_function", "gelu_new")),
    scaleByInverseLayer: r.bool("scale_attn_by_inverse_layer_idx", false),
    numLabels: opts.numLabels ?? (idToLabel ? Object.keys(idToLabel).length : r.int("num_labels", 2)),
    bos: r.intList("bos_token_id"),
    eos: r.intList("eos_token_id"),
    pad: r.has("pad_token_id") ? r.int("pad_token_id") : null,
    tied: r.bool("tie_word_embeddings", true),
  };
}

function layerLinears(c: Gpt2Config, i: number): Record<string, [number, number]> {
  const p = `${P}h.${i}.`;
  // Conv1D shapes as stored: [in, out].
  return {
    [`${p}attn.c_attn`]: [c.hidden, 3 * c.hidden],
    [`${p}attn.c_proj`]: [c.hidden, c.hidden],
    [`${p}mlp.c_fc`]: [c.hidden, c.inner],
    [`${p}mlp.c_proj`]: [c.inner, c.hidden],
  };
}

function expectedWeights(c: Gpt2Config, head: TaskHead): Map<string, number[]> {
  const w = new Map<string, number[]>();
  w.set(`${P}wte.weight`, [c.vocab, c.hidden]);
  w.set(`${P}wpe.weight`, [c.positions, c.hidden]);
  for (let i = 0; i < c.layers; i++) {
    for (const ln of ["ln_1", "ln_2"]) {
      w.set(`${P}h.${i}.${ln}.weight`, [c.hidden]);
      w.set(`${P}h.${i}.${ln}.bias`, [c.hidden]);
    }
    for (const [path, [inp, out]] of Object.entries(layerLinears(c, i))) {
      w.set(`${path}.weight`, [inp, out]);
      w.set(`${path}.bias`, [out]);
    }
  }
  w.set(`${P}ln_f.weight`, [c.hidden]);
  w.set(`${P}ln_f.bias`, [c.hidden]);
  if (head === "causal_lm") w.set("lm_head.weight", [c.vocab, c.hidden]);
  if (head === "sequence_classification") w.set("score.weight", [c.numLabels, c.hidden]);
  return w;
}

/** One block; `lead` are key/value rows before the layer's own (prefix, soft tokens), covered by `allowed`. */
function block(
  ctx: ForwardContext,
  c: Gpt2Config,
  i: number,
  h: Tensor,
  allowed: Tensor | null,
  lead: KeyValue | null,
  past: KeyValue | undefined,
): { h: Tensor; kv: KeyValue } {
  const p = `${P}h.${i}.`;
  const hd = c.hidden / c.heads;
  const fif = { fanInFanOut: true };
  const x = F.layerNorm(h, ctx.weight(`${p}ln_1.weight`), ctx.weight(`${p}ln_1.bias`), c.eps);
  const [q0, k0, v0] = ctx.linear(`${p}attn.c_attn`, x, fif).split([c.hidden, c.hidden, c.hidden], -1);
  const q = splitHeads(q0, c.heads, hd);
  let k = ctx.hook({ kind: "key", layer: i, path: `${p}attn.c_attn` }, splitHeads(k0, c.heads, hd));
  let v = ctx.hook({ kind: "value", layer: i, path: `${p}attn.c_attn` }, splitHeads(v0, c.heads, hd));
  if (past) {
    k = concat([past.key, k], 2);
    v = concat([past.value, v], 2);
  }
  const keys = lead ? prependSeq(lead.key, k, 2) : k;
  const values = lead ? prependSeq(lead.value, v, 2) : v;
  const scale = 1 / Math.sqrt(hd) / (c.scaleByInverseLayer ? i + 1 : 1);
  const attn = attend(q, keys, values, allowed, scale);
  const o = ctx.hook({ kind: "attention_output", layer: i }, ctx.linear(`${p}attn.c_proj`, mergeHeads(attn), fif));
  const h1 = h.add(o);
  const x2 = ctx.hook({ kind: "mlp_input", layer: i }, F.layerNorm(h1, ctx.weight(`${p}ln_2.weight`), ctx.weight(`${p}ln_2.bias`), c.eps));
  const inner = ctx.hook({ kind: "mlp_hidden", layer: i, path: `${p}mlp.c_proj` }, activate(ctx.linear(`${p}mlp.c_fc`, x2, fif), c.act));
  return { h: h1.add(ctx.hook({ kind: "mlp_output", layer: i }, ctx.linear(`${p}mlp.c_proj`, inner, fif))), kv: { key: k, value: v } };
}

/** Prompt-learning inputs as in llama.ts: prefixes and soft tokens shift real positions by n; soft tokens run first, then act as a prefix. */
function forward(ctx: ForwardContext, c: Gpt2Config, inputs: ArchInputs, head: TaskHead): ArchOutputs {
  const ids = inputs.inputIds;
  if (!ids) throw new ModelError("gpt2: forward needs inputIds");
  const [b, t] = ids.shape;
  const { prefixes, length: pre } = layerPrefixes(ctx, c.layers, ids);
  const soft = ctx.softPrompt(ids);
  const n = soft ? soft.dim(1) : 0;
  let leads: (KeyValue | null)[] = prefixes;
  let promptHidden: Tensor | null = null;
  if (soft) {
    const hp = soft.add(ctx.embedding(`${P}wpe`, iota([b, n], 1).add(pre)));
    const allowedP = withLeadingKeys(causalSquare(n), pre);
    const pass = softPromptPass(c.layers, prefixes, ctx.hook({ kind: "embeddings", x: hp }, hp), (i, h, lead) =>
      block(ctx, c, i, h, allowedP, lead, undefined),
    );
    leads = pass.leads;
    promptHidden = pass.hidden;
  }
  const positions = realTokenPositions(b, t, pre, n, inputs.positionIds, inputs.cachePosition);
  let h = ctx.embedding(`${P}wte`, ids).add(ctx.embedding(`${P}wpe`, positions));
  h = ctx.hook({ kind: "embeddings", x: h }, h);
  const mask = inputs.attentionMask;
  const cachePos = inputs.cachePosition ?? iota([t], 0);
  const keys = iota([1, mask ? mask.shape[1] : t], 1);
  let allowed = keys.le(cachePos.unsqueeze(-1)).unsqueeze(0);
  if (mask) allowed = allowed.and(mask.ne(0).unsqueeze(1));
  const allowedAll = withLeadingKeys(allowed, pre + n);
  const present: KeyValue[] = [];
  for (let i = 0; i < c.layers; i++) {
    const r = checkpoint(() => block(ctx, c, i, h, allowedAll, leads[i], inputs.past?.[i]));
    h = r.h;
    present.push(r.kv);
  }
  if (promptHidden) h = prependSeq(promptHidden, h, 1);
  h = F.layerNorm(h, ctx.weight(`${P}ln_f.weight`), ctx.weight(`${P}ln_f.bias`), c.eps);
  const out: ArchOutputs = { lastHiddenState: h, present };
  if (head === "causal_lm") out.logits = ctx.linear("lm_head", h);
  if (head === "sequence_classification") out.logits = ctx.linear("score", lastTokenPool(h, mask ? maskWithOnes(mask, n) : undefined));
  return out;
}

export const GPT2: Architecture<Gpt2Config> = {
  name: "gpt2",
  modelTypes: ["gpt2"],
  heads: ["base", "causal_lm", "sequence_classification"],
  basePrefix: () => P,
  parseConfig,
  expectedWeights,
  ignorable: (n) => /\.attn\.(masked_)?bias$/.test(n),
  tiedWeights: (c, head) => (head === "causal_lm" && c.tied ? new Map([["lm_head.weight", `${P}wte.weight`]]) : new Map()),
  forward,
  decoderShape: (c) => ({ layers: c.layers, kvHeads: c.heads, headDim: c.hidden / c.heads }),
  specialTokens: (c) => ({ bos: c.bos, eos: c.eos, pad: c.pad }),
  linearLayers: (c, head) => linearLayerPaths(c.layers, (i) => layerLinears(c, i), decoderHeadLinears(head)),
  fanInFanOut: true,
};
