/**
 * Folding a LoRA adapter into the base weights (PEFT's get_delta_weight and the DoRA variants'
 * merge): W' = W + s·B·A; with DoRA, W' = W + (g·(W₀ + s·B·A) − W₀) with g = m / ‖W₀ + s·B·A‖ per
 * output feature, where W₀ is the weight before any merge and W the current one (they differ
 * when earlier adapters of a stack were merged). That is what the unmerged forward computes
 * (context.ts), so merging a stack leaves its outputs unchanged. Trained biases replace the base
 * biases.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { ModelInfo } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { addInto, biasTargets, logicalWeight, loraKeys, loraLayers, rowNorms, scaledDelta, storedWeight } from "./layers.js";

function need(tensors: ReadonlyMap<string, HostTensor>, key: string): HostTensor {
  const t = tensors.get(key);
  if (!t) throw new PeftConfigError(`LoRA merge: the adapter has no tensor "${key}"`);
  return t;
}

export function mergeLora(
  info: ModelInfo,
  c: LoraConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  unmerged: (name: string) => HostTensor = (name) => info.weight(name),
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const layers = loraLayers(info, c);
  for (const l of layers) {
    const k = loraKeys(l);
    const name = `${l.path}.weight`;
    const delta = scaledDelta(l, need(tensors, k.a), need(tensors, k.b));
    const w = logicalWeight(info, l);
    if (c.useDora) {
      // W += g·V − W₀ with V = W₀ + s·B·A, row by row.
      const w0 = logicalWeight(info, l, unmerged(name));
      const v = addInto(w0, delta);
      const m = need(tensors, k.m).data as Float32Array;
      const norms = rowNorms(v);
      for (let o = 0; o < v.rows; o++) {
        const g = m[o] / norms[o];
        for (let i = 0, at = o * v.cols; i < v.cols; i++, at++) w.data[at] += g * v.data[at] - w0.data[at];
      }
      out.set(name, storedWeight(info, l, w));
    } else out.set(name, storedWeight(info, l, addInto(w, delta)));
  }
  for (const t of biasTargets(info, c, layers)) out.set(t.name, need(tensors, t.key));
  return out;
}
