/**
 * (IA)³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
 * In-Context Learning"): one learned vector per targeted linear layer rescales its activations.
 * Attention targets scale their output, y = (W·x + b) ⊙ l; feed-forward targets scale their
 * input, y = W·(x ⊙ l) + b. Vectors start at one, so training starts from the base model.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { matchesModules, selectTargets } from "../targets.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type Ia3Config, ia3ConfigJson, parseIa3Config } from "./config.js";

/** PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING, for the model types we load. */
export const IA3_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ["k_proj", "v_proj", "down_proj"],
  mistral: ["k_proj", "v_proj", "down_proj"],
  qwen2: ["q_proj", "v_proj", "down_proj"],
  gpt2: ["c_attn", "mlp.c_proj"],
  bert: ["key", "value", "output.dense"],
  roberta: ["key", "value", "output.dense"],
};

/** PEFT's TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING, for the model types we load. */
export const IA3_DEFAULT_FEEDFORWARD: Readonly<Record<string, readonly string[]>> = {
  llama: ["down_proj"],
  mistral: ["down_proj"],
  qwen2: ["down_proj"],
  gpt2: ["mlp.c_proj"],
  bert: ["output.dense"],
  roberta: ["output.dense"],
};

export interface Ia3Layer {
  /** Canonical path of the linear layer. */
  path: string;
  /** Adapter key of its vector. */
  key: string;
  feedforward: boolean;
  inFeatures: number;
  outFeatures: number;
  /** Shape PEFT stores: [out, 1] for output scaling, [1, in] for input scaling. */
  shape: number[];
}

/**
 * PEFT's _check_target_module_feedforward: a regex must match the whole name, a list entry is a
 * plain string suffix (no dot boundary, unlike target_modules).
 */
function isFeedforward(spec: string[] | string, name: string): boolean {
  if (typeof spec === "string") return matchesModules(spec, name, "IA3 config: feedforward_modules");
  return spec.some((s) => name.endsWith(s));
}

export function ia3Layers(info: ModelInfo, c: Ia3Config): Ia3Layer[] {
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const chosen = selectTargets({ ...c, layersToTransform: null, layersPattern: null }, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: IA3_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "IA3 config",
  });
  let ff = c.feedforwardModules;
  if (ff === null) {
    const d = IA3_DEFAULT_FEEDFORWARD[info.modelType];
    if (!d)
      throw new PeftConfigError(`IA3 config: feedforward_modules is required for model type "${info.modelType}" (no default is known)`);
    ff = [...d];
  }
  return chosen.map((name) => {
    const path = byPeft.get(name) as string;
    const [d0, d1] = info.weight(`${path}.weight`).shape;
    const inFeatures = info.fanInFanOut ? d0 : d1;
    const outFeatures = info.fanInFanOut ? d1 : d0;
    const feedforward = isFeedforward(ff, name);
    return { path, key: `${name}.ia3_l`, feedforward, inFeatures, outFeatures, shape: feedforward ? [1, inFeatures] : [outFeatures, 1] };
  });
}

function create(info: ModelInfo, c: Ia3Config, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of ia3Layers(info, c)) {
    const n = l.shape[0] * l.shape[1];
    // PEFT draws torch.randn and then, with init_ia3_weights, overwrites it with ones.
    const data = c.initIa3Weights ? new Float32Array(n).fill(1) : fillNormal(n, 1, rng);
    tensors.set(l.key, hostTensor("f32", l.shape, data));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: Ia3Config): Map<string, number[]> {
  return new Map(ia3Layers(info, c).map((l) => [l.key, l.shape]));
}

class Ia3Context extends DelegatingContext {
  private readonly layers: Map<string, Ia3Layer>;
  constructor(
    inner: ForwardContext,
    layers: Ia3Layer[],
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  /** x ⊙ l, or per row x ⊙ (1 + mask·(l − 1)) in mixed batches. */
  private scale(x: Tensor, l: Tensor): Tensor {
    if (!this.opts.rowMask) return x.mul(l);
    return x.add(maskRows(x.mul(l.sub(1)), this.opts.rowMask));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const l = this.layers.get(path);
    if (!l) return this.inner.linear(path, x, lin);
    const vec = this.opts.tensor(l.key).flatten();
    if (l.feedforward) return this.inner.linear(path, this.scale(x, vec), lin);
    return this.scale(this.inner.linear(path, x, lin), vec);
  }
}

/**
 * W ⊙ l with l along W's output axis (attention targets, bias scaled too) or input axis
 * (feed-forward targets, bias untouched), whichever way round the weight is stored.
 */
function merge(info: ModelInfo, c: Ia3Config, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of ia3Layers(info, c)) {
    const vec = tensors.get(l.key)?.data as Float32Array;
    const w = info.weight(`${l.path}.weight`);
    const data = Float32Array.from(w.data as Float32Array);
    for (let o = 0; o < l.outFeatures; o++) {
      for (let i = 0; i < l.inFeatures; i++) {
        const at = info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i;
        data[at] *= vec[l.feedforward ? i : o];
      }
    }
    out.set(`${l.path}.weight`, hostTensor("f32", w.shape, data));
    if (!l.feedforward && info.hasWeight(`${l.path}.bias`)) {
      const b = info.weight(`${l.path}.bias`);
      out.set(
        `${l.path}.bias`,
        hostTensor(
          "f32",
          b.shape,
          Float32Array.from(b.data as Float32Array, (v, o) => v * vec[o]),
        ),
      );
    }
  }
  return out;
}

export const IA3: Tuner<Ia3Config> = {
  peftType: "IA3",
  parseConfig: parseIa3Config,
  toJson: ia3ConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new Ia3Context(base, ia3Layers(info, c), opts),
  merge,
  supportsMixedBatch: true,
};
