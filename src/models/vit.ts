/**
 * ViT (modeling_vit.py): non-overlapping patch embedding (a strided conv, computed here as a
 * matmul over flattened patches), CLS token, learned positions, pre-norm layers, final LayerNorm,
 * classifier on the CLS token.
 */
import * as F from "../engine/trace/composites.js";
import { concat } from "../engine/trace/tensor.js";
import { attend, mergeHeads, splitHeads } from "../nn/attention.js";
import { type ForwardContext, ModelError } from "../nn/context.js";
import { layerPrefixes } from "../nn/prompt.js";
import { type ArchInputs, type Architecture, type ArchOutputs, linearLayerPaths, type TaskHead } from "./architecture.js";
import { type Activation, activate, activationName, ConfigReader, type RawConfig } from "./config.js";

export interface VitConfig {
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  eps: number;
  act: Activation;
  image: number;
  patch: number;
  channels: number;
  qkvBias: boolean;
  numLabels: number;
}

const P = "vit.";

function parseConfig(raw: RawConfig, opts: { numLabels?: number }): VitConfig {
  const r = new ConfigReader(raw);
  const hidden = r.int("hidden_size");
  const heads = r.int("num_attention_heads");
  r.divisible("hidden_size", hidden, "num_attention_heads", heads);
  const image = r.int("image_size", 224);
  const patch = r.int("patch_size", 16);
  r.divisible("image_size", image, "patch_size", patch);
  const idToLabel = r.obj("id2label");
  return {
    hidden,
    layers: r.int("num_hidden_layers"),
    heads,
    intermediate: r.int("intermediate_size"),
    eps: r.num("layer_norm_eps", 1e-12),
    act: activationName(r.str("hidden_act", "gelu")),
    image,
    patch,
    channels: r.int("num_channels", 3),
    qkvBias: r.bool("qkv_bias", true),
    numLabels: opts.numLabels ?? (idToLabel ? Object.keys(idToLabel).length : r.int("num_labels", 2)),
  };
}

const patches = (c: VitConfig) => (c.image / c.patch) ** 2;

function layerLinears(c: VitConfig, i: number): Record<string, [number, number, boolean]> {
  const p = `${P}encoder.layer.${i}.`;
  return {
    [`${p}attention.attention.query`]: [c.hidden, c.hidden, c.qkvBias],
    [`${p}attention.attention.key`]: [c.hidden, c.hidden, c.qkvBias],
    [`${p}attention.attention.value`]: [c.hidden, c.hidden, c.qkvBias],
    [`${p}attention.output.dense`]: [c.hidden, c.hidden, true],
    [`${p}intermediate.dense`]: [c.intermediate, c.hidden, true],
    [`${p}output.dense`]: [c.hidden, c.intermediate, true],
  };
}

function headLinears(c: VitConfig, head: TaskHead): Record<string, [number, number, boolean]> {
  if (head === "image_classification") return { classifier: [c.numLabels, c.hidden, true] };
  return { [`${P}pooler.dense`]: [c.hidden, c.hidden, true] };
}

function expectedWeights(c: VitConfig, head: TaskHead): Map<string, number[]> {
  const w = new Map<string, number[]>();
  w.set(`${P}embeddings.cls_token`, [1, 1, c.hidden]);
  w.set(`${P}embeddings.position_embeddings`, [1, patches(c) + 1, c.hidden]);
  w.set(`${P}embeddings.patch_embeddings.projection.weight`, [c.hidden, c.channels, c.patch, c.patch]);
  w.set(`${P}embeddings.patch_embeddings.projection.bias`, [c.hidden]);
  for (let i = 0; i < c.layers; i++) {
    for (const ln of ["layernorm_before", "layernorm_after"]) {
      w.set(`${P}encoder.layer.${i}.${ln}.weight`, [c.hidden]);
      w.set(`${P}encoder.layer.${i}.${ln}.bias`, [c.hidden]);
    }
  }
  const linears = Object.assign({}, ...Array.from({ length: c.layers }, (_, i) => layerLinears(c, i)), headLinears(c, head));
  for (const [path, [out, inp, bias]] of Object.entries(linears as Record<string, [number, number, boolean]>)) {
    w.set(`${path}.weight`, [out, inp]);
    if (bias) w.set(`${path}.bias`, [out]);
  }
  w.set(`${P}layernorm.weight`, [c.hidden]);
  w.set(`${P}layernorm.bias`, [c.hidden]);
  return w;
}

function forward(ctx: ForwardContext, c: VitConfig, inputs: ArchInputs, head: TaskHead): ArchOutputs {
  const px = inputs.pixelValues;
  if (!px) throw new ModelError("vit: forward needs pixelValues [batch, channels, height, width]");
  const b = px.shape[0];
  const g = c.image / c.patch;
  const flat = px
    .reshape([b, c.channels, g, c.patch, g, c.patch])
    .permute([0, 2, 4, 1, 3, 5])
    .reshape([b, g * g, c.channels * c.patch * c.patch]);
  const kernel = ctx.weight(`${P}embeddings.patch_embeddings.projection.weight`).reshape([c.hidden, c.channels * c.patch * c.patch]);
  const emb = flat.matmul(kernel.transpose()).add(ctx.weight(`${P}embeddings.patch_embeddings.projection.bias`));
  const cls = ctx.weight(`${P}embeddings.cls_token`).expand([b, 1, c.hidden]);
  let h = concat([cls, emb], 1).add(ctx.weight(`${P}embeddings.position_embeddings`));
  // Soft tokens go right after [CLS], without position embeddings (VPT-shallow, Jia et al. 2022);
  // the classifier keeps reading [CLS].
  const soft = ctx.softPrompt(px);
  if (soft) h = concat([h.slice(1, 0, 1), soft, h.slice(1, 1)], 1);
  h = ctx.hook({ kind: "embeddings", x: h }, h);
  const { prefixes } = layerPrefixes(ctx, c.layers, px);
  const hd = c.hidden / c.heads;
  for (let i = 0; i < c.layers; i++) {
    const l = `${P}encoder.layer.${i}.`;
    const x = F.layerNorm(h, ctx.weight(`${l}layernorm_before.weight`), ctx.weight(`${l}layernorm_before.bias`), c.eps);
    const q = splitHeads(ctx.linear(`${l}attention.attention.query`, x), c.heads, hd);
    const k = ctx.hook(
      { kind: "key", layer: i, path: `${l}attention.attention.key` },
      splitHeads(ctx.linear(`${l}attention.attention.key`, x), c.heads, hd),
    );
    const v = ctx.hook(
      { kind: "value", layer: i, path: `${l}attention.attention.value` },
      splitHeads(ctx.linear(`${l}attention.attention.value`, x), c.heads, hd),
    );
    const lead = prefixes[i];
    const keys = lead ? concat([lead.key, k], 2) : k;
    const values = lead ? concat([lead.value, v], 2) : v;
    const attn = ctx.hook(
      { kind: "attention_output", layer: i },
      ctx.linear(`${l}attention.output.dense`, mergeHeads(attend(q, keys, values, null, 1 / Math.sqrt(hd)))),
    );
    h = h.add(attn);
    const x2 = ctx.hook(
      { kind: "mlp_input", layer: i },
      F.layerNorm(h, ctx.weight(`${l}layernorm_after.weight`), ctx.weight(`${l}layernorm_after.bias`), c.eps),
    );
    const inner = ctx.hook(
      { kind: "mlp_hidden", layer: i, path: `${l}output.dense` },
      activate(ctx.linear(`${l}intermediate.dense`, x2), c.act),
    );
    h = h.add(ctx.hook({ kind: "mlp_output", layer: i }, ctx.linear(`${l}output.dense`, inner)));
  }
  h = F.layerNorm(h, ctx.weight(`${P}layernorm.weight`), ctx.weight(`${P}layernorm.bias`), c.eps);
  const out: ArchOutputs = { lastHiddenState: h };
  const first = h.select(1, 0);
  if (head === "image_classification") out.logits = ctx.linear("classifier", first);
  else out.poolerOutput = ctx.linear(`${P}pooler.dense`, first).tanh();
  return out;
}

export const VIT: Architecture<VitConfig> = {
  name: "vit",
  modelTypes: ["vit"],
  heads: ["base", "image_classification"],
  basePrefix: () => P,
  parseConfig,
  expectedWeights,
  ignorable: () => false,
  tiedWeights: () => new Map(),
  forward,
  specialTokens: () => ({ bos: [], eos: [], pad: null }),
  linearLayers: (c, head) => linearLayerPaths(c.layers, (i) => layerLinears(c, i), Object.keys(headLinears(c, head))),
  fanInFanOut: false,
};
