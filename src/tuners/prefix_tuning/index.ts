/**
 * Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"):
 * every attention layer gets n trainable key and value rows in front of its own, which all
 * queries may attend to. As in PEFT, the prefix is one tensor [n, num_layers·2·token_dim] laid out
 * (token, layer·2 + {0: key, 1: value}, head, head_dim); with prefix_projection it is produced by
 * an MLP, Linear(token_dim → encoder_hidden_size) → tanh → Linear(→ num_layers·2·token_dim), from
 * an [n, token_dim] embedding. Real tokens' positions shift by n, as transformers counts the
 * prefix as cached tokens. Saved as PEFT saves it: `prompt_embeddings` = the prefix itself (the
 * MLP's output), so a saved projection adapter loads as its prefix, for inference.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext } from "../../nn/context.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { PROMPT_KEY } from "../prompt_tuning/index.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type PrefixTuningConfig, parsePrefixTuningConfig, prefixTuningConfigJson, resolvePrefix } from "./config.js";

/** PEFT's prompt-encoder parameter names (prompt_encoder.<adapter>.…) for the projection. */
export const EMBEDDING = "embedding.weight";
export const W1 = "transform.0.weight";
export const B1 = "transform.0.bias";
export const W2 = "transform.2.weight";
export const B2 = "transform.2.bias";

interface Dims {
  n: number;
  layers: number;
  heads: number;
  headDim: number;
  tokenDim: number;
  encoder: number;
  /** The trainable tensors are the embedding and MLP (not the flat prefix). */
  projected: boolean;
}

function dims(info: ModelInfo, c: PrefixTuningConfig): Dims {
  const r = resolvePrefix(info, c);
  const tokenDim = r.tokenDim as number;
  const heads = r.numAttentionHeads as number;
  const d: Dims = {
    n: r.numVirtualTokens,
    layers: r.numLayers as number,
    heads,
    headDim: tokenDim / heads,
    tokenDim,
    encoder: r.encoderHiddenSize as number,
    projected: r.prefixProjection && !r.inferenceMode,
  };
  if (d.layers !== info.numLayers || d.heads !== info.kvHeads || d.headDim !== info.headDim)
    throw new PeftConfigError(
      `prefix tuning: num_layers ${d.layers}, num_attention_heads ${d.heads}, token_dim ${tokenDim} give a prefix of ${d.layers} layers × ${d.heads} heads × ${d.headDim}, but the model's keys are ${info.numLayers} layers × ${info.kvHeads} heads × ${info.headDim}`,
    );
  return d;
}

function expectedTensors(info: ModelInfo, c: PrefixTuningConfig): Map<string, number[]> {
  const d = dims(info, c);
  const flat = d.layers * 2 * d.tokenDim;
  if (!d.projected) return new Map([[PROMPT_KEY, [d.n, flat]]]);
  return new Map([
    [EMBEDDING, [d.n, d.tokenDim]],
    [W1, [d.encoder, d.tokenDim]],
    [B1, [d.encoder]],
    [W2, [flat, d.encoder]],
    [B2, [flat]],
  ]);
}

function create(info: ModelInfo, c: PrefixTuningConfig, rng: Rng): CreatedAdapter {
  const d = dims(info, c);
  Object.assign(c, resolvePrefix(info, c));
  const zero = c.initWeights === "zero";
  const tensors = new Map<string, HostTensor>();
  const flat = d.layers * 2 * d.tokenDim;
  if (!d.projected) {
    tensors.set(PROMPT_KEY, hostTensor("f32", [d.n, flat], zero ? new Float32Array(d.n * flat) : fillNormal(d.n * flat, 1, rng)));
    return { tensors };
  }
  // nn.Linear's default init: weights and bias uniform in ±1/√fan_in.
  const linear = (out: number, inp: number, zeroed: boolean): [Float32Array, Float32Array] => {
    const b = 1 / Math.sqrt(inp);
    if (zeroed) return [new Float32Array(out * inp), new Float32Array(out)];
    return [fillUniform(out * inp, -b, b, rng), fillUniform(out, -b, b, rng)];
  };
  tensors.set(EMBEDDING, hostTensor("f32", [d.n, d.tokenDim], fillNormal(d.n * d.tokenDim, 1, rng)));
  const [w1, b1] = linear(d.encoder, d.tokenDim, false);
  const [w2, b2] = linear(flat, d.encoder, zero);
  tensors.set(W1, hostTensor("f32", [d.encoder, d.tokenDim], w1));
  tensors.set(B1, hostTensor("f32", [d.encoder], b1));
  tensors.set(W2, hostTensor("f32", [flat, d.encoder], w2));
  tensors.set(B2, hostTensor("f32", [flat], b2));
  return { tensors };
}

/** The projection MLP on the host: what PEFT's get_prompt_embedding_to_save computes. */
export function projectPrefix(t: ReadonlyMap<string, HostTensor>): HostTensor {
  const e = t.get(EMBEDDING) as HostTensor;
  const w1 = t.get(W1) as HostTensor;
  const w2 = t.get(W2) as HostTensor;
  const b1 = t.get(B1)?.data as Float32Array;
  const b2 = t.get(B2)?.data as Float32Array;
  const [n, td] = e.shape;
  const [enc] = w1.shape;
  const [flat] = w2.shape;
  const ed = e.data as Float32Array;
  const w1d = w1.data as Float32Array;
  const w2d = w2.data as Float32Array;
  const out = new Float32Array(n * flat);
  const hid = new Float64Array(enc);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < enc; j++) {
      let s = b1[j];
      for (let k = 0; k < td; k++) s += w1d[j * td + k] * ed[i * td + k];
      hid[j] = Math.tanh(s);
    }
    for (let o = 0; o < flat; o++) {
      let s = b2[o];
      for (let j = 0; j < enc; j++) s += w2d[o * enc + j] * hid[j];
      out[i * flat + o] = s;
    }
  }
  return hostTensor("f32", [n, flat], out);
}

class PrefixContext extends DelegatingContext {
  private flat: Tensor | null = null;
  constructor(
    inner: ForwardContext,
    private readonly d: Dims,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
  }

  /** The prefix [n, layers·2, heads, head_dim], computed once per trace. */
  private prefix(): Tensor {
    if (!this.flat) {
      const t = (k: string) => this.opts.tensor(k);
      const p = this.d.projected
        ? t(EMBEDDING).matmul(t(W1).transpose()).add(t(B1)).tanh().matmul(t(W2).transpose()).add(t(B2))
        : t(PROMPT_KEY);
      this.flat = p.reshape([this.d.n, this.d.layers * 2, this.d.heads, this.d.headDim]);
    }
    return this.flat;
  }

  override attentionPrefix(layer: number, batch: Tensor): { key: Tensor; value: Tensor } | null {
    if (layer >= this.d.layers) return this.inner.attentionPrefix(layer, batch);
    const { n, heads, headDim } = this.d;
    const rows = (which: number) =>
      this.prefix()
        .select(1, 2 * layer + which)
        .permute([1, 0, 2])
        .unsqueeze(0)
        .expand([batch.shape[0], heads, n, headDim]);
    const mine = { key: rows(0), value: rows(1) };
    const inner = this.inner.attentionPrefix(layer, batch);
    if (inner) throw new PeftConfigError("prefix tuning: only one prefix-tuning adapter can be active at a time");
    return mine;
  }
}

export const PREFIX_TUNING: Tuner<PrefixTuningConfig> = {
  peftType: "PREFIX_TUNING",
  parseConfig: parsePrefixTuningConfig,
  toJson: prefixTuningConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new PrefixContext(base, dims(info, c), opts),
  supportsMixedBatch: false,
  promptLearning: true,
  tensorsToSave: (info, c, tensors) => (dims(info, c).projected ? new Map([[PROMPT_KEY, projectPrefix(tensors)]]) : new Map(tensors)),
};
