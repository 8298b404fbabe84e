/**
 * Which layers an HRA config adapts, the key of their Householder vectors, and the host-side
 * (float64) algebra of PEFT's HRALinear.get_delta_weight: the orthogonal matrix H the base
 * weight is multiplied by on the right, W' = W·H.
 */
import { PeftConfigError } from "../config.js";
import { targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { HraConfig } from "./config.js";

export interface HraLayer {
  /** Canonical path (its weight is `${path}.weight`). */
  path: string;
  /** Adapter key of the Householder vectors, [in, r] (a ParameterDict entry: no ".weight"). */
  key: string;
  inFeatures: number;
  outFeatures: number;
}

/** PEFT's TRANSFORMERS_MODELS_TO_HRA_TARGET_MODULES_MAPPING is a copy of LoRA's. */
export function hraLayers(info: ModelInfo, c: HraConfig): HraLayer[] {
  const chosen = targetedLinears(info, c, "HRA config");
  // HRAModel._create_new_module accepts nn.Linear and nn.Conv2d only: GPT-2's Conv1D raises there.
  if (info.fanInFanOut)
    throw new PeftConfigError(
      `HRA config: "${chosen[0].key}" stores its weight [in, out] (a GPT-2 Conv1D layer); PEFT's HRA supports only nn.Linear layers`,
    );
  return chosen.map(({ path, key: name, inFeatures: inF, outFeatures: out }) => {
    if (c.applyGs && c.r > inF)
      throw new PeftConfigError(
        `HRA config: r = ${c.r} exceeds in_features = ${inF} of "${name}": apply_GS cannot orthonormalise more vectors than the dimension`,
      );
    return { path, key: `${name}.hra_u`, inFeatures: inF, outFeatures: out };
  });
}

/** Column j of u [in, r] divided by its norm, as float64. */
function unitColumns(u: Float32Array | Float64Array, inF: number, r: number): Float64Array[] {
  const cols: Float64Array[] = [];
  for (let j = 0; j < r; j++) {
    const c = new Float64Array(inF);
    let s = 0;
    for (let i = 0; i < inF; i++) {
      c[i] = u[i * r + j];
      s += c[i] * c[i];
    }
    const n = Math.sqrt(s);
    for (let i = 0; i < inF; i++) c[i] /= n;
    cols.push(c);
  }
  return cols;
}

/**
 * PEFT's Gram–Schmidt (apply_GS): q₀ = u₀/‖u₀‖, then each uᵢ minus its projections on the q's
 * before it, taken one after the other (modified Gram–Schmidt), normalised.
 */
export function gramSchmidt(u: Float32Array | Float64Array, inF: number, r: number): Float64Array[] {
  const q: Float64Array[] = [];
  for (let j = 0; j < r; j++) {
    const v = new Float64Array(inF);
    for (let i = 0; i < inF; i++) v[i] = u[i * r + j];
    for (const p of q) {
      let d = 0;
      for (let i = 0; i < inF; i++) d += p[i] * v[i];
      for (let i = 0; i < inF; i++) v[i] -= d * p[i];
    }
    let s = 0;
    for (let i = 0; i < inF; i++) s += v[i] * v[i];
    const n = Math.sqrt(s);
    for (let i = 0; i < inF; i++) v[i] /= n;
    q.push(v);
  }
  return q;
}

/**
 * Multiplies each row w of `rows` ([n, in], row-major, in place) by H on the right, with H as
 * get_delta_weight builds it: H = H₁·H₂·…·H_r with Hᵢ = I − 2·ûᵢ·ûᵢᵀ, or I − 2·Q·Qᵀ with apply_GS.
 */
export function rightMultiplyH(
  rows: Float64Array,
  n: number,
  u: Float32Array | Float64Array,
  inF: number,
  r: number,
  applyGs: boolean,
): void {
  const vecs = applyGs ? gramSchmidt(u, inF, r) : unitColumns(u, inF, r);
  for (let o = 0; o < n; o++) {
    const w = rows.subarray(o * inF, (o + 1) * inF);
    if (applyGs) {
      // w − 2·(w·Q)·Qᵀ: all projections from the same w.
      const d = vecs.map((q) => q.reduce((s, qi, i) => s + qi * w[i], 0));
      for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) w[i] -= 2 * d[j] * vecs[j][i];
    } else {
      // w·H₁ first, then ·H₂, …
      for (const v of vecs) {
        let d = 0;
        for (let i = 0; i < inF; i++) d += v[i] * w[i];
        for (let i = 0; i < inF; i++) w[i] -= 2 * d * v[i];
      }
    }
  }
}

/** H itself, [in, in] row-major float64 (tests and docs; merging uses rightMultiplyH). */
export function householderProduct(u: Float32Array | Float64Array, inF: number, r: number, applyGs: boolean): Float64Array {
  const h = new Float64Array(inF * inF);
  for (let i = 0; i < inF; i++) h[i * inF + i] = 1;
  rightMultiplyH(h, inF, u, inF, r, applyGs);
  return h;
}
