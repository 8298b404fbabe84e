/**
 * Folding a LoRA adapter into the base weights (PEFT's get_delta_weight and the DoRA variants'
 * merge): W' = W + s·B·A, or with DoRA W' = (m / ‖W + s·B·A‖)·(W + s·B·A) per output feature;
 * trained biases replace the base biases.
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

export function mergeLora(info: ModelInfo, c: LoraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const layers = loraLayers(info, c);
  for (const l of layers) {
    const k = loraKeys(l);
    const v = addInto(logicalWeight(info, l), scaledDelta(l, need(tensors, k.a), need(tensors, k.b)));
    if (c.useDora) {
      const m = need(tensors, k.m).data as Float32Array;
      const norms = rowNorms(v);
      for (let o = 0; o < v.rows; o++) {
        const g = m[o] / norms[o];
        for (let i = 0; i < v.cols; i++) v.data[o * v.cols + i] *= g;
      }
    }
    out.set(`${l.path}.weight`, storedWeight(info, l, v));
  }
  for (const t of biasTargets(info, c, layers)) out.set(t.name, need(tensors, t.key));
  return out;
}
