/**
 * LoKr (LyCORIS: Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS
 * Fine-Tuning to Model Evaluation"): a frozen linear layer W [out, in] gains
 * ΔW = (w1 ⊗ w2)·α/r, a Kronecker product with w1 [a, c], w2 [b, d], out = a·b and in = c·d from
 * PEFT's factorization(). Either factor may itself be a rank-r product (w1_a·w1_b, w2_a·w2_b)
 * when r is small against its sides. PEFT 0.20.0's format and math (tuners/lokr/{config,layer,
 * model}.py, tuners/lycoris_utils.py); the scale is α/r whether the factors are full or not.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import type { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { lycorisDropout } from "../lycoris/dropout.js";
import { addDelta, hostMatmul, kaimingUniform, type LycorisLayer, lycorisLayers, need, zerosTensor } from "../lycoris/layers.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type LokrConfig, lokrConfigJson, parseLokrConfig } from "./config.js";
import { factorization } from "./factorization.js";

export { factorization } from "./factorization.js";

export interface LokrLayer extends LycorisLayer {
  /** out = outL·outK (rows of w1 and w2), in = inM·inN (columns of w1 and w2). */
  outL: number;
  outK: number;
  inM: number;
  inN: number;
  /** w1 is one full [outL, inM] matrix (else lokr_w1_a·lokr_w1_b). */
  fullW1: boolean;
  /** w2 is one full [outK, inN] matrix (else lokr_w2_a·lokr_w2_b). */
  fullW2: boolean;
}

/**
 * LoKrLayer.update_layer for nn.Linear: factor both sides, then w1 is decomposed only with
 * decompose_both and r < max(outL, inM)/2, w2 whenever r < max(outK, inN)/2.
 */
export function lokrLayers(info: ModelInfo, c: LokrConfig): LokrLayer[] {
  return lycorisLayers(info, c, "LoKr").map((l) => {
    const [inM, inN] = factorization(l.inFeatures, c.decomposeFactor);
    const [outL, outK] = factorization(l.outFeatures, c.decomposeFactor);
    return {
      ...l,
      outL,
      outK,
      inM,
      inN,
      fullW1: !(c.decomposeBoth && l.r < Math.max(outL, inM) / 2),
      fullW2: !(l.r < Math.max(outK, inN) / 2),
    };
  });
}

/** PEFT's state-dict keys and shapes for a layer (ParameterDict entries: no ".weight"). */
export function lokrTensorShapes(l: LokrLayer): Map<string, number[]> {
  const m = new Map<string, number[]>();
  if (l.fullW1) m.set(`${l.key}.lokr_w1`, [l.outL, l.inM]);
  else {
    m.set(`${l.key}.lokr_w1_a`, [l.outL, l.r]);
    m.set(`${l.key}.lokr_w1_b`, [l.r, l.inM]);
  }
  if (l.fullW2) m.set(`${l.key}.lokr_w2`, [l.outK, l.inN]);
  else {
    m.set(`${l.key}.lokr_w2_a`, [l.outK, l.r]);
    m.set(`${l.key}.lokr_w2_b`, [l.r, l.inN]);
  }
  return m;
}

function expectedTensors(info: ModelInfo, c: LokrConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of lokrLayers(info, c)) for (const [k, s] of lokrTensorShapes(l)) out.set(k, s);
  return out;
}

/**
 * reset_adapter_parameters / _lycoris_way / _random: Kaiming-uniform(a=√5) everywhere except the
 * zero factor that makes the adapter a no-op: w1 (or w1_a) by default, w2 (or w2_b) with
 * "lycoris", none with false.
 */
function create(info: ModelInfo, c: LokrConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of lokrLayers(info, c)) {
    for (const [key, [rows, cols]] of lokrTensorShapes(l)) {
      const suffix = key.slice(l.key.length + 1);
      const zero =
        (c.initWeights === true && (suffix === "lokr_w1" || suffix === "lokr_w1_a")) ||
        (c.initWeights === "lycoris" && (suffix === "lokr_w2" || suffix === "lokr_w2_b"));
      tensors.set(key, zero ? zerosTensor(rows, cols) : kaimingUniform(rows, cols, rng));
    }
  }
  return { tensors };
}

/**
 * x·ΔWᵀ for ΔW = (w1 ⊗ w2)·s without forming ΔW: with x viewed as X [.., c, d] (input feature
 * k·d + l at [k, l]), (w1 ⊗ w2)·vec(X) is w1·X·w2ᵀ viewed as [.., a·b]. Per token that is
 * in·b + c·b·a multiplications instead of in·out.
 */
export function lokrUpdate(x: Tensor, w1: Tensor, w2: Tensor, scale: number): Tensor {
  const [a, c] = [w1.dim(0), w1.dim(1)];
  const [b, d] = [w2.dim(0), w2.dim(1)];
  const lead = x.shape.slice(0, -1);
  const xs = x.reshape([...lead, c, d]);
  // [.., c, d]·w2ᵀ → [.., c, b]; transposed [.., b, c]·w1ᵀ → [.., b, a]; transposed [.., a, b].
  const z = xs.matmul(w2.transpose()).mul(scale).transpose().matmul(w1.transpose()).transpose();
  return z.reshape([...lead, a * b]);
}

class LokrContext extends DelegatingContext {
  private readonly layers: Map<string, LokrLayer>;
  constructor(
    inner: ForwardContext,
    layers: LokrLayer[],
    private readonly c: LokrConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  private factor(l: LokrLayer, n: 1 | 2): Tensor {
    const full = n === 1 ? l.fullW1 : l.fullW2;
    const t = (s: string) => this.opts.tensor(`${l.key}.lokr_w${n}${s}`);
    return full ? t("") : t("_a").matmul(t("_b"));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lin);
    const l = this.layers.get(path);
    if (!l) return y;
    let d = lokrUpdate(x, this.factor(l, 1), this.factor(l, 2), l.scaling);
    const spec = { rankDropout: this.c.rankDropout, moduleDropout: this.c.moduleDropout, rescale: this.c.rankDropoutScale };
    d = lycorisDropout(d, l.key, spec, this.opts.training ? this.opts.seed : null);
    return y.add(maskRows(d, this.opts.rowMask));
  }
}

/** A full factor, or the product of its halves, as float64 [rows, cols]. */
function hostFactor(l: LokrLayer, tensors: ReadonlyMap<string, HostTensor>, n: 1 | 2): Float64Array {
  const what = `LoKr "${l.key}"`;
  const key = `${l.key}.lokr_w${n}`;
  if (n === 1 ? l.fullW1 : l.fullW2) return Float64Array.from(need(tensors, key, what).data as Float32Array);
  return hostMatmul(need(tensors, `${key}_a`, what), need(tensors, `${key}_b`, what), what);
}

/** ΔW = (w1 ⊗ w2)·s as a float64 [out, in] matrix: ΔW[i·b + j, k·d + l] = s·w1[i, k]·w2[j, l]. */
export function lokrDelta(l: LokrLayer, tensors: ReadonlyMap<string, HostTensor>): Float64Array {
  const w1 = hostFactor(l, tensors, 1);
  const w2 = hostFactor(l, tensors, 2);
  const [a, c, b, d] = [l.outL, l.inM, l.outK, l.inN];
  if (w1.length !== a * c || w2.length !== b * d)
    throw new PeftConfigError(`LoKr "${l.key}": factors of ${w1.length} and ${w2.length} values, expected [${a}, ${c}] and [${b}, ${d}]`);
  const inF = c * d;
  const out = new Float64Array(a * b * inF);
  for (let i = 0; i < a; i++)
    for (let k = 0; k < c; k++) {
      const v = w1[i * c + k] * l.scaling;
      if (v === 0) continue;
      for (let j = 0; j < b; j++) for (let m = 0; m < d; m++) out[(i * b + j) * inF + k * d + m] = v * w2[j * d + m];
    }
  return out;
}

function merge(info: ModelInfo, c: LokrConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of lokrLayers(info, c)) out.set(`${l.path}.weight`, addDelta(info, l, lokrDelta(l, tensors)));
  return out;
}

export const LOKR: Tuner<LokrConfig> = {
  peftType: "LOKR",
  parseConfig: parseLokrConfig,
  toJson: lokrConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new LokrContext(base, lokrLayers(info, c), c, opts),
  merge,
  supportsMixedBatch: true,
};
