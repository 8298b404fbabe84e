/** Converting what users pass (nested arrays, typed arrays, HostTensors) into engine tensors. */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { ModelError } from "../nn/context.js";

export type IdsLike = HostTensor | readonly (readonly number[])[] | { shape: readonly number[]; data: ArrayLike<number> | BigInt64Array };

/** A rectangular [B, T] i64 tensor from nested arrays or a tensor-like object. */
export function toIdTensor(x: IdsLike, what: string): HostTensor {
  if (Array.isArray(x)) {
    const rows = x as readonly (readonly number[])[];
    const t = rows[0]?.length ?? 0;
    if (rows.length === 0 || t === 0) throw new ModelError(`${what}: needs at least one row with at least one token`);
    const data = new BigInt64Array(rows.length * t);
    rows.forEach((r, i) => {
      if (!Array.isArray(r) || r.length !== t)
        throw new ModelError(
          `${what}: row ${i} has ${Array.isArray(r) ? r.length : "no"} entries, row 0 has ${t} (rows must be equal length; pad them)`,
        );
      r.forEach((v, j) => {
        if (!Number.isInteger(v)) throw new ModelError(`${what}: entry [${i}][${j}] is ${v}, not an integer`);
        data[i * t + j] = BigInt(v);
      });
    });
    return hostTensor("i64", [rows.length, t], data);
  }
  const obj = x as { dtype?: string; shape: readonly number[]; data: ArrayLike<number> | BigInt64Array };
  if (!obj || !Array.isArray(obj.shape) || obj.shape.length !== 2) throw new ModelError(`${what}: expected a [batch, seq] array or tensor`);
  if (obj.data instanceof BigInt64Array) return hostTensor("i64", obj.shape, obj.data);
  const src = obj.data as ArrayLike<number>;
  const data = new BigInt64Array(src.length);
  for (let i = 0; i < src.length; i++) data[i] = BigInt(src[i]);
  return hostTensor("i64", obj.shape, data);
}

export function toFloatTensor(x: HostTensor | { shape: readonly number[]; data: ArrayLike<number> }, what: string): HostTensor {
  if (!x || !Array.isArray(x.shape)) throw new ModelError(`${what}: expected a tensor with shape and data`);
  if (x.data instanceof Float32Array) return hostTensor("f32", x.shape, x.data);
  return hostTensor("f32", x.shape, Float32Array.from(x.data as ArrayLike<number>));
}

export function onesLike(ids: HostTensor): HostTensor {
  return hostTensor("i64", ids.shape, new BigInt64Array(ids.data.length).fill(1n));
}

/** Positions that skip left padding, as transformers' generate(): cumsum(mask) − 1, and 1 on padding. */
export function positionsFromMask(mask: HostTensor, offset: number[] | null = null): HostTensor {
  const [b, t] = mask.shape;
  const m = mask.data as BigInt64Array;
  const out = new BigInt64Array(b * t);
  for (let i = 0; i < b; i++) {
    let c = offset ? offset[i] : 0;
    for (let j = 0; j < t; j++) {
      if (m[i * t + j] !== 0n) {
        out[i * t + j] = BigInt(c);
        c++;
      } else out[i * t + j] = 1n;
    }
  }
  return hostTensor("i64", [b, t], out);
}
