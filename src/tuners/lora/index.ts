/**
 * LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen linear
 * layer W gains a trainable low-rank update, y = W·x + s·B·A·dropout(x), with s = α/r (or α/√r
 * for rsLoRA). A starts Kaiming-uniform and B at zero, so training starts from the base model.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { patternValue, selectTargets } from "../targets.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "./config.js";

export interface LoraLayer {
  /** Canonical path of the linear layer. */
  path: string;
  /** PEFT key prefix of its adapter tensors. */
  key: string;
  inFeatures: number;
  outFeatures: number;
  r: number;
  scaling: number;
}

/** The layers a config targets, with their per-layer rank and scaling. */
export function loraLayers(info: ModelInfo, c: LoraConfig): LoraLayer[] {
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const chosen = selectTargets(c, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: LORA_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "LoRA config",
  });
  return chosen.map((name) => {
    const path = byPeft.get(name) as string;
    const w = info.weight(`${path}.weight`);
    const [d0, d1] = w.shape;
    const fif = info.fanInFanOut;
    const r = patternValue(c.rankPattern, name, c.r);
    const alpha = patternValue(c.alphaPattern, name, c.loraAlpha);
    return {
      path,
      key: name,
      inFeatures: fif ? d0 : d1,
      outFeatures: fif ? d1 : d0,
      r,
      scaling: c.useRslora ? alpha / Math.sqrt(r) : alpha / r,
    };
  });
}

function create(info: ModelInfo, c: LoraConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of loraLayers(info, c)) {
    let a: Float32Array;
    let b: Float32Array;
    if (c.initLoraWeights === "gaussian") {
      a = fillNormal(l.r * l.inFeatures, 1 / l.r, rng);
      b = new Float32Array(l.outFeatures * l.r);
    } else {
      // Kaiming-uniform with a = √5, as nn.Linear and PEFT: bound 1/√fan_in.
      a = fillUniform(l.r * l.inFeatures, -1 / Math.sqrt(l.inFeatures), 1 / Math.sqrt(l.inFeatures), rng);
      b =
        c.initLoraWeights === false
          ? fillUniform(l.outFeatures * l.r, -1 / Math.sqrt(l.r), 1 / Math.sqrt(l.r), rng)
          : new Float32Array(l.outFeatures * l.r);
    }
    tensors.set(`${l.key}.lora_A.weight`, hostTensor("f32", [l.r, l.inFeatures], a));
    tensors.set(`${l.key}.lora_B.weight`, hostTensor("f32", [l.outFeatures, l.r], b));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: LoraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of loraLayers(info, c)) {
    out.set(`${l.key}.lora_A.weight`, [l.r, l.inFeatures]);
    out.set(`${l.key}.lora_B.weight`, [l.outFeatures, l.r]);
  }
  return out;
}

class LoraContext extends DelegatingContext {
  private readonly layers: Map<string, LoraLayer>;
  constructor(
    inner: ForwardContext,
    layers: LoraLayer[],
    private readonly c: LoraConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lin);
    const l = this.layers.get(path);
    if (!l) return y;
    const a = this.opts.tensor(`${l.key}.lora_A.weight`);
    const b = this.opts.tensor(`${l.key}.lora_B.weight`);
    const xin = this.opts.training && this.c.loraDropout > 0 && this.opts.seed ? F.dropout(x, this.c.loraDropout, this.opts.seed) : x;
    const delta = xin.matmul(a.transpose()).matmul(b.transpose()).mul(l.scaling);
    return y.add(maskRows(delta, this.opts.rowMask));
  }
}

function merge(info: ModelInfo, c: LoraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of loraLayers(info, c)) {
    const a = tensors.get(`${l.key}.lora_A.weight`)?.data as Float32Array;
    const b = tensors.get(`${l.key}.lora_B.weight`)?.data as Float32Array;
    const w = info.weight(`${l.path}.weight`);
    const data = Float32Array.from(w.data as Float32Array);
    for (let o = 0; o < l.outFeatures; o++) {
      for (let i = 0; i < l.inFeatures; i++) {
        let s = 0;
        for (let k = 0; k < l.r; k++) s += b[o * l.r + k] * a[k * l.inFeatures + i];
        const at = info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i;
        data[at] += l.scaling * s;
      }
    }
    out.set(`${l.path}.weight`, hostTensor("f32", w.shape, data));
  }
  return out;
}

export const LORA: Tuner<LoraConfig> = {
  peftType: "LORA",
  parseConfig: parseLoraConfig,
  toJson: loraConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new LoraContext(base, loraLayers(info, c), c, opts),
  merge,
  supportsMixedBatch: true,
};
