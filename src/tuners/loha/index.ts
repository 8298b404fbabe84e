/**
 * LoHa (Hyeon-Woo et al. 2022, FedPara, "Low-rank Hadamard product"; LyCORIS, Yeh et al. 2024):
 * a frozen linear layer W gains ΔW = ((w1a·w1b) ⊙ (w2a·w2b))·α/r, the Hadamard product of two
 * rank-r products, so ΔW can reach rank r² with 2r(in + out) parameters. PEFT 0.20.0's format
 * and math (tuners/loha/{config,layer,model}.py, tuners/lycoris_utils.py): keys
 * `<module>.hada_w1_a` [out, r], `hada_w1_b` [r, in], `hada_w2_a` [out, r], `hada_w2_b` [r, in];
 * with init_weights, w2_b starts at zero so training starts from the base model.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import type { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { lycorisDropout } from "../lycoris/dropout.js";
import { addDelta, hostMatmul, kaimingUniform, type LycorisLayer, lycorisLayers, need, zerosTensor } from "../lycoris/layers.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type LohaConfig, lohaConfigJson, parseLohaConfig } from "./config.js";

export interface LohaKeys {
  w1a: string;
  w1b: string;
  w2a: string;
  w2b: string;
}

/** PEFT's state-dict keys (ParameterDict entries: no ".weight"). */
export function lohaKeys(l: LycorisLayer): LohaKeys {
  return { w1a: `${l.key}.hada_w1_a`, w1b: `${l.key}.hada_w1_b`, w2a: `${l.key}.hada_w2_a`, w2b: `${l.key}.hada_w2_b` };
}

export const lohaLayers = (info: ModelInfo, c: LohaConfig): LycorisLayer[] => lycorisLayers(info, c, "LoHa");

function shapes(l: LycorisLayer): Record<keyof LohaKeys, number[]> {
  return { w1a: [l.outFeatures, l.r], w1b: [l.r, l.inFeatures], w2a: [l.outFeatures, l.r], w2b: [l.r, l.inFeatures] };
}

function expectedTensors(info: ModelInfo, c: LohaConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of lohaLayers(info, c)) {
    const k = lohaKeys(l);
    const s = shapes(l);
    for (const f of ["w1a", "w1b", "w2a", "w2b"] as const) out.set(k[f], s[f]);
  }
  return out;
}

/** reset_adapter_parameters(_random): Kaiming-uniform(a=√5) everywhere, w2_b zero unless init_weights is false. */
function create(info: ModelInfo, c: LohaConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of lohaLayers(info, c)) {
    const k = lohaKeys(l);
    tensors.set(k.w1a, kaimingUniform(l.outFeatures, l.r, rng));
    tensors.set(k.w1b, kaimingUniform(l.r, l.inFeatures, rng));
    tensors.set(k.w2a, kaimingUniform(l.outFeatures, l.r, rng));
    tensors.set(k.w2b, c.initWeights ? zerosTensor(l.r, l.inFeatures) : kaimingUniform(l.r, l.inFeatures, rng));
  }
  return { tensors };
}

/**
 * x·ΔWᵀ for ΔW = ((w1a·w1b) ⊙ (w2a·w2b))·s. The Hadamard product of two rank-r products is a
 * rank-r² product: ΔW = P·Q with P[o, (j,k)] = w1a[o,j]·w2a[o,k] and Q[(j,k), i] = w1b[j,i]·w2b[k,i]
 * (the face-splitting identity). Per token that costs r²·(in + out) instead of in·out, so the
 * factored form is used when it is cheaper, and ΔW is materialised (as PEFT does) otherwise.
 */
export function lohaUpdate(
  x: Tensor,
  w1a: Tensor,
  w1b: Tensor,
  w2a: Tensor,
  w2b: Tensor,
  scale: number,
  mode?: "factored" | "dense",
): Tensor {
  const out = w1a.dim(0);
  const r = w1a.dim(1);
  const inF = w1b.dim(1);
  const factored = mode ? mode === "factored" : r * r * (inF + out) < inF * out;
  if (factored) {
    const p = w1a
      .unsqueeze(2)
      .mul(w2a.unsqueeze(1))
      .reshape([out, r * r]);
    const q = w1b
      .unsqueeze(1)
      .mul(w2b.unsqueeze(0))
      .reshape([r * r, inF]);
    return x.matmul(q.transpose()).mul(scale).matmul(p.transpose());
  }
  const dw = w1a.matmul(w1b).mul(w2a.matmul(w2b)).mul(scale);
  return x.matmul(dw.transpose());
}

class LohaContext extends DelegatingContext {
  private readonly layers: Map<string, LycorisLayer>;
  constructor(
    inner: ForwardContext,
    layers: LycorisLayer[],
    private readonly c: LohaConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lin);
    const l = this.layers.get(path);
    if (!l) return y;
    const k = lohaKeys(l);
    const t = (key: string) => this.opts.tensor(key);
    let d = lohaUpdate(x, t(k.w1a), t(k.w1b), t(k.w2a), t(k.w2b), l.scaling);
    // LoHa's rank dropout always rescales by the kept fraction (LoHaLayer.get_delta_weight).
    const spec = { rankDropout: this.c.rankDropout, moduleDropout: this.c.moduleDropout, rescale: true };
    d = lycorisDropout(d, l.key, spec, this.opts.training ? this.opts.seed : null);
    return y.add(maskRows(d, this.opts.rowMask));
  }
}

/** ΔW = ((w1a·w1b) ⊙ (w2a·w2b))·s as a float64 [out, in] matrix (PEFT's get_delta_weight in eval mode). */
export function lohaDelta(l: LycorisLayer, tensors: ReadonlyMap<string, HostTensor>): Float64Array {
  const k = lohaKeys(l);
  const what = `LoHa "${l.key}"`;
  const a = hostMatmul(need(tensors, k.w1a, what), need(tensors, k.w1b, what), what);
  const b = hostMatmul(need(tensors, k.w2a, what), need(tensors, k.w2b, what), what);
  if (a.length !== l.outFeatures * l.inFeatures || b.length !== a.length)
    throw new PeftConfigError(`${what}: the factors do not make a [${l.outFeatures}, ${l.inFeatures}] update`);
  return Float64Array.from(a, (v, i) => v * b[i] * l.scaling);
}

function merge(info: ModelInfo, c: LohaConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of lohaLayers(info, c)) out.set(`${l.path}.weight`, addDelta(info, l, lohaDelta(l, tensors)));
  return out;
}

export const LOHA: Tuner<LohaConfig> = {
  peftType: "LOHA",
  parseConfig: parseLohaConfig,
  toJson: lohaConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new LohaContext(base, lohaLayers(info, c), c, opts),
  merge,
  supportsMixedBatch: true,
};
