/**
 * LoRA-SB (Ponkshe, Singhal et al. 2024, "Initialization using Update Approximation is a Silver
 * Bullet for Extremely Efficient Low-Rank Fine-Tuning", arXiv 2411.19557; catalog #45), after the
 * authors' code (RaghavSinghal10/lora-sb, utils/initialization_utils.py, gradient_utils.py).
 * LoRA-XS's architecture: y = W·x + s·B·R·A·x with B (out×r) and A (r×in) frozen and only the
 * r×r matrix R trained. Initialisation approximates the first step of full fine-tuning: with
 * G = Σ over calibration batches of ∂L/∂W, ΔW₁ = −η·sign(G) (sign, as the first Adam step), and
 * s·B·R·A is its best rank-r approximation: ΔW₁ ≈ U_r·S_r·V_rᵀ, B = U_r, A = V_rᵀ, R = S_r / s.
 * W is not corrected, so training starts from W + ΔW₁'s rank-r part (one step already taken).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { type Matrix, matrix, randomizedSvd, svd } from "../../util/linalg.js";
import { PeftConfigError } from "../config.js";
import { targetedLinears } from "../targets.js";
import {
  type CalibrationRequest,
  type CalibrationStats,
  type CreateData,
  type CreatedAdapter,
  LinearDeltaContext,
  type ModelInfo,
  type Tuner,
  type WrapOptions,
} from "../tuner.js";
import { type LoraSbConfig, loraSbConfigJson, parseLoraSbConfig } from "./config.js";

export interface LoraSbLayer {
  path: string;
  key: string;
  inFeatures: number;
  outFeatures: number;
  r: number;
  scaling: number;
}

export const loraSbKeys = (l: { key: string }) => ({
  a: `${l.key}.lora_sb_A.weight`,
  b: `${l.key}.lora_sb_B.weight`,
  r: `${l.key}.lora_sb_R.weight`,
});

export function loraSbLayers(info: ModelInfo, c: LoraSbConfig): LoraSbLayer[] {
  return targetedLinears(info, c, "LoRA-SB config").map(({ path, key, inFeatures, outFeatures }) => {
    if (c.r > Math.min(inFeatures, outFeatures))
      throw new PeftConfigError(`LoRA-SB config: r = ${c.r} exceeds min(in, out) = ${Math.min(inFeatures, outFeatures)} of "${key}"`);
    return { path, key, inFeatures, outFeatures, r: c.r, scaling: c.loraAlpha / c.r };
  });
}

/**
 * The rank-r approximation of −η·sign(G) (G logical [out, in]) as B = U_r, S_r, A = V_rᵀ: the exact
 * truncation, or with `niter` the randomized SVD (as the authors' torch.svd_lowrank(q = r, niter);
 * 10 extra random columns, torch's own advice, bring it closer to the exact one).
 */
export function signUpdateFactors(
  g: Matrix,
  eta: number,
  r: number,
  niter: number | null = null,
): { b: Matrix; s: Float64Array; a: Matrix } {
  const step = matrix(
    g.rows,
    g.cols,
    Array.from(g.data, (x) => -eta * Math.sign(x)),
  );
  const d = niter === null ? svd(step) : randomizedSvd(step, r, { niter });
  const k = d.s.length;
  const b = matrix(g.rows, r);
  const a = matrix(r, g.cols);
  for (let j = 0; j < r; j++) {
    for (let o = 0; o < g.rows; o++) b.data[o * r + j] = d.u.data[o * k + j];
    for (let i = 0; i < g.cols; i++) a.data[j * g.cols + i] = d.v.data[i * k + j];
  }
  return { b, s: d.s.slice(0, r), a };
}

function calibration(info: ModelInfo, c: LoraSbConfig): CalibrationRequest {
  return { layers: loraSbLayers(info, c).map((l) => l.path), gradientSum: true };
}

function create(info: ModelInfo, c: LoraSbConfig, _rng: unknown, data?: CreateData): CreatedAdapter {
  const stats: CalibrationStats | undefined = data?.calibration;
  if (!stats)
    throw new PeftConfigError(
      "LoRA-SB initialises from gradients of your data: pass --calibration-data FILE (library: addAdapter(..., { calibration }))",
    );
  const tensors = new Map<string, HostTensor>();
  for (const l of loraSbLayers(info, c)) {
    const name = `${l.path}.weight`;
    const stored = stats.gradientSum.get(name);
    if (!stored) throw new PeftConfigError(`LoRA-SB: the calibration statistics have no gradient sum for "${name}"`);
    const g = matrix(l.outFeatures, l.inFeatures);
    if (stored.data.length !== g.data.length)
      throw new PeftConfigError(`LoRA-SB: the gradient sum for "${name}" is ${stored.rows}x${stored.cols}, not the weight's shape`);
    for (let o = 0; o < l.outFeatures; o++)
      for (let i = 0; i < l.inFeatures; i++)
        g.data[o * l.inFeatures + i] = stored.data[info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i];
    const f = signUpdateFactors(g, c.eta, l.r, c.svdNiter);
    const rr = new Float32Array(l.r * l.r);
    for (let j = 0; j < l.r; j++) rr[j * l.r + j] = f.s[j] / l.scaling;
    const k = loraSbKeys(l);
    tensors.set(k.a, hostTensor("f32", [l.r, l.inFeatures], Float32Array.from(f.a.data)));
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, l.r], Float32Array.from(f.b.data)));
    tensors.set(k.r, hostTensor("f32", [l.r, l.r], rr));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: LoraSbConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of loraSbLayers(info, c)) {
    const k = loraSbKeys(l);
    out.set(k.a, [l.r, l.inFeatures]);
    out.set(k.b, [l.outFeatures, l.r]);
    out.set(k.r, [l.r, l.r]);
  }
  return out;
}

/** The change this method adds to a targeted layer's output (see LinearDeltaContext). */
function lorasbDelta(opts: WrapOptions, l: LoraSbLayer, x: Tensor): Tensor {
  const k = loraSbKeys(l);
  const t = opts.tensor;
  // s·B·R·A·x through the r-wide intermediates.
  const change = x.matmul(t(k.a).transpose()).matmul(t(k.r).transpose()).mul(l.scaling).matmul(t(k.b).transpose());
  return change;
}

/** W + s·B·R·A in W's stored layout. */
function merge(info: ModelInfo, c: LoraSbConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of loraSbLayers(info, c)) {
    const k = loraSbKeys(l);
    const a = tensors.get(k.a)?.data as Float32Array;
    const b = tensors.get(k.b)?.data as Float32Array;
    const rr = tensors.get(k.r)?.data as Float32Array;
    // BR = B·R (out×r), then (B·R)·A entry by entry.
    const br = new Float64Array(l.outFeatures * l.r);
    for (let o = 0; o < l.outFeatures; o++)
      for (let j = 0; j < l.r; j++) {
        let v = 0;
        for (let t = 0; t < l.r; t++) v += b[o * l.r + t] * rr[t * l.r + j];
        br[o * l.r + j] = v;
      }
    const name = `${l.path}.weight`;
    const w = info.weight(name);
    const wd = w.data as Float32Array;
    const next = new Float32Array(wd.length);
    for (let o = 0; o < l.outFeatures; o++)
      for (let i = 0; i < l.inFeatures; i++) {
        let v = 0;
        for (let j = 0; j < l.r; j++) v += br[o * l.r + j] * a[j * l.inFeatures + i];
        const at = info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i;
        next[at] = wd[at] + l.scaling * v;
      }
    out.set(name, hostTensor("f32", w.shape, next));
  }
  return out;
}

export const LORA_SB: Tuner<LoraSbConfig> = {
  peftType: "LORA_SB",
  parseConfig: parseLoraSbConfig,
  toJson: loraSbConfigJson,
  create,
  calibration,
  // Of the adapter's own tensors only the r×r core is trained; B and A are saved with it.
  trainable: (key) => !key.endsWith(".lora_sb_A.weight") && !key.endsWith(".lora_sb_B.weight"),
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, loraSbLayers(info, c), opts.rowMask, (l, x) => lorasbDelta(opts, l, x)),
  merge,
  supportsMixedBatch: true,
};
