/** Builds the ModelInfo tuners see from a loaded model. */
import type { HostTensor } from "../engine/ir/host.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { ModelError } from "../nn/context.js";
import type { ModelInfo } from "./tuner.js";

/** Output heads: never "all-linear" targets (PEFT excludes the output embedding and classifier). */
const HEAD_PREFIXES = ["lm_head", "score", "classifier"];

function cfgInt(c: Record<string, unknown>, ...names: string[]): number {
  for (const n of names) if (typeof c[n] === "number") return c[n] as number;
  return 0;
}

export function modelInfo(model: PreTrainedModel): ModelInfo {
  const arch = model.arch;
  const cfg = model.archConfig;
  const prefix = arch.basePrefix(cfg);
  const bare = model.head === "base";
  const linearLayers = arch.linearLayers(cfg, model.head);
  const heads = cfgInt(model.config, "num_attention_heads", "n_head");
  const hidden = cfgInt(model.config, "hidden_size", "n_embd");
  const decoder = arch.decoderShape?.(cfg);
  return {
    model,
    modelType: model.modelType,
    linearLayers,
    allLinear: linearLayers.filter((p) => !HEAD_PREFIXES.some((h) => p === h || p.startsWith(`${h}.`))),
    fanInFanOut: arch.fanInFanOut,
    peftName: (c) => (bare && c.startsWith(prefix) ? c.slice(prefix.length) : c),
    canonicalName: (p) => (bare ? prefix + p : p),
    weight: (name) => {
      const w = model.weights.get(name);
      if (!w) throw new ModelError(`the model has no weight "${name}"`);
      return w as HostTensor;
    },
    hasWeight: (name) => model.weights.has(name),
    weightNames: () => [...model.weights.keys()],
    numLayers: cfgInt(model.config, "num_hidden_layers", "n_layer"),
    hidden,
    heads,
    kvHeads: decoder?.kvHeads ?? heads,
    headDim: decoder?.headDim ?? (heads ? hidden / heads : 0),
  };
}
