/**
 * The peftkit sparse-delta format (docs/formats/sparse-delta.md): one safetensors file holding, for
 * each base weight `NAME` it changes,
 *   NAME.sparse_indices  I32 [k]  flat row-major positions in the weight's stored layout, increasing
 *   NAME.sparse_values   F32 [k]  what is added at those positions
 * and the metadata
 *   format          "peftkit.sparse_delta"
 *   format_version  "1"
 *   shapes          JSON {NAME: [rows, cols]}: each weight's full shape
 *   base_model      the base weights' fingerprint (util/fingerprint.ts), when known
 * This file only converts; reading and writing files is in file.ts (Node).
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { checkDelta, type SparseDelta, SparseDeltaError } from "./delta.js";

export const SPARSE_DELTA_FORMAT = "peftkit.sparse_delta";
export const SPARSE_DELTA_VERSION = "1";
const INDICES = ".sparse_indices";
const VALUES = ".sparse_values";

export interface SparseDeltaSet {
  /** By base weight name ("model.layers.0.self_attn.q_proj.weight"). */
  readonly deltas: ReadonlyMap<string, SparseDelta>;
  /** The base model's fingerprint, or null when the writer did not know it. */
  readonly baseModel: string | null;
}

/** The tensors and metadata of a delta set. */
export function sparseDeltaTensors(set: SparseDeltaSet): { tensors: Record<string, HostTensor>; metadata: Record<string, string> } {
  const tensors: Record<string, HostTensor> = {};
  const shapes: Record<string, number[]> = {};
  for (const [name, d] of set.deltas) {
    checkDelta(d, name);
    tensors[name + INDICES] = hostTensor("i32", [d.indices.length], d.indices);
    tensors[name + VALUES] = hostTensor("f32", [d.values.length], d.values);
    shapes[name] = [...d.shape];
  }
  const metadata: Record<string, string> = {
    format: SPARSE_DELTA_FORMAT,
    format_version: SPARSE_DELTA_VERSION,
    shapes: JSON.stringify(shapes),
  };
  if (set.baseModel) metadata.base_model = set.baseModel;
  return { tensors, metadata };
}

function toInt32(t: HostTensor, where: string): Int32Array {
  if (t.dtype === "i32") return t.data as Int32Array;
  if (t.dtype === "i64") {
    const out = new Int32Array(t.data.length);
    for (let i = 0; i < out.length; i++) {
      const v = (t.data as BigInt64Array)[i];
      if (v < -(2n ** 31n) || v >= 2n ** 31n) throw new SparseDeltaError(`${where}: index ${v} is out of range`);
      out[i] = Number(v);
    }
    return out;
  }
  throw new SparseDeltaError(`${where}: indices must be I32 or I64, got ${t.dtype}`);
}

/** Reads a delta set back, checking every tensor; `file` names the source in errors. */
export function sparseDeltaSet(
  tensors: Readonly<Record<string, HostTensor>>,
  metadata: Readonly<Record<string, string>>,
  file: string,
): SparseDeltaSet {
  if (metadata.format !== SPARSE_DELTA_FORMAT)
    throw new SparseDeltaError(`${file}: not a peftkit sparse delta (metadata "format" is ${JSON.stringify(metadata.format ?? null)})`);
  if (metadata.format_version !== SPARSE_DELTA_VERSION)
    throw new SparseDeltaError(
      `${file}: sparse delta format_version ${JSON.stringify(metadata.format_version ?? null)} is not supported (this peftkit reads "${SPARSE_DELTA_VERSION}")`,
    );
  let shapes: Record<string, unknown>;
  try {
    shapes = JSON.parse(metadata.shapes ?? "") as Record<string, unknown>;
    if (typeof shapes !== "object" || shapes === null || Array.isArray(shapes)) throw new Error("not an object");
  } catch {
    throw new SparseDeltaError(`${file}: metadata "shapes" must be a JSON object of weight shapes`);
  }
  const deltas = new Map<string, SparseDelta>();
  for (const key of Object.keys(tensors).sort()) {
    const name = key.endsWith(INDICES) ? key.slice(0, -INDICES.length) : key.endsWith(VALUES) ? key.slice(0, -VALUES.length) : null;
    if (name === null) throw new SparseDeltaError(`${file}: unexpected tensor "${key}" (expected NAME${INDICES} and NAME${VALUES})`);
    if (deltas.has(name)) continue;
    const idx = tensors[name + INDICES];
    const val = tensors[name + VALUES];
    if (!idx || !val) throw new SparseDeltaError(`${file}: "${name}" has ${idx ? "indices but no values" : "values but no indices"}`);
    const shape = shapes[name];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d > 0))
      throw new SparseDeltaError(`${file}: metadata "shapes" has no valid shape for "${name}"`);
    if (val.dtype !== "f32") throw new SparseDeltaError(`${file}: "${name}${VALUES}" must be F32, got ${val.dtype}`);
    if (idx.shape.length !== 1 || val.shape.length !== 1)
      throw new SparseDeltaError(`${file}: "${name}" indices and values must be vectors`);
    const d: SparseDelta = {
      shape: shape as number[],
      indices: toInt32(idx, `${file}: "${name}${INDICES}"`),
      values: val.data as Float32Array,
    };
    checkDelta(d, `${file}: "${name}${INDICES}"`);
    deltas.set(name, d);
  }
  return { deltas, baseModel: metadata.base_model ?? null };
}
