/**
 * BERT and RoBERTa encoders (modeling_bert.py, modeling_roberta.py): post-norm layers, exact GELU,
 * padding-only attention masks, pooler, and the sequence/token classification heads. RoBERTa
 * differs in its prefix, its position ids (counted from padding_idx + 1 over real tokens) and
 * its classification head (dense + tanh + out_proj on <s>, no pooler). The masked-LM heads
 * (RobertaLMHead: lm_head.*; BertOnlyMLMHead: cls.predictions.*) are dense + GELU + LayerNorm, then
 * a decoder tied to the word embeddings with its own bias (decoder.bias is tied to the head's bias).
 */
import * as F from "../engine/trace/composites.js";
import { concat, iota, type Tensor, zeros } from "../engine/trace/tensor.js";
import { attend, mergeHeads, splitHeads } from "../nn/attention.js";
import { type ForwardContext, ModelError } from "../nn/context.js";
import { layerPrefixes, maskWithOnes, prependSeq, withLeadingKeys } from "../nn/prompt.js";
import { type ArchInputs, type Architecture, type ArchOutputs, linearLayerPaths, type TaskHead } from "./architecture.js";
import { type Activation, activate, activationName, ConfigReader, type RawConfig } from "./config.js";

export interface BertConfig {
  roberta: boolean;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  vocab: number;
  positions: number;
  typeVocab: number;
  eps: number;
  act: Activation;
  pad: number;
  numLabels: number;
}

function parseConfig(raw: RawConfig, opts: { numLabels?: number }): BertConfig {
  const r = new ConfigReader(raw);
  const roberta = r.str("model_type") === "roberta";
  const hidden = r.int("hidden_size");
  const heads = r.int("num_attention_heads");
  r.divisible("hidden_size", hidden, "num_attention_heads", heads);
  const pet = r.str("position_embedding_type", "absolute");
  if (pet !== "absolute") throw new ModelError(`config.json: position_embedding_type "${pet}" is not supported (only "absolute")`);
  const idToLabel = r.obj("id2label");
  return {
    roberta,
    hidden,
    layers: r.int("num_hidden_layers"),
    heads,
    intermediate: r.int("intermediate_size"),
    vocab: r.int("vocab_size"),
    positions: r.int("max_position_embeddings", 512),
    typeVocab: r.int("type_vocab_size", 2),
    eps: r.num("layer_norm_eps", 1e-12),
    act: activationName(r.str("hidden_act", "gelu")),
    pad: r.int("pad_token_id", roberta ? 1 : 0),
    numLabels: opts.numLabels ?? (idToLabel ? Object.keys(idToLabel).length : r.int("num_labels", 2)),
  };
}

const prefix = (c: BertConfig) => (c.roberta ? "roberta." : "bert.");

function layerLinears(c: BertConfig, i: number): Record<string, [number, number]> {
  const p = `${prefix(c)}encoder.layer.${i}.`;
  return {
    [`${p}attention.self.query`]: [c.hidden, c.hidden],
    [`${p}attention.self.key`]: [c.hidden, c.hidden],
    [`${p}attention.self.value`]: [c.hidden, c.hidden],
    [`${p}attention.output.dense`]: [c.hidden, c.hidden],
    [`${p}intermediate.dense`]: [c.intermediate, c.hidden],
    [`${p}output.dense`]: [c.hidden, c.intermediate],
  };
}

/** transformers drops the pooler in the heads that do not use it. */
const hasPooler = (c: BertConfig, head: TaskHead) => head === "base" || (head === "sequence_classification" && !c.roberta);

/** Checkpoint names of the masked-LM head's parts (transformers RobertaLMHead / BertOnlyMLMHead). */
function mlmNames(c: BertConfig): { dense: string; norm: string; decoder: string; bias: string } {
  return c.roberta
    ? { dense: "lm_head.dense", norm: "lm_head.layer_norm", decoder: "lm_head.decoder", bias: "lm_head.bias" }
    : {
        dense: "cls.predictions.transform.dense",
        norm: "cls.predictions.transform.LayerNorm",
        decoder: "cls.predictions.decoder",
        bias: "cls.predictions.bias",
      };
}

function headLinears(c: BertConfig, head: TaskHead): Record<string, [number, number]> {
  const p = prefix(c);
  const out: Record<string, [number, number]> = {};
  if (hasPooler(c, head)) out[`${p}pooler.dense`] = [c.hidden, c.hidden];
  if (head === "masked_lm") out[mlmNames(c).dense] = [c.hidden, c.hidden];
  if (head === "sequence_classification" && c.roberta) {
    out["classifier.dense"] = [c.hidden, c.hidden];
    out["classifier.out_proj"] = [c.numLabels, c.hidden];
  } else if (head === "sequence_classification" || head === "token_classification") {
    out.classifier = [c.numLabels, c.hidden];
  }
  return out;
}

function expectedWeights(c: BertConfig, head: TaskHead): Map<string, number[]> {
  const p = prefix(c);
  const w = new Map<string, number[]>();
  w.set(`${p}embeddings.word_embeddings.weight`, [c.vocab, c.hidden]);
  w.set(`${p}embeddings.position_embeddings.weight`, [c.positions, c.hidden]);
  w.set(`${p}embeddings.token_type_embeddings.weight`, [c.typeVocab, c.hidden]);
  w.set(`${p}embeddings.LayerNorm.weight`, [c.hidden]);
  w.set(`${p}embeddings.LayerNorm.bias`, [c.hidden]);
  const linears = { ...Object.assign({}, ...Array.from({ length: c.layers }, (_, i) => layerLinears(c, i))), ...headLinears(c, head) };
  for (const [path, [out, inp]] of Object.entries(linears as Record<string, [number, number]>)) {
    w.set(`${path}.weight`, [out, inp]);
    w.set(`${path}.bias`, [out]);
  }
  for (let i = 0; i < c.layers; i++) {
    for (const ln of ["attention.output.LayerNorm", "output.LayerNorm"]) {
      w.set(`${p}encoder.layer.${i}.${ln}.weight`, [c.hidden]);
      w.set(`${p}encoder.layer.${i}.${ln}.bias`, [c.hidden]);
    }
  }
  if (head === "masked_lm") {
    const m = mlmNames(c);
    w.set(`${m.norm}.weight`, [c.hidden]);
    w.set(`${m.norm}.bias`, [c.hidden]);
    w.set(m.bias, [c.vocab]);
    w.set(`${m.decoder}.weight`, [c.vocab, c.hidden]);
    w.set(`${m.decoder}.bias`, [c.vocab]);
  }
  return w;
}

/** The masked-LM decoder reuses the word embeddings and the head's bias (transformers ties both). */
function tiedWeights(c: BertConfig, head: TaskHead): Map<string, string> {
  if (head !== "masked_lm") return new Map();
  const m = mlmNames(c);
  return new Map([
    [`${m.decoder}.weight`, `${prefix(c)}embeddings.word_embeddings.weight`],
    [`${m.decoder}.bias`, m.bias],
  ]);
}

/** Default positions; `past` counts key rows before the input (transformers' past_key_values_length). */
function positionIds(c: BertConfig, ids: Tensor, past = 0): Tensor {
  if (!c.roberta) return iota([ids.shape[0], ids.shape[1]], 1).add(past);
  const real = ids.ne(c.pad).cast("i64");
  const counted = real.cumsum(1);
  return (past ? counted.add(past) : counted).mul(real).add(c.pad);
}

/**
 * Prompt-learning inputs follow HF PEFT on transformers: soft tokens are prepended to the word
 * embeddings (token type 0, positions counted over the whole sequence, and for RoBERTa the
 * sequential positions transformers gives inputs_embeds), so the pooler reads the first soft
 * token; a prefix of n key/value rows shifts the real tokens' positions by n, as transformers
 * does with past_key_values.
 */
function forward(ctx: ForwardContext, c: BertConfig, inputs: ArchInputs, head: TaskHead): ArchOutputs {
  const ids = inputs.inputIds;
  if (!ids) throw new ModelError(`${c.roberta ? "roberta" : "bert"}: forward needs inputIds`);
  const p = prefix(c);
  const { prefixes, length: pre } = layerPrefixes(ctx, c.layers, ids);
  const soft = ctx.softPrompt(ids);
  const n = soft ? soft.dim(1) : 0;
  let words = ctx.embedding(`${p}embeddings.word_embeddings`, ids);
  let types = inputs.tokenTypeIds ?? zeros([ids.shape[0], ids.shape[1]], "i64");
  let pos: Tensor;
  if (soft) {
    words = prependSeq(soft, words, 1);
    types = concat([zeros([ids.shape[0], n], "i64"), types], 1);
    const seq = iota([words.shape[0], words.shape[1]], 1).add(pre);
    pos = c.roberta ? seq.add(c.pad + 1) : seq;
  } else if (inputs.positionIds) pos = pre ? inputs.positionIds.add(pre) : inputs.positionIds;
  else pos = positionIds(c, ids, pre);
  let h = words
    .add(ctx.embedding(`${p}embeddings.token_type_embeddings`, types))
    .add(ctx.embedding(`${p}embeddings.position_embeddings`, pos));
  h = F.layerNorm(h, ctx.weight(`${p}embeddings.LayerNorm.weight`), ctx.weight(`${p}embeddings.LayerNorm.bias`), c.eps);
  h = ctx.hook({ kind: "embeddings", x: h }, h);
  const mask = inputs.attentionMask ? maskWithOnes(inputs.attentionMask, n) : null;
  const allowed = withLeadingKeys(mask ? mask.ne(0).unsqueeze(1) : null, pre);
  const hd = c.hidden / c.heads;
  for (let i = 0; i < c.layers; i++) {
    const l = `${p}encoder.layer.${i}.`;
    const q = splitHeads(ctx.linear(`${l}attention.self.query`, h), c.heads, hd);
    const k = ctx.hook(
      { kind: "key", layer: i, path: `${l}attention.self.key` },
      splitHeads(ctx.linear(`${l}attention.self.key`, h), c.heads, hd),
    );
    const v = ctx.hook(
      { kind: "value", layer: i, path: `${l}attention.self.value` },
      splitHeads(ctx.linear(`${l}attention.self.value`, h), c.heads, hd),
    );
    const lead = prefixes[i];
    const keys = lead ? prependSeq(lead.key, k, 2) : k;
    const values = lead ? prependSeq(lead.value, v, 2) : v;
    const attn = ctx.hook(
      { kind: "attention_output", layer: i },
      ctx.linear(`${l}attention.output.dense`, mergeHeads(attend(q, keys, values, allowed, 1 / Math.sqrt(hd)))),
    );
    h = F.layerNorm(
      attn.add(h),
      ctx.weight(`${l}attention.output.LayerNorm.weight`),
      ctx.weight(`${l}attention.output.LayerNorm.bias`),
      c.eps,
    );
    const x2 = ctx.hook({ kind: "mlp_input", layer: i }, h);
    const inner = ctx.hook(
      { kind: "mlp_hidden", layer: i, path: `${l}output.dense` },
      activate(ctx.linear(`${l}intermediate.dense`, x2), c.act),
    );
    const m = ctx.hook({ kind: "mlp_output", layer: i }, ctx.linear(`${l}output.dense`, inner));
    h = F.layerNorm(m.add(h), ctx.weight(`${l}output.LayerNorm.weight`), ctx.weight(`${l}output.LayerNorm.bias`), c.eps);
  }
  const out: ArchOutputs = { lastHiddenState: h };
  const cls = h.select(1, 0);
  if (hasPooler(c, head)) out.poolerOutput = ctx.linear(`${p}pooler.dense`, cls).tanh();
  if (head === "sequence_classification") {
    out.logits = c.roberta
      ? ctx.linear("classifier.out_proj", ctx.linear("classifier.dense", cls).tanh())
      : ctx.linear("classifier", out.poolerOutput as Tensor);
  }
  if (head === "token_classification") out.logits = ctx.linear("classifier", h);
  if (head === "masked_lm") {
    const m = mlmNames(c);
    // RobertaLMHead applies exact GELU whatever hidden_act says; BERT's transform uses hidden_act.
    const x = activate(ctx.linear(m.dense, h), c.roberta ? "gelu" : c.act);
    const normed = F.layerNorm(x, ctx.weight(`${m.norm}.weight`), ctx.weight(`${m.norm}.bias`), c.eps);
    out.logits = ctx.linear(m.decoder, normed);
  }
  return out;
}

export const BERT: Architecture<BertConfig> = {
  name: "bert",
  modelTypes: ["bert", "roberta"],
  heads: ["base", "sequence_classification", "token_classification", "masked_lm"],
  basePrefix: prefix,
  parseConfig,
  expectedWeights,
  // BertForPreTraining's next-sentence head is in no head peftkit builds.
  ignorable: (n) => n.endsWith("embeddings.position_ids") || n.startsWith("cls.seq_relationship."),
  tiedWeights,
  forward,
  specialTokens: (c) => ({ bos: [], eos: [], pad: c.pad }),
  linearLayers: (c, head) => linearLayerPaths(c.layers, (i) => layerLinears(c, i), Object.keys(headLinears(c, head))),
  fanInFanOut: false,
  tokenTypes: (c) => c.typeVocab,
};
