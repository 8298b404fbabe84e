/**
 * Scalar codebooks for N(0, 1): the Lloyd–Max quantiser (levels = centroids E[x | cell], thresholds
 * = midpoints, iterated to a fixed point; Max 1960) and the authors' "median" codebook
 * (JieShibo/PETL-ViT binary_adapter/utils.py QLinear.quantize: levels = Φ⁻¹ of the middle of
 * each cell's probability interval, 500 rounds from all-zero levels). Host-side float64.
 */
import { erf } from "../../engine/exec/reference/math.js";

export type CodebookKind = "lloyd-max" | "authors";
export const CODEBOOK_KINDS: readonly CodebookKind[] = ["lloyd-max", "authors"];
export const LOWBIT_BITS: readonly number[] = [1, 2, 4, 8];

const SQRT2 = Math.SQRT2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** φ(x). */
export function normalPdf(x: number): number {
  return Number.isFinite(x) ? INV_SQRT_2PI * Math.exp(-0.5 * x * x) : 0;
}

/** Φ(x), through erfc for the lower tail so small probabilities keep their digits. */
export function normalCdf(x: number): number {
  if (x === Number.NEGATIVE_INFINITY) return 0;
  if (x === Number.POSITIVE_INFINITY) return 1;
  return x < 0 ? 0.5 * (1 - erf(-x / SQRT2)) : 0.5 * (1 + erf(x / SQRT2));
}

// Acklam's rational approximation of Φ⁻¹ (relative error 1.15e-9), then one Halley step on Φ.
const A = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
const B = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
const C = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
const D = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
const P_LOW = 0.02425;

function tail(q: number): number {
  return (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1);
}

/** Φ⁻¹(p) for p in [0, 1] (±∞ at the ends). */
export function normalPpf(p: number): number {
  if (p <= 0) return Number.NEGATIVE_INFINITY;
  if (p >= 1) return Number.POSITIVE_INFINITY;
  let x: number;
  if (p < P_LOW) x = tail(Math.sqrt(-2 * Math.log(p)));
  else if (p > 1 - P_LOW) x = -tail(Math.sqrt(-2 * Math.log(1 - p)));
  else {
    const q = p - 0.5;
    const r = q * q;
    x =
      ((((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q) /
      (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1);
  }
  const e = normalCdf(x) - p;
  const u = e * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2);
  return x - u / (1 + (x * u) / 2);
}

/** Midpoints of adjacent levels: the nearest-level cell boundaries. */
export function thresholdsOf(levels: readonly number[]): number[] {
  return levels.slice(1).map((v, i) => (levels[i] + v) / 2);
}

/**
 * The positive half of the 8-bit Lloyd–Max levels, from this file's iteration run to a move below
 * 1e-13 (62k rounds from √3·Φ⁻¹((i + ½)/256), ~14 s): lloydMaxLevels(8) starts from it so it
 * converges at once. codebook.test.ts checks it is a fixed point (each level its cell's centroid).
 */
const LLOYD_MAX_8BIT_START = [
  0.00844619322275, 0.0253393830993, 0.0422349838042, 0.0591346043408, 0.0760398563925, 0.0929523554012, 0.109873721652, 0.126805581368,
  0.143749567811, 0.160707322402, 0.177680495847, 0.194670749285, 0.211679755457, 0.228709199885, 0.245760782085, 0.262836216801,
  0.279937235263, 0.29706558648, 0.314223038567, 0.331411380096, 0.348632421504, 0.365887996522, 0.383179963666, 0.400510207761,
  0.417880641526, 0.435293207212, 0.452749878292, 0.470252661224, 0.487803597271, 0.505404764404, 0.523058279267, 0.54076629924,
  0.558531024577, 0.576354700642, 0.594239620248, 0.612188126096, 0.630202613334, 0.648285532233, 0.666439390997, 0.684666758708,
  0.702970268426, 0.72135262044, 0.739816585697, 0.758365009409, 0.777000814857, 0.795727007409, 0.814546678753, 0.833463011383,
  0.852479283339, 0.871598873226, 0.890825265537, 0.910162056295, 0.92961295905, 0.949181811244, 0.968872580992, 0.988689374295,
  1.00863644273, 1.02871819165, 1.04893918895, 1.06930417444, 1.08981806985, 1.11048598957, 1.13131325219, 1.15230539282, 1.17346817639,
  1.19480761198, 1.21632996816, 1.23804178966, 1.25994991526, 1.28206149723, 1.30438402232, 1.32692533456, 1.34969365994, 1.37269763339,
  1.39594632801, 1.41944928704, 1.4432165588, 1.46725873483, 1.49158699186, 1.51621313771, 1.54114966198, 1.5664097918, 1.59200755346,
  1.61795784065, 1.64427649014, 1.67098036593, 1.69808745304, 1.72561696232, 1.75358944787, 1.78202693891, 1.81095308837, 1.84039334075,
  1.87037512243, 1.90092805808, 1.93208421767, 1.96387839935, 1.99634845491, 2.02953566541, 2.06348517707, 2.09824650905, 2.13387414822,
  2.17042824937, 2.20797546433, 2.24658992973, 2.2863544514, 2.32736193472, 2.36971712527, 2.41353874441, 2.45896213358, 2.50614256041,
  2.55525939738, 2.60652146646, 2.66017396569, 2.71650757858, 2.77587065269, 2.83868578675, 2.90547290366, 2.97688213369, 3.05374201616,
  3.13713253169, 3.22850021057, 3.32984846999, 3.44407167821, 3.57558797238, 3.73166626221, 3.92563778393, 4.18659544284, 4.60353561244,
];

/**
 * Lloyd–Max levels for N(0, 1) with 2^bits cells: start from the probability-uniform levels (8 bits: the table above) and
 * alternate thresholds = midpoints, levels = (φ(a) − φ(b)) / (Φ(b) − Φ(a)) until no level moves
 * by more than 1e-10 (at most 100000 rounds).
 */
export function lloydMaxLevels(bits: number): number[] {
  const n = 2 ** bits;
  let levels =
    bits === 8
      ? [...LLOYD_MAX_8BIT_START.map((v) => -v).reverse(), ...LLOYD_MAX_8BIT_START]
      : Array.from({ length: n }, (_, i) => normalPpf((i + 0.5) / n));
  for (let round = 0; round < 100000; round++) {
    const edges = [Number.NEGATIVE_INFINITY, ...thresholdsOf(levels), Number.POSITIVE_INFINITY];
    const next = levels.map((_, i) => {
      const a = edges[i];
      const b = edges[i + 1];
      return (normalPdf(a) - normalPdf(b)) / (normalCdf(b) - normalCdf(a));
    });
    const moved = Math.max(...next.map((v, i) => Math.abs(v - levels[i])));
    levels = next;
    if (moved < 1e-10) break;
  }
  return symmetrise(levels);
}

/** The authors' QLinear.quantize(bit), 500 rounds from all-zero levels, as coded. */
export function authorsLevels(bits: number): number[] {
  const n = 2 ** bits;
  let levels = new Array<number>(n).fill(0);
  for (let round = 0; round < 500; round++) {
    const cdf = [0, ...thresholdsOf(levels).map(normalCdf), 1];
    levels = levels.map((_, i) => normalPpf((cdf[i] + cdf[i + 1]) / 2));
  }
  return symmetrise(levels);
}

/** Exact antisymmetry (v_i = −v_{n−1−i}): rounding leaves the two halves a few ulps apart. */
function symmetrise(levels: number[]): number[] {
  const n = levels.length;
  return levels.map((v, i) => (v - levels[n - 1 - i]) / 2);
}

const cache = new Map<string, number[]>();

/** The codebook of a kind and width, ascending, computed once per process. */
export function codebookLevels(kind: CodebookKind, bits: number): number[] {
  const key = `${kind}:${bits}`;
  let v = cache.get(key);
  if (!v) {
    v = kind === "lloyd-max" ? lloydMaxLevels(bits) : authorsLevels(bits);
    cache.set(key, v);
  }
  return [...v];
}
