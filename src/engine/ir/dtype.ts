import { DTypeError } from "../errors.js";

/** f16 exists for storage only: cast it to f32 before computing. */
export type DType = "f32" | "f64" | "f16" | "i64" | "i32" | "bool";

export const DTYPES: readonly DType[] = ["f32", "f64", "f16", "i64", "i32", "bool"];

export type TypedArray = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

export function isFloat(d: DType): boolean {
  return d === "f32" || d === "f64" || d === "f16";
}

export function isInt(d: DType): boolean {
  return d === "i64" || d === "i32";
}

export function bytesPerElement(d: DType): number {
  switch (d) {
    case "f64":
    case "i64":
      return 8;
    case "f32":
    case "i32":
      return 4;
    case "f16":
      return 2;
    case "bool":
      return 1;
  }
}

export function checkDType(d: unknown, where: string): DType {
  if (typeof d === "string" && (DTYPES as readonly string[]).includes(d)) return d as DType;
  throw new DTypeError(`${where}: unsupported dtype ${JSON.stringify(d)}; supported dtypes are ${DTYPES.join(", ")}`);
}

/** Allocates a zeroed array of the storage type used for a dtype (f16 is raw bits in a Uint16Array). */
export function allocArray(d: DType, n: number): TypedArray {
  switch (d) {
    case "f32":
      return new Float32Array(n);
    case "f64":
      return new Float64Array(n);
    case "f16":
      return new Uint16Array(n);
    case "i64":
      return new BigInt64Array(n);
    case "i32":
      return new Int32Array(n);
    case "bool":
      return new Uint8Array(n);
  }
}

export function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return "f32";
  if (a instanceof Float64Array) return "f64";
  if (a instanceof Uint16Array) return "f16";
  if (a instanceof BigInt64Array) return "i64";
  if (a instanceof Int32Array) return "i32";
  return "bool";
}
