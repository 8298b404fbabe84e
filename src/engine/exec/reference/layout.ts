/** Index arithmetic for row-major tensors held in Float64Arrays. */

export function size(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Splits a shape around one axis into (outer, axis size, inner) element counts. */
export function around(shape: readonly number[], axis: number): [number, number, number] {
  return [size(shape.slice(0, axis)), shape[axis], size(shape.slice(axis + 1))];
}

/**
 * Reads a strided view into a new contiguous array: out[idx] = data[base + Σ idx_d · strides_d].
 * Transpose, broadcast (stride 0) and slicing are all this one loop.
 */
export function strided(data: Float64Array, base: number, outShape: readonly number[], strides: readonly number[]): Float64Array {
  const n = size(outShape);
  const out = new Float64Array(n);
  if (n === 0) return out;
  const r = outShape.length;
  if (r === 0) {
    out[0] = data[base];
    return out;
  }
  const last = outShape[r - 1];
  const ls = strides[r - 1];
  const idx = new Int32Array(r);
  let off = base;
  for (let o = 0; o < n; o += last) {
    if (ls === 1) {
      for (let j = 0; j < last; j++) out[o + j] = data[off + j];
    } else if (ls === 0) {
      out.fill(data[off], o, o + last);
    } else {
      for (let j = 0, p = off; j < last; j++, p += ls) out[o + j] = data[p];
    }
    for (let d = r - 2; d >= 0; d--) {
      idx[d]++;
      off += strides[d];
      if (idx[d] < outShape[d]) break;
      off -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * NumPy-broadcasts `data` (shape `from`) to shape `to`. Returns `data` itself when nothing
 * changes, so callers must treat the result as read-only.
 */
export function broadcastTo(data: Float64Array, from: readonly number[], to: readonly number[]): Float64Array {
  if (from.length === to.length && from.every((d, i) => d === to[i])) return data;
  const n = size(to);
  if (data.length === 1) return new Float64Array(n).fill(data[0]);
  const off = to.length - from.length;
  const st = new Array<number>(to.length).fill(0);
  let acc = 1;
  for (let i = from.length - 1; i >= 0; i--) {
    st[i + off] = from[i] === 1 ? 0 : acc;
    acc *= from[i];
  }
  return strided(data, 0, to, st);
}

/** 0, 1, ..., n-1. */
export function range(n: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

export function transposeData(data: Float64Array, shape: readonly number[], perm: readonly number[]): Float64Array {
  if (perm.every((p, i) => p === i)) return data;
  const st = stridesOf(shape);
  return strided(
    data,
    0,
    perm.map((p) => shape[p]),
    perm.map((p) => st[p]),
  );
}
