/**
 * HRA (Yuan et al. 2024, "Bridging the Gap between Low-rank and Orthogonal Adaptation via
 * Householder Reflection Adaptation"), in HF PEFT 0.20's format (peft_type "HRA"): a linear
 * layer's weight is multiplied on the right by a chain of r Householder reflections,
 * W' = W·H₁·…·H_r with Hᵢ = I − 2·uᵢuᵢᵀ/‖uᵢ‖², so y = x·(W·H)ᵀ + b. The vectors are stored as
 * `<module>.hra_u` [in, r]. With apply_GS they are first orthonormalised (Gram–Schmidt) into Q
 * and H = I − 2·Q·Qᵀ. PEFT's default init repeats each of r/2 random vectors twice, so the
 * reflections cancel in pairs and H = I at the start.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type HraConfig, hraConfigJson, parseHraConfig } from "./config.js";
import { type HraLayer, hraLayers, rightMultiplyH } from "./layers.js";

/** nn.init.kaiming_uniform_(a=√5) on a [in, k] tensor: torch's fan_in is its second dim, k. */
function kaimingColumns(inF: number, k: number, rng: Rng): Float32Array {
  const bound = 1 / Math.sqrt(k);
  return fillUniform(inF * k, -bound, bound, rng);
}

/** HRALayer.reset_hra_parameters / reset_hra_parameters_random. */
function initVectors(l: HraLayer, c: HraConfig, rng: Rng): Float32Array {
  if (!c.initWeights || c.r % 2 !== 0) {
    // PEFT warns for odd r ("the symmetric initialization can NOT be performed") and starts random.
    return kaimingColumns(l.inFeatures, c.r, rng);
  }
  const half = kaimingColumns(l.inFeatures, c.r / 2, rng);
  const u = new Float32Array(l.inFeatures * c.r);
  const h = c.r / 2;
  // torch.repeat_interleave(half, 2, dim=1): columns u₀ u₀ u₁ u₁ …
  for (let i = 0; i < l.inFeatures; i++) for (let j = 0; j < c.r; j++) u[i * c.r + j] = half[i * h + (j >> 1)];
  return u;
}

function refuseBias(c: HraConfig): void {
  // PEFT marks the biases trainable but saves only the hra_ tensors (get_peft_model_state_dict), so
  // a trained bias would be lost in the saved adapter; loading such a folder is fine (it has none).
  if (c.bias !== "none")
    throw new PeftConfigError(
      `HRA config: bias "${c.bias}" is not supported for new adapters: PEFT trains those biases but does not save them with an HRA adapter; use bias "none"`,
    );
}

function create(info: ModelInfo, c: HraConfig, rng: Rng): CreatedAdapter {
  refuseBias(c);
  const tensors = new Map<string, HostTensor>();
  for (const l of hraLayers(info, c)) tensors.set(l.key, hostTensor("f32", [l.inFeatures, c.r], initVectors(l, c, rng)));
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: HraConfig): Map<string, number[]> {
  return new Map(hraLayers(info, c).map((l) => [l.key, [l.inFeatures, c.r]]));
}

/**
 * x·Hᵀ for activations x [..., in]: Hᵀ = H_r·…·H₁ (each reflection is symmetric), so the row
 * vector meets û_r first. With apply_GS, x − 2·(x·Q)·Qᵀ. Gradients flow through the
 * normalisation and Gram–Schmidt, as in PEFT.
 */
export function reflect(x: Tensor, u: Tensor, r: number, applyGs: boolean): Tensor {
  if (applyGs) {
    const q: Tensor[] = [];
    for (let j = 0; j < r; j++) {
      let v = u.slice(1, j, j + 1);
      for (const p of q) v = v.sub(p.mul(p.mul(v).sum(0, true)));
      q.push(v.div(v.square().sum(0, true).sqrt()));
    }
    let y = x;
    for (const p of q) y = y.sub(x.matmul(p).matmul(p.transpose()).mul(2));
    return y;
  }
  const unit = u.div(u.square().sum(0, true).sqrt());
  let y = x;
  for (let j = r - 1; j >= 0; j--) {
    const v = unit.slice(1, j, j + 1);
    y = y.sub(y.matmul(v).matmul(v.transpose()).mul(2));
  }
  return y;
}

class HraContext extends DelegatingContext {
  private readonly layers: Map<string, HraLayer>;
  constructor(
    inner: ForwardContext,
    info: ModelInfo,
    private readonly c: HraConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(hraLayers(info, c).map((l) => [l.path, l]));
  }

  /** y = x·(W·H)ᵀ + b = (x·Hᵀ)·Wᵀ + b: the reflections act on the layer's input. */
  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const l = this.layers.get(path);
    if (!l) return this.inner.linear(path, x, lin);
    const xr = reflect(x, this.opts.tensor(l.key), this.c.r, this.c.applyGs);
    const xin = this.opts.rowMask ? x.add(maskRows(xr.sub(x), this.opts.rowMask)) : xr;
    return this.inner.linear(path, xin, lin);
  }
}

/** HRALinear.merge: W ← W·H, computed in float64 from the current weight. */
function merge(info: ModelInfo, c: HraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of hraLayers(info, c)) {
    const u = tensors.get(l.key);
    if (!u) throw new PeftConfigError(`HRA merge: the adapter has no tensor "${l.key}"`);
    const w = info.weight(`${l.path}.weight`);
    const rows = Float64Array.from(w.data as Float32Array);
    rightMultiplyH(rows, l.outFeatures, u.data as Float32Array, l.inFeatures, c.r, c.applyGs);
    out.set(`${l.path}.weight`, hostTensor("f32", w.shape, Float32Array.from(rows)));
  }
  return out;
}

export const HRA: Tuner<HraConfig> = {
  peftType: "HRA",
  parseConfig: parseHraConfig,
  toJson: hraConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new HraContext(base, info, c, opts),
  merge,
  supportsMixedBatch: true,
};
