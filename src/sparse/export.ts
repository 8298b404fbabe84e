/**
 * A sparse adapter (peft_type "SFT": SpIEL, LT-SFT) as a peftkit sparse-delta set
 * (docs/formats/sparse-delta.md): per targeted layer, its index set and values under the base
 * weight's canonical name, with the base model's fingerprint.
 */
import type { HostTensor } from "../engine/ir/host.js";
import type { ModelInfo } from "../tuners/tuner.js";
import { weightsFingerprint } from "../util/fingerprint.js";
import { checkDelta, type SparseDelta, SparseDeltaError } from "./delta.js";
import type { SparseDeltaSet } from "./format.js";

const INDICES = ".sft_delta.indices";
const VALUES = ".sft_delta.values";

/**
 * The delta set of an SFT adapter's tensors (keyed "<module>.sft_delta.indices"/".values").
 * `where` names the adapter in errors. The fingerprint is of the model's current weights, so
 * call this on the unmerged base.
 */
export function sftDeltaSet(info: ModelInfo, tensors: ReadonlyMap<string, HostTensor>, where: string): SparseDeltaSet {
  const deltas = new Map<string, SparseDelta>();
  for (const [key, idx] of [...tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!key.endsWith(INDICES)) continue;
    const module = key.slice(0, -INDICES.length);
    const val = tensors.get(module + VALUES);
    if (!val) throw new SparseDeltaError(`${where}: "${key}" has no "${module}${VALUES}"`);
    const weight = `${info.canonicalName(module)}.weight`;
    if (!info.hasWeight(weight)) throw new SparseDeltaError(`${where}: the model has no weight "${weight}" for "${key}"`);
    // The adapter's index sets need not be sorted (SpIEL regrows in place); the format's are.
    const order = Array.from(idx.data as Int32Array, (p, i) => [p, i] as const).sort((a, b) => a[0] - b[0]);
    const d: SparseDelta = {
      shape: [...info.weight(weight).shape],
      indices: Int32Array.from(order, ([p]) => p),
      values: Float32Array.from(order, ([, i]) => Number(val.data[i])),
    };
    checkDelta(d, `${where}: "${key}"`);
    deltas.set(weight, d);
  }
  if (deltas.size === 0) throw new SparseDeltaError(`${where}: the adapter has no sparse deltas ("<module>${INDICES}" tensors)`);
  const base = new Map(info.weightNames().map((n) => [n, info.weight(n)]));
  return { deltas, baseModel: weightsFingerprint(base) };
}
