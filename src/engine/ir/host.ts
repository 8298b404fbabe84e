import { DTypeError, ShapeError } from "../errors.js";
import { allocArray, bytesPerElement, type DType, dtypeOfArray, type TypedArray } from "./dtype.js";
import { numel, shapeStr } from "./shape.js";

/** A concrete tensor in JS memory: what goes into and comes out of a backend. Row-major. */
export interface HostTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TypedArray;
}

export function hostTensor(dtype: DType, shape: readonly number[], data?: TypedArray | ArrayLike<number>): HostTensor {
  const n = numel(shape);
  let arr: TypedArray;
  if (data === undefined) arr = allocArray(dtype, n);
  else if (ArrayBuffer.isView(data)) {
    arr = data as TypedArray;
    if (dtypeOfArray(arr) !== dtype && !(dtype === "bool" && arr instanceof Uint8Array)) {
      throw new DTypeError(`hostTensor: a ${arr.constructor.name} cannot hold dtype ${dtype}`);
    }
  } else {
    arr = allocArray(dtype, n);
    const src = data as ArrayLike<number>;
    if (arr instanceof BigInt64Array) for (let i = 0; i < src.length; i++) arr[i] = BigInt(src[i]);
    else for (let i = 0; i < src.length; i++) (arr as Float64Array)[i] = src[i];
    if (src.length !== n) throw new ShapeError(`hostTensor: ${src.length} values do not fill shape ${shapeStr(shape)}`);
  }
  if (arr.length !== n) throw new ShapeError(`hostTensor: ${arr.length} values do not fill shape ${shapeStr(shape)}`);
  return { dtype, shape: [...shape], data: arr };
}

export function scalarHost(dtype: DType, v: number): HostTensor {
  return hostTensor(dtype, [], [v]);
}

/** Reads element i as a JS number whatever the storage (f16 is decoded). */
export function readNumber(t: HostTensor, i: number): number {
  const d = t.data;
  if (d instanceof BigInt64Array) return Number(d[i]);
  if (t.dtype === "f16") return f16ToF32((d as Uint16Array)[i]);
  return (d as Float64Array)[i];
}

export function toFloat64Array(t: HostTensor): Float64Array {
  const out = new Float64Array(t.data.length);
  for (let i = 0; i < out.length; i++) out[i] = readNumber(t, i);
  return out;
}

export function hostBytes(t: HostTensor): number {
  return t.data.length * bytesPerElement(t.dtype);
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Round-to-nearest-even f32 → f16 bits. */
export function f32ToF16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  e = half >> 10;
  return sign | half;
}
