/**
 * Structural pruning of the hidden (residual-stream) size of a LLaMA-family decoder: keeps the
 * channels `keep` of every tensor that reads or writes the residual stream, giving a smaller dense
 * model of the same architecture (PAT's merge, after the authors' script/merge_dimdown.py).
 *   producers  embed_tokens [V, d] → columns; o_proj, down_proj [d, ·] (and biases) → rows
 *   consumers  q/k/v/gate/up_proj, lm_head, score [·, d] → columns
 *   RMSNorms   w → (w·√(d/d'))[keep], and rms_norm_eps → eps·d/d'
 * When the dropped channels are 0 throughout the residual stream (PAT's folded mask), the pruned
 * model computes exactly what the full one does: each RMSNorm's mean of squares runs over d' instead
 * of d channels, so √(mean + eps) shrinks by √(d'/d) once eps is scaled by d/d' too (the authors
 * keep eps, which is exact only up to eps). head_dim is written out, since hidden_size / heads
 * no longer gives it. Pure host code (no file system): the caller saves the model.
 */
import { PeftkitError } from "../engine/errors.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { LlamaConfig } from "../models/llama.js";
import { PreTrainedModel } from "../models/pretrained.js";

export class PruneError extends PeftkitError {}

const PRODUCERS = /^model\.layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)\.(weight|bias)$/;
const CONSUMERS = /^(model\.layers\.\d+\.(self_attn\.[qkv]_proj|mlp\.(gate|up)_proj)\.weight|lm_head\.weight|score\.weight)$/;
const NORMS = /^(model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)|model\.norm)\.weight$/;

/** Checks `keep` (ascending, unique, within [0, hidden)); one line naming what is wrong. */
export function checkKeep(keep: readonly number[], hidden: number, what = "keep"): void {
  if (keep.length < 1) throw new PruneError(`${what}: no hidden channel is kept (hidden_size ${hidden})`);
  for (let i = 0; i < keep.length; i++) {
    const j = keep[i];
    if (!Number.isInteger(j) || j < 0 || j >= hidden)
      throw new PruneError(`${what}: channel ${j} is outside [0, ${hidden}) (hidden_size ${hidden})`);
    if (i > 0 && j <= keep[i - 1]) throw new PruneError(`${what}: channels must be ascending and distinct (${keep[i - 1]} then ${j})`);
  }
}

function columns(t: HostTensor, keep: readonly number[]): HostTensor {
  const [rows, cols] = t.shape;
  const src = t.data as Float32Array;
  const out = new Float32Array(rows * keep.length);
  for (let r = 0; r < rows; r++) {
    const s = r * cols;
    const o = r * keep.length;
    for (let j = 0; j < keep.length; j++) out[o + j] = src[s + keep[j]];
  }
  return hostTensor("f32", [rows, keep.length], out);
}

function rows(t: HostTensor, keep: readonly number[]): HostTensor {
  const cols = t.shape.length === 2 ? t.shape[1] : 1;
  const src = t.data as Float32Array;
  const out = new Float32Array(keep.length * cols);
  keep.forEach((j, i) => {
    out.set(src.subarray(j * cols, (j + 1) * cols), i * cols);
  });
  return hostTensor("f32", t.shape.length === 2 ? [keep.length, cols] : [keep.length], out);
}

/**
 * A new model with hidden_size = keep.length, made from `model` (a LLaMA-family decoder, weights
 * f32) by keeping the residual-stream channels `keep`. The input model is not changed.
 */
export function pruneHiddenSize(model: PreTrainedModel, keep: readonly number[]): PreTrainedModel {
  if (model.arch.name !== "llama")
    throw new PruneError(`hidden-size pruning needs a LLaMA-family decoder (llama, mistral, qwen2); model_type is "${model.modelType}"`);
  const c = model.archConfig as LlamaConfig;
  const d = c.hidden;
  checkKeep(keep, d);
  const dp = keep.length;
  const rescale = Math.sqrt(d / dp);
  const weights = new Map<string, HostTensor>();
  // Tied weights (one tensor under two names) stay one tensor: pruned once, kept tied.
  const done = new Map<HostTensor, string>();
  for (const [name, t] of model.weights) {
    const twin = done.get(t);
    if (twin !== undefined) {
      weights.set(name, weights.get(twin) as HostTensor);
      continue;
    }
    done.set(t, name);
    if (t.dtype !== "f32") throw new PruneError(`${name}: pruning needs f32 weights, got ${t.dtype}`);
    if (name === "model.embed_tokens.weight" || CONSUMERS.test(name)) weights.set(name, columns(t, keep));
    else if (PRODUCERS.test(name)) weights.set(name, rows(t, keep));
    else if (NORMS.test(name)) {
      const w = t.data as Float32Array;
      weights.set(
        name,
        hostTensor(
          "f32",
          [dp],
          Float32Array.from(keep, (j) => w[j] * rescale),
        ),
      );
    } else weights.set(name, t);
  }
  const config: Record<string, unknown> = {
    ...model.config,
    hidden_size: dp,
    head_dim: c.headDim,
    rms_norm_eps: (c.eps * d) / dp,
  };
  const archConfig = model.arch.parseConfig(config, { numLabels: c.numLabels });
  return new PreTrainedModel(config, model.arch, archConfig, model.head, weights, null, [], model.compileOptions);
}
