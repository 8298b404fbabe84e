/**
 * A Gaussian process on the score, in float64: Matérn-5/2 kernel with one lengthscale per input
 * dimension (ARD), a signal variance and a noise variance, fitted by maximising the log marginal
 * likelihood (Adam on the log-hyperparameters with the analytic gradient, a few deterministic
 * starts). BoTorch's SingleTaskGP(Matern ν=2.5, Standardize) without its priors; AutoPEFT's default
 * SAAS prior fitted by NUTS is replaced by this (docs/search.md).
 */
import { cholesky, choleskySolve } from "../linalg/cholesky.js";
import { type Matrix, matrix } from "../linalg/matrix.js";

export interface GpHyper {
  /** One per input dimension. */
  lengthscales: number[];
  signalVar: number;
  noiseVar: number;
}

const SQRT5 = Math.sqrt(5);
const JITTER = 1e-8;

/** k(r) / s² for the Matérn-5/2 kernel. */
export function matern52(r: number): number {
  return (1 + SQRT5 * r + (5 / 3) * r * r) * Math.exp(-SQRT5 * r);
}

function scaledDistance(a: Float64Array, b: Float64Array, ls: readonly number[]): number {
  let s = 0;
  for (let d = 0; d < a.length; d++) {
    const t = (a[d] - b[d]) / ls[d];
    s += t * t;
  }
  return Math.sqrt(s);
}

export function kernel(a: Float64Array, b: Float64Array, h: GpHyper): number {
  return h.signalVar * matern52(scaledDistance(a, b, h.lengthscales));
}

/** Solve L·x = b (lower triangular). */
function forward(l: Matrix, b: Float64Array): Float64Array {
  const n = l.rows;
  const x = new Float64Array(b);
  for (let i = 0; i < n; i++) {
    let s = x[i];
    for (let j = 0; j < i; j++) s -= l.data[i * n + j] * x[j];
    x[i] = s / l.data[i * n + i];
  }
  return x;
}

/** A GP conditioned on (X, y) with fixed hyperparameters; y is standardised inside. */
export class GaussianProcess {
  readonly n: number;
  private readonly l: Matrix;
  private readonly alpha: Float64Array;
  private readonly mean: number;
  private readonly scale: number;

  constructor(
    private readonly x: readonly Float64Array[],
    y: readonly number[],
    readonly hyper: GpHyper,
    standardise = true,
  ) {
    this.n = x.length;
    const { mean, scale } = standardise ? moments(y) : { mean: 0, scale: 1 };
    this.mean = mean;
    this.scale = scale;
    const k = gram(x, hyper);
    this.l = cholesky(k);
    const z = y.map((v) => (v - mean) / scale);
    this.alpha = choleskySolve(this.l, matrix(this.n, 1, z)).data;
  }

  /** Posterior mean and standard deviation of the latent score (no observation noise) at a point. */
  predict(p: Float64Array): { mean: number; std: number } {
    const ks = new Float64Array(this.n);
    for (let i = 0; i < this.n; i++) ks[i] = kernel(this.x[i], p, this.hyper);
    let mu = 0;
    for (let i = 0; i < this.n; i++) mu += ks[i] * this.alpha[i];
    const v = forward(this.l, ks);
    let vv = 0;
    for (let i = 0; i < this.n; i++) vv += v[i] * v[i];
    const variance = Math.max(0, this.hyper.signalVar - vv);
    return { mean: this.mean + this.scale * mu, std: this.scale * Math.sqrt(variance) };
  }
}

function moments(y: readonly number[]): { mean: number; scale: number } {
  const mean = y.reduce((a, b) => a + b, 0) / Math.max(1, y.length);
  const v = y.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, y.length - 1);
  const scale = Math.sqrt(v);
  return { mean, scale: scale > 1e-12 ? scale : 1 };
}

function gram(x: readonly Float64Array[], h: GpHyper): Matrix {
  const n = x.length;
  const k = matrix(n, n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      const v = kernel(x[i], x[j], h) + (i === j ? h.noiseVar + JITTER : 0);
      k.data[i * n + j] = v;
      k.data[j * n + i] = v;
    }
  return k;
}

// Bounds on the log-hyperparameters (inputs live in [0, 1], the score is standardised).
const LOG_LS = [Math.log(0.05), Math.log(200)];
/** σ of the log-normal lengthscale prior (Hvarfner et al. 2024, BoTorch's default since 0.12). */
const PRIOR_SCALE = Math.sqrt(3);
const LOG_SIGNAL = [Math.log(0.05), Math.log(20)];
const LOG_NOISE = [Math.log(1e-6), Math.log(0.5)];

function unpack(theta: Float64Array, dims: number): GpHyper {
  return {
    lengthscales: Array.from(theta.subarray(0, dims), Math.exp),
    signalVar: Math.exp(theta[dims]),
    noiseVar: Math.exp(theta[dims + 1]),
  };
}

/**
 * The negative log marginal likelihood of standardised z and its gradient in the log-hyperparameters:
 * ½ zᵀK⁻¹z + Σ log L_ii + n/2 log 2π;  ∂/∂θ = ½ tr((K⁻¹ − ααᵀ) ∂K/∂θ).
 */
export function negLogLikelihood(
  x: readonly Float64Array[],
  z: readonly number[],
  theta: Float64Array,
): { value: number; grad: Float64Array } {
  const n = x.length;
  const dims = x[0].length;
  const h = unpack(theta, dims);
  const k = gram(x, h);
  const l = cholesky(k);
  const alpha = choleskySolve(l, matrix(n, 1, z)).data;
  let value = 0.5 * n * Math.log(2 * Math.PI);
  for (let i = 0; i < n; i++) value += 0.5 * z[i] * alpha[i] + Math.log(l.data[i * n + i]);
  const eye = matrix(n, n);
  for (let i = 0; i < n; i++) eye.data[i * n + i] = 1;
  const kinv = choleskySolve(l, eye).data;
  // W = K⁻¹ − ααᵀ (symmetric).
  const w = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) w[i * n + j] = kinv[i * n + j] - alpha[i] * alpha[j];
  const grad = new Float64Array(dims + 2);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      const r = scaledDistance(x[i], x[j], h.lengthscales);
      const kf = h.signalVar * matern52(r);
      const common = h.signalVar * (5 / 3) * (1 + SQRT5 * r) * Math.exp(-SQRT5 * r);
      const wij = 0.5 * w[i * n + j];
      for (let d = 0; d < dims; d++) {
        const t = (x[i][d] - x[j][d]) / h.lengthscales[d];
        grad[d] += wij * common * t * t;
      }
      grad[dims] += wij * kf;
    }
  for (let i = 0; i < n; i++) grad[dims + 1] += 0.5 * w[i * n + i] * h.noiseVar;
  return { value, grad };
}

function clampTheta(theta: Float64Array, dims: number): void {
  for (let d = 0; d < dims; d++) theta[d] = Math.min(LOG_LS[1], Math.max(LOG_LS[0], theta[d]));
  theta[dims] = Math.min(LOG_SIGNAL[1], Math.max(LOG_SIGNAL[0], theta[dims]));
  theta[dims + 1] = Math.min(LOG_NOISE[1], Math.max(LOG_NOISE[0], theta[dims + 1]));
}

/** Hyperparameters maximising the marginal likelihood of (x, standardised y): Adam from fixed starts. */
export function fitHyper(
  x: readonly Float64Array[],
  y: readonly number[],
  opts: { steps?: number; lr?: number; lengthscalePrior?: boolean } = {},
): GpHyper {
  const dims = x[0].length;
  const { mean, scale } = moments(y);
  const z = y.map((v) => (v - mean) / scale);
  const steps = opts.steps ?? 120;
  const lr = opts.lr ?? 0.08;
  let best: { value: number; theta: Float64Array } | null = null;
  const prior = opts.lengthscalePrior ?? true;
  const priorLoc = Math.SQRT2 + 0.5 * Math.log(dims);
  for (const [ls, noise] of [...(prior ? [[Math.exp(priorLoc), 1e-3]] : []), [0.5, 1e-3], [2, 1e-2], [0.2, 1e-4]]) {
    const theta = new Float64Array(dims + 2);
    theta.fill(Math.log(ls), 0, dims);
    theta[dims] = 0;
    theta[dims + 1] = Math.log(noise);
    const m = new Float64Array(dims + 2);
    const v = new Float64Array(dims + 2);
    for (let t = 1; t <= steps; t++) {
      let r: { value: number; grad: Float64Array };
      try {
        r = negLogLikelihood(x, z, theta);
      } catch {
        break; // not positive definite at these hyperparameters: keep the last good point
      }
      if (prior) {
        for (let d = 0; d < dims; d++) {
          const u = theta[d] - priorLoc;
          r.value += (u * u) / (2 * PRIOR_SCALE * PRIOR_SCALE);
          r.grad[d] += u / (PRIOR_SCALE * PRIOR_SCALE);
        }
      }
      if (best === null || r.value < best.value) best = { value: r.value, theta: new Float64Array(theta) };
      for (let i = 0; i < theta.length; i++) {
        m[i] = 0.9 * m[i] + 0.1 * r.grad[i];
        v[i] = 0.999 * v[i] + 0.001 * r.grad[i] * r.grad[i];
        const mh = m[i] / (1 - 0.9 ** t);
        const vh = v[i] / (1 - 0.999 ** t);
        theta[i] -= (lr * mh) / (Math.sqrt(vh) + 1e-8);
      }
      clampTheta(theta, dims);
    }
  }
  if (best === null) return { lengthscales: Array(dims).fill(1), signalVar: 1, noiseVar: 1e-2 };
  return unpack(best.theta, dims);
}
