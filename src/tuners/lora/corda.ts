/**
 * CorDA (Yang et al. 2024, "CorDA: Context-Oriented Decomposition Adaptation of Large Language
 * Models for Task-Aware Parameter-Efficient Fine-tuning"), as PEFT 0.20.0's
 * init_lora_weights="corda" does it (peft/tuners/lora/corda.py collect_eigens_for_layer and
 * crop_corda_eigens, layer.py corda_init; the authors' iboing/CorDA cordalib/decomposition.py):
 *
 *   C  = the layer's input covariance (Σ xᵀx / samples, each sample's inputs divided by |max|),
 *   C̃  = C + λ·mean(diag C)·I, λ = 0.01 (PEFT doubles it until ‖C̃·C̃⁻¹ − I‖_F < 0.05, which
 *        in float64 always holds at 0.01: see dampCovariance),
 *   W·C̃ = U·S·Vᵀ (thin SVD),  V̂ = C̃⁻¹·V,  so W = U·S·V̂ᵀ exactly;
 *   IPM ("ipm", instruction-previewed) keeps the r largest components, KPM ("kpm",
 *   knowledge-preserved) the r smallest;
 *   A = diag(√(S_r/s))·V̂_rᵀ, B = U_r·diag(√(S_r/s)), and the base keeps W − s·B·A.
 */
import { cholesky, choleskySolve, type Matrix, matmul, matrix, NotPositiveDefiniteError, svd } from "../../util/linalg.js";
import { PeftConfigError } from "../config.js";
import type { CalibrationRequest, CalibrationStats, ModelInfo } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { type LoraLayer, loraLayers } from "./layers.js";

export interface CordaFactors {
  /** [r, in] */
  a: Float32Array;
  /** [out, r] */
  b: Float32Array;
  /** λ the damping loop settled on. */
  damp: number;
}

/** What CorDA asks of the calibration pass: the input covariance of each targeted linear layer. */
export function cordaCalibration(info: ModelInfo, c: LoraConfig): CalibrationRequest | null {
  if (c.initLoraWeights !== "corda") return null;
  const layers = loraLayers(info, c)
    .filter((l) => l.kind === "linear")
    .map((l) => l.path);
  return layers.length ? { layers, inputCovariance: true, inputScaling: "exampleMax" } : null;
}

/**
 * C̃ = C + λ·mean(diag C)·I and its Cholesky factor, λ = 0.01 (PEFT's start value).
 *
 * PEFT doubles λ while ‖C̃·C̃⁻¹ − I‖_F ≥ 0.05 with its float32 inverse. In float64 that test
 * cannot fail at λ = 0.01: C is positive semidefinite, so cond(C̃) ≤ (trace C + λ·mean)/(λ·mean)
 * = 1 + n/λ = 1 + 100·n, and the inverse's error stays near cond·n·2⁻⁵² (below 1e-6 for any
 * layer width up to 10⁵). So the product is not formed (it cost more than the rest of the
 * decomposition); λ is doubled only when the factorisation itself fails (non-finite statistics).
 */
export function dampCovariance(c: Matrix, where: string): { damped: Matrix; factor: Matrix; damp: number } {
  const n = c.rows;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += c.data[i * n + i];
  mean /= n;
  if (!(mean > 0) || !Number.isFinite(mean))
    throw new PeftConfigError(
      `CorDA: the input covariance of "${where}" is zero or not finite (mean diagonal ${mean}); calibrate on other data`,
    );
  for (let damp = 0.01; damp < 1e12; damp *= 2) {
    const damped = matrix(n, n, c.data);
    for (let i = 0; i < n; i++) damped.data[i * n + i] += damp * mean;
    try {
      return { damped, factor: cholesky(damped), damp };
    } catch (e) {
      if (!(e instanceof NotPositiveDefiniteError)) throw e;
    }
  }
  throw new PeftConfigError(`CorDA: the input covariance of "${where}" could not be factorised at any damping`);
}

/** The covariance the calibration pass collected for a layer, averaged per sample as PEFT does. */
export function layerCovariance(l: LoraLayer, stats: CalibrationStats | undefined): Matrix {
  const sum = stats?.inputCovariance.get(l.path);
  if (!stats || !sum)
    throw new PeftConfigError(
      `CorDA: no input covariance for "${l.key}"; run the calibration pass for this config (its calibration() request)`,
    );
  if (sum.rows !== l.inFeatures || sum.cols !== l.inFeatures)
    throw new PeftConfigError(
      `CorDA: the input covariance of "${l.key}" is ${sum.rows}x${sum.cols}, expected ${l.inFeatures}x${l.inFeatures}`,
    );
  const c = matrix(sum.rows, sum.cols, sum.data);
  const n = Math.max(stats.samples, 1);
  for (let i = 0; i < c.data.length; i++) c.data[i] /= n;
  return c;
}

/** The full decomposition W = U·S·V̂ᵀ of an [out, in] weight for covariance C (all k = min(out, in) components). */
export function cordaDecompose(w: Matrix, cov: Matrix, where: string): { u: Matrix; s: Float64Array; vHat: Matrix; damp: number } {
  const { damped, factor, damp } = dampCovariance(cov, where);
  const { u, s, v } = svd(matmul(w, damped));
  // V̂ = (Vᵀ·C̃⁻¹)ᵀ = C̃⁻¹·V (C̃ is symmetric), by two triangular solves instead of an inverse.
  return { u, s, vHat: choleskySolve(factor, v), damp };
}

/** CorDA's A and B for one layer: `mode` picks the r largest ("ipm") or r smallest ("kpm") components. */
export function cordaFactors(w: Matrix, cov: Matrix, l: LoraLayer, mode: "ipm" | "kpm"): CordaFactors {
  const k = Math.min(l.inFeatures, l.outFeatures);
  if (l.r > k) throw new PeftConfigError(`CorDA: r = ${l.r} exceeds min(in, out) = ${k} of "${l.key}"`);
  const { u, s, vHat, damp } = cordaDecompose(w, cov, l.key);
  const first = mode === "ipm" ? 0 : k - l.r;
  const a = new Float32Array(l.r * l.inFeatures);
  const b = new Float32Array(l.outFeatures * l.r);
  for (let j = 0; j < l.r; j++) {
    const c = first + j;
    const root = Math.sqrt(s[c] / l.scaling);
    for (let i = 0; i < l.inFeatures; i++) a[j * l.inFeatures + i] = root * vHat.data[i * k + c];
    for (let o = 0; o < l.outFeatures; o++) b[o * l.r + j] = root * u.data[o * k + c];
  }
  return { a, b, damp };
}
