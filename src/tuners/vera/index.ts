/**
 * VeRA (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation"), in HF PEFT 0.20's
 * format (peft_type "VERA"): one pair of frozen random matrices A [r, max_in] and B [max_out, r]
 * is shared by every adapted layer, which trains only two vectors, λ_d [r] and λ_b [out]:
 * y = W·x + b + λ_b ⊙ (B[:out]·(λ_d ⊙ (A[:, :in]·dropout(x)))). λ_b starts at zero, so training
 * starts from the base model. A and B come from torch's CPU generator seeded with
 * projection_prng_key; they are saved as "base_model.vera_A"/"base_model.vera_B" unless
 * save_projection is false, in which case loading regenerates them bit for bit.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { parseVeraConfig, type VeraConfig, veraConfigJson } from "./config.js";
import { lambdaB, lambdaD, VERA_A, VERA_B, type VeraLayer, veraDelta, veraLayout, veraProjections } from "./layers.js";

function create(info: ModelInfo, c: VeraConfig, rng: Rng): CreatedAdapter {
  // PEFT marks the biases trainable but saves only vera_lambda_ tensors and the projections
  // (get_peft_model_state_dict), so trained biases would be lost; loading such a folder is fine.
  if (c.bias !== "none")
    throw new PeftConfigError(
      `VeRA config: bias "${c.bias}" is not supported for new adapters: PEFT trains those biases but does not save them with a VeRA adapter; use bias "none"`,
    );
  const layout = veraLayout(info, c);
  const { a, b } = veraProjections(c, layout);
  const tensors = new Map<string, HostTensor>([
    [VERA_A, a],
    [VERA_B, b],
  ]);
  for (const l of layout.layers) {
    // VeraLayer.update_layer: λ_b = ones, λ_d = randn(r); reset_vera_parameters (init_weights):
    // λ_d = d_initial, λ_b = 0.
    const lb = c.initWeights ? new Float32Array(l.outFeatures) : new Float32Array(l.outFeatures).fill(1);
    const ld = c.initWeights ? new Float32Array(c.r).fill(c.dInitial) : fillNormal(c.r, 1, rng);
    tensors.set(lambdaB(l), hostTensor("f32", [l.outFeatures], lb));
    tensors.set(lambdaD(l), hostTensor("f32", [c.r], ld));
  }
  return { tensors };
}

/** What a saved folder holds: the λ vectors, and the projections when save_projection is set. */
function expectedTensors(info: ModelInfo, c: VeraConfig): Map<string, number[]> {
  const layout = veraLayout(info, c);
  const out = new Map<string, number[]>();
  if (c.saveProjection) {
    out.set(VERA_A, [c.r, layout.maxIn]);
    out.set(VERA_B, [layout.maxOut, c.r]);
  }
  for (const l of layout.layers) {
    out.set(lambdaB(l), [l.outFeatures]);
    out.set(lambdaD(l), [c.r]);
  }
  return out;
}

function tensorsToSave(_info: ModelInfo, c: VeraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(tensors);
  if (!c.saveProjection) {
    out.delete(VERA_A);
    out.delete(VERA_B);
  }
  return out;
}

/** Without save_projection, PEFT rebuilds the projections from projection_prng_key on load; so do we. */
function tensorsFromSaved(info: ModelInfo, c: VeraConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  if (c.saveProjection) return new Map(saved);
  const { a, b } = veraProjections(c, veraLayout(info, c));
  return new Map([[VERA_A, a], [VERA_B, b], ...saved]);
}

class VeraContext extends DelegatingContext {
  private readonly layers: Map<string, VeraLayer>;
  constructor(
    inner: ForwardContext,
    info: ModelInfo,
    private readonly c: VeraConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(veraLayout(info, c).layers.map((l) => [l.path, l]));
  }

  /** PEFT's vera.Linear.forward: result + λ_b ⊙ linear(λ_d ⊙ linear(dropout(x), A[:, :in]), B[:out]). */
  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lin);
    const l = this.layers.get(path);
    if (!l) return y;
    const a = this.opts.tensor(VERA_A).slice(1, 0, l.inFeatures);
    const b = this.opts.tensor(VERA_B).slice(0, 0, l.outFeatures);
    const seed = this.opts.training && this.c.veraDropout > 0 ? this.opts.seed : null;
    const xin = seed ? F.dropout(x, this.c.veraDropout, seed) : x;
    const h = xin.matmul(a.transpose()).mul(this.opts.tensor(lambdaD(l)));
    const delta = h.matmul(b.transpose()).mul(this.opts.tensor(lambdaB(l)));
    return y.add(maskRows(delta, this.opts.rowMask));
  }
}

function need(tensors: ReadonlyMap<string, HostTensor>, key: string): HostTensor {
  const t = tensors.get(key);
  if (!t) throw new PeftConfigError(`VeRA merge: the adapter has no tensor "${key}"`);
  return t;
}

/** vera.Linear.merge: W += ΔW (transposed into GPT-2's [in, out] layout). */
function merge(info: ModelInfo, c: VeraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const a = need(tensors, VERA_A);
  const b = need(tensors, VERA_B);
  for (const l of veraLayout(info, c).layers) {
    const d = veraDelta(l, c.r, a, b, need(tensors, lambdaB(l)), need(tensors, lambdaD(l)));
    const w = info.weight(`${l.path}.weight`);
    const wd = w.data as Float32Array;
    const next = new Float32Array(wd.length);
    for (let o = 0; o < l.outFeatures; o++) {
      for (let i = 0; i < l.inFeatures; i++) {
        const at = info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i;
        next[at] = wd[at] + d[o * l.inFeatures + i];
      }
    }
    out.set(`${l.path}.weight`, hostTensor("f32", w.shape, next));
  }
  return out;
}

export const VERA: Tuner<VeraConfig> = {
  peftType: "VERA",
  parseConfig: parseVeraConfig,
  toJson: veraConfigJson,
  create,
  expectedTensors,
  tensorsToSave,
  tensorsFromSaved,
  trainable: (key) => key !== VERA_A && key !== VERA_B,
  wrap: (base, info, c, opts) => new VeraContext(base, info, c, opts),
  merge,
  supportsMixedBatch: true,
};
