/**
 * HUT (Zhang, Zhou & Chen 2024, "HUT: A More Computation Efficient Fine-Tuning Method With
 * Hadamard Updated Transformation", arXiv 2409.13501; catalog #44). The updated weight is a
 * transformation of the original one, W' = W ⊙ (1 + s·B·A) = W + s·W ⊙ (B·A), with B (out×r)
 * and A (r×in) trainable; B starts at zero, so W' = W at the start. See docs/methods/hut.md for
 * how far this equation could be confirmed.
 *
 * The change s·W ⊙ (B·A) depends on every entry of W, so it cannot be applied to x as low-rank
 * products; it is formed once per forward (out×in, like the base weight, not per token), which is
 * the computation the paper counts, and merges exactly.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext } from "../../nn/context.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { targetedLinears } from "../targets.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type HutConfig, hutConfigJson, parseHutConfig } from "./config.js";

export interface HutLayer {
  /** Canonical path of the linear layer. */
  path: string;
  /** PEFT-style module name (key prefix). */
  key: string;
  inFeatures: number;
  outFeatures: number;
  r: number;
  scaling: number;
}

export const hutKeys = (l: HutLayer) => ({ a: `${l.key}.hut_A.weight`, b: `${l.key}.hut_B.weight` });

/** The targeted linear layers (LoRA's defaults when target_modules is not given). */
export function hutLayers(info: ModelInfo, c: HutConfig): HutLayer[] {
  return targetedLinears(info, c, "HUT config").map(({ path, key, inFeatures, outFeatures }) => {
    if (c.r > Math.min(inFeatures, outFeatures))
      throw new PeftConfigError(`HUT config: r = ${c.r} exceeds min(in, out) = ${Math.min(inFeatures, outFeatures)} of "${key}"`);
    return { path, key, inFeatures, outFeatures, r: c.r, scaling: c.hutAlpha / c.r };
  });
}

function create(info: ModelInfo, c: HutConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of hutLayers(info, c)) {
    const k = hutKeys(l);
    // A as LoRA's (Kaiming-uniform, a = √5: bound 1/√in); B zero, or (tests) uniform ±1/√r.
    const bound = 1 / Math.sqrt(l.inFeatures);
    tensors.set(k.a, hostTensor("f32", [l.r, l.inFeatures], fillUniform(l.r * l.inFeatures, -bound, bound, rng)));
    const b = c.initHutWeights
      ? new Float32Array(l.outFeatures * l.r)
      : fillUniform(l.outFeatures * l.r, -1 / Math.sqrt(l.r), 1 / Math.sqrt(l.r), rng);
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, l.r], b));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: HutConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of hutLayers(info, c)) {
    const k = hutKeys(l);
    out.set(k.a, [l.r, l.inFeatures]);
    out.set(k.b, [l.outFeatures, l.r]);
  }
  return out;
}

/** The change this method adds to a targeted layer's output (see LinearDeltaContext). */
function hutDelta(info: ModelInfo, opts: WrapOptions, l: HutLayer, x: Tensor, inner: ForwardContext): Tensor {
  const k = hutKeys(l);
  const name = `${l.path}.weight`;
  // W is the layer's own weight before any adapter of a stack was merged into it, so merged
  // and unmerged stacks compute the same change.
  const w = opts.unmergedWeight?.(name) ?? inner.weight(name);
  const ba = opts.tensor(k.b).matmul(opts.tensor(k.a)).mul(l.scaling);
  // In W's stored layout: [out, in], or [in, out] for GPT-2's Conv1D.
  const delta = w.mul(info.fanInFanOut ? ba.transpose() : ba);
  const change = x.matmul(info.fanInFanOut ? delta : delta.transpose());
  return change;
}

/** W_current + s·W ⊙ (B·A), with W the weight before any merge. */
function merge(
  info: ModelInfo,
  c: HutConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  unmerged?: (name: string) => HostTensor,
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of hutLayers(info, c)) {
    const k = hutKeys(l);
    const a = tensors.get(k.a)?.data as Float32Array;
    const b = tensors.get(k.b)?.data as Float32Array;
    const name = `${l.path}.weight`;
    const cur = info.weight(name);
    const w0 = (unmerged ? unmerged(name) : cur).data as Float32Array;
    const cd = cur.data as Float32Array;
    const next = new Float32Array(cd.length);
    for (let o = 0; o < l.outFeatures; o++)
      for (let i = 0; i < l.inFeatures; i++) {
        let ba = 0;
        for (let j = 0; j < l.r; j++) ba += b[o * l.r + j] * a[j * l.inFeatures + i];
        const at = info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i;
        next[at] = cd[at] + l.scaling * w0[at] * ba;
      }
    out.set(name, hostTensor("f32", cur.shape, next));
  }
  return out;
}

export const HUT: Tuner<HutConfig> = {
  peftType: "HUT",
  parseConfig: parseHutConfig,
  toJson: hutConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) =>
    new LinearDeltaContext(base, hutLayers(info, c), opts.rowMask, (l, x, inner) => hutDelta(info, opts, l, x, inner)),
  merge,
  supportsMixedBatch: true,
};
