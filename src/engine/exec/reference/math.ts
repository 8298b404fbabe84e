/** Scalar functions that JS's Math lacks or defines differently from ONNX Runtime's C++ kernels. */

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const INV_SQRT_PI = 1 / Math.sqrt(Math.PI);

/**
 * Error function to near double precision: the f64 interpreter is the oracle for finite-difference
 * gradient checks, so a low-order approximation (1e-7) would show up as gradient error.
 * Below 2: erf(x) = 2/√π · e^{-x²} · Σ_n 2^n x^{2n+1} / (2n+1)!!, whose terms are all positive
 * (the plain Taylor series alternates and cancels badly); its rounding error grows with x.
 * From 2 up: 1 - erfc(x) with erfc from Laplace's continued fraction, evaluated backwards
 * (150 terms are exact to double precision from x = 1.5 on).
 */
export function erf(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  const ax = Math.abs(x);
  let r: number;
  if (ax < 2) {
    const x2 = ax * ax;
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (2 * x2) / (2 * n + 1);
      sum += term;
      if (term <= sum * 1e-17) break;
    }
    r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
  } else if (ax < 6.5) {
    let f = ax;
    for (let k = 150; k >= 1; k--) f = ax + k / 2 / f;
    r = 1 - (Math.exp(-ax * ax) * INV_SQRT_PI) / f;
  } else {
    r = 1;
  }
  return x < 0 ? -r : r;
}

/** ONNX Round: halves go to the even neighbour; keeps the sign of zero and passes ±inf/NaN. */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const d = x - f;
  let r: number;
  if (d < 0.5) r = f;
  else if (d > 0.5) r = f + 1;
  else r = f % 2 === 0 ? f : f + 1;
  return r === 0 ? (x < 0 || Object.is(x, -0) ? -0 : 0) : r;
}

/** Logistic function without overflow for large |x|. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** C's pow (what ONNX Pow computes): pow(1, y) = 1 and pow(-1, ±inf) = 1, where JS gives NaN. */
export function powC(x: number, y: number): number {
  if (x === 1 || y === 0) return 1;
  if (x === -1 && (y === Number.POSITIVE_INFINITY || y === Number.NEGATIVE_INFINITY)) return 1;
  return x ** y;
}

const I32_MIN = -2147483648;
const I64_MIN = -(2 ** 63);

/**
 * Float to int32 truncating toward zero. NaN and out-of-range values give INT32_MIN, which is
 * what ONNX Runtime's static_cast produces on x86 (the C++ result is undefined).
 */
export function floatToI32(v: number): number {
  return v > -2147483649 && v < 2147483648 ? Math.trunc(v) | 0 : I32_MIN;
}

/** Float to int64 truncating toward zero; NaN and out-of-range give INT64_MIN as on x86. */
export function floatToI64(v: number): number {
  return v >= I64_MIN && v < 2 ** 63 ? Math.trunc(v) + 0 : I64_MIN;
}
