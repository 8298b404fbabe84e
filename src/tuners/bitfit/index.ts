/**
 * BitFit (Ben Zaken et al. 2021, "BitFit: Simple Parameter-efficient Fine-tuning for
 * Transformer-based Masked Language-models"): only bias terms are trained. The adapter holds
 * trainable copies of the chosen biases, so it starts as the base model and merges by copying.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import type { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { selectTargets } from "../targets.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskedBiasShift, type Tuner, type WrapOptions } from "../tuner.js";
import { type BitFitConfig, bitFitConfigJson, parseBitFitConfig } from "./config.js";

export interface BitFitTarget {
  /** Canonical name of the base bias ("model.layers.0.self_attn.q_proj.bias"). */
  bias: string;
  /** Canonical module path. */
  module: string;
  /** Adapter key: the module's PEFT name + ".bias". */
  key: string;
  /** Read through ForwardContext.linear (else through weight(), e.g. LayerNorm biases). */
  linear: boolean;
}

/**
 * Modules with a bias are the candidates; target_modules null (or "all-linear") picks the linear
 * layers among them, output heads excepted.
 */
export function bitFitTargets(info: ModelInfo, c: BitFitConfig): BitFitTarget[] {
  const byPeft = new Map<string, string>();
  for (const n of info.weightNames())
    if (n.endsWith(".bias")) byPeft.set(info.peftName(n.slice(0, -".bias".length)), n.slice(0, -".bias".length));
  if (byPeft.size === 0) throw new PeftConfigError(`BitFit config: this ${info.modelType} model has no bias terms to train`);
  const linear = new Set(info.linearLayers);
  const spec = c.targetModules === null ? { ...c, targetModules: "all-linear" } : c;
  const chosen = selectTargets(spec, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: null,
    where: "BitFit config",
  });
  return chosen.map((name) => {
    const module = byPeft.get(name) as string;
    return { bias: `${module}.bias`, module, key: `${name}.bias`, linear: linear.has(module) };
  });
}

/** Spread of the noise init_bitfit_weights: false adds to the copies. */
const RANDOM_STD = 0.02;

function create(info: ModelInfo, c: BitFitConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const t of bitFitTargets(info, c)) {
    const b = info.weight(t.bias);
    const data = Float32Array.from(b.data as Float32Array);
    if (!c.initBitfitWeights) for (let i = 0; i < data.length; i++) data[i] += RANDOM_STD * rng.normal();
    tensors.set(t.key, hostTensor("f32", b.shape, data));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: BitFitConfig): Map<string, number[]> {
  return new Map(bitFitTargets(info, c).map((t) => [t.key, [...info.weight(t.bias).shape]]));
}

/**
 * A [H] parameter that differs per row in a mixed batch: base + mask·(adapted − base), shaped
 * [B, 1, H] to broadcast over [B, T, H] activations (where our models apply biases and norms).
 * `base` may already be per row, from another adapter of the batch.
 */
export function rowsParameter(base: Tensor, adapted: Tensor, rowMask: Tensor, name: string): Tensor {
  if (adapted.rank !== 1)
    throw new PeftConfigError(`"${name}" is not a vector; adapters that replace it cannot be used in a mixed-adapter batch`);
  return base.add(rowMask.cast(base.dtype).unsqueeze(-1).unsqueeze(-1).mul(adapted.sub(base)));
}

class BitFitContext extends DelegatingContext {
  private readonly byBias: Map<string, BitFitTarget>;
  private readonly byModule: Map<string, BitFitTarget>;
  constructor(
    inner: ForwardContext,
    targets: BitFitTarget[],
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.byBias = new Map(targets.filter((t) => !t.linear).map((t) => [t.bias, t]));
    this.byModule = new Map(targets.filter((t) => t.linear).map((t) => [t.module, t]));
  }

  override weight(name: string): Tensor {
    const t = this.byBias.get(name);
    if (!t) return this.inner.weight(name);
    const adapted = this.opts.tensor(t.key);
    return this.opts.rowMask ? rowsParameter(this.inner.weight(name), adapted, this.opts.rowMask, name) : adapted;
  }

  /** The layer's own output with its bias swapped: y + (b' − b), so wrappers beneath still apply. */
  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lin);
    const t = this.byModule.get(path);
    if (!t) return y;
    const delta = this.opts.tensor(t.key).sub(this.inner.weight(t.bias));
    return y.add(maskedBiasShift(delta, this.opts.rowMask, y.rank));
  }
}

function merge(info: ModelInfo, c: BitFitConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const t of bitFitTargets(info, c)) {
    const b = tensors.get(t.key) as HostTensor;
    out.set(t.bias, hostTensor("f32", b.shape, Float32Array.from(b.data as Float32Array)));
  }
  return out;
}

export const BITFIT: Tuner<BitFitConfig> = {
  peftType: "BITFIT",
  parseConfig: parseBitFitConfig,
  toJson: bitFitConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new BitFitContext(base, bitFitTargets(info, c), opts),
  merge,
  supportsMixedBatch: true,
};
