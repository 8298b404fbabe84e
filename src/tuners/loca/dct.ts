/**
 * Host side of LoCA's transform (float64): the orthonormal DCT-II basis the authors build
 * (TL-UESTC/LoCA peft/src/peft/tuners/loca/dct_utils.py, DCTMatrixCache), the integer positions
 * the graph derives from the continuous locations (bit for bit), and ΔW for merging.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { type Matrix, matrix } from "../../util/linalg.js";

/** C [n, n] with C[k, j] = √(2/n)·cos(π(2j+1)k / 2n), row 0 divided by √2: DCT2(X) = C·X, iDCT2(Y) = Cᵀ·Y. */
export function dctBasis(n: number): Float64Array {
  const c = new Float64Array(n * n);
  const s = Math.sqrt(2 / n);
  for (let k = 0; k < n; k++)
    for (let j = 0; j < n; j++) c[k * n + j] = s * Math.cos((Math.PI * (2 * j + 1) * k) / (2 * n)) * (k === 0 ? Math.SQRT1_2 : 1);
  return c;
}

const basisCache = new Map<string, HostTensor>();

/** The basis as a graph constant's value (f32 or f64), cached per size. */
export function dctBasisTensor(n: number, dtype: "f32" | "f64"): HostTensor {
  const key = `${n}:${dtype}`;
  let t = basisCache.get(key);
  if (!t) {
    const c = dctBasis(n);
    t = hostTensor(dtype, [n, n], dtype === "f32" ? Float32Array.from(c) : c);
    basisCache.set(key, t);
  }
  return t;
}

/** Math.round but ties to even, as torch.round and ONNX Round. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** f32(0.999), the authors' clip bound as a float32 tensor holds it. */
const CLIP_MAX = Math.fround(0.999);

/** The integer position round(f32(clip(ℓ, 0, 0.999)·(d − 1))) of one f32 location, as the graph computes it. */
export function positionOf(loc: number, d: number): number {
  const clipped = Math.min(Math.max(loc, 0), CLIP_MAX);
  return roundHalfEven(Math.fround(clipped * (d - 1)));
}

/** Row and column positions of a layer's [2, B] locations. */
export function positions(loc: HostTensor, dOut: number, dIn: number): { u: Int32Array; v: Int32Array } {
  const b = loc.shape[1];
  const l = loc.data as Float32Array;
  const u = new Int32Array(b);
  const v = new Int32Array(b);
  for (let i = 0; i < b; i++) {
    u[i] = positionOf(l[i], dOut);
    v[i] = positionOf(l[b + i], dIn);
  }
  return { u, v };
}

/** α·iDCT2(S) [out, in] in float64, S holding coefficient a_i at (u_i, v_i) (repeats add up). */
export function locaDelta(coef: HostTensor, loc: HostTensor, dOut: number, dIn: number, scale: number): Matrix {
  const { u, v } = positions(loc, dOut, dIn);
  const a = coef.data as Float32Array;
  const cOut = dctBasis(dOut);
  const cIn = dctBasis(dIn);
  const d = matrix(dOut, dIn);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === 0) continue;
    const ro = u[i] * dOut;
    const ri = v[i] * dIn;
    for (let o = 0; o < dOut; o++) {
      const w = scale * a[i] * cOut[ro + o];
      const at = o * dIn;
      for (let j = 0; j < dIn; j++) d.data[at + j] += w * cIn[ri + j];
    }
  }
  return d;
}
