/**
 * LoRA-GGPO (Chang, Guo, Chang, Wu 2025, "LoRA-GGPO: Mitigating Double Descent in LoRA Fine-Tuning
 * via Gradient-Guided Perturbation Optimization", arXiv 2502.14538v1; catalog §1.12, seed #65).
 * LoRA whose training forward runs at a randomly perturbed weight,
 *   y = (W + s·B·A + ε)·x,   ε_ij = σ_i·z_ij,  z_ij ~ N(0, 1) drawn afresh each step,
 * minimising E_ε L(W + s·B·A + ε) (flat minima without SAM's second backward pass). The per-row
 * standard deviation mixes the effective weight's row norm and the estimated full-weight gradient's:
 *   σ_i = (ggpo_sigma·‖W'_i‖ + ggpo_beta·‖Ĝ_i‖²) / √in,   W' = W + s·B·A,
 *   Ĝ = s·(B·∇A + ∇B·A)   (the part of ∂L/∂W' that B and A's gradients reveal),
 * from the gradients of the previous optimizer step (zero before the first one). This form is
 * kohya-ss/sd-scripts' implementation (networks/lora_flux.py, PR #1974), the only released code
 * found; the paper's own equation could not be read here, see docs/methods/lora-ggpo.md.
 *
 * How it runs: a Controller reads ∇A and ∇B after every update and writes σ into a fixed adapter
 * tensor `<m>.ggpo_scale` [out] that the training forward reads as an input; the noise is drawn in
 * the graph from the step's seed. Inference and merging are LoRA's: ε never reaches the weights.
 *
 * Saved format: the adapter file holds exactly PEFT LoRA's tensors (`<m>.lora_A.weight` [r, in],
 * `<m>.lora_B.weight` [out, r]); the scales are training state, left out of the file and rebuilt
 * as zeros on load (a checkpoint keeps them in adapter_state.safetensors for an exact resume).
 * adapter_config.json is LoRA's plus ggpo_sigma and ggpo_beta with peft_type "LORA_GGPO"; HF PEFT
 * loads the folder as LoRA once peft_type reads "LORA".
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { randomNormal, type Tensor } from "../../engine/trace/tensor.js";
import type { Controller, ControllerState, ControllerStep } from "../controller.js";
import { layerSeed } from "../layer-seed.js";
import { LORA } from "../lora/index.js";
import { type LoraLayer, loraKeys, loraLayers } from "../lora/layers.js";
import { LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type LoraGgpoConfig, loraGgpoConfigJson, parseLoraGgpoConfig } from "./config.js";

const SCALE = ".ggpo_scale";

/** The fixed tensor holding σ_i for each output row of a perturbed layer. */
export function ggpoScaleKey(l: LoraLayer): string {
  return `${l.key}${SCALE}`;
}

/** The layers GGPO perturbs: LoRA's linear layers (LoRA on embedding tables trains unperturbed). */
export function ggpoLayers(info: ModelInfo, c: LoraGgpoConfig): LoraLayer[] {
  return loraLayers(info, c).filter((l) => l.kind === "linear");
}

function zeroScales(info: ModelInfo, c: LoraGgpoConfig): Map<string, HostTensor> {
  return new Map(ggpoLayers(info, c).map((l) => [ggpoScaleKey(l), hostTensor("f32", [l.outFeatures], new Float32Array(l.outFeatures))]));
}

/** ε·x for ε = diag(σ)·Z, Z ~ N(0, 1) [out, in] from the step's seed: (x·Zᵀ) scaled per output. */
export function ggpoPerturbation(x: Tensor, scale: Tensor, seed: Tensor, l: LoraLayer): Tensor {
  // use 3: apart from the dropout mask LoRA draws for the same layer (use 0).
  const z = randomNormal(layerSeed(seed, l.path, 3), [l.outFeatures, l.inFeatures], x.dtype);
  return x.matmul(z.transpose()).mul(scale.cast(x.dtype));
}

/** Row i of the base weight W in [out, in] layout (W stored [in, out] for fan_in_fan_out). */
function baseRow(w: Float32Array, l: LoraLayer, fanInFanOut: boolean, o: number, out: Float64Array): void {
  const n = l.inFeatures;
  if (fanInFanOut) for (let i = 0; i < n; i++) out[i] = w[i * l.outFeatures + o];
  else for (let i = 0; i < n; i++) out[i] = w[o * n + i];
}

/**
 * σ_i = (ggpo_sigma·‖(W + s·B·A)_i‖ + ggpo_beta·‖s·(B·∇A + ∇B·A)_i‖²) / √in for every row i, in
 * float64 from the layer's tensors.
 */
export function ggpoScales(
  l: LoraLayer,
  c: Pick<LoraGgpoConfig, "ggpoSigma" | "ggpoBeta">,
  w: Float32Array,
  fanInFanOut: boolean,
  t: { a: ArrayLike<number>; b: ArrayLike<number>; gradA: ArrayLike<number>; gradB: ArrayLike<number> },
): Float32Array {
  const [out, n, r, s] = [l.outFeatures, l.inFeatures, l.r, l.scaling];
  const scales = new Float32Array(out);
  const row = new Float64Array(n);
  const grad = new Float64Array(n);
  for (let o = 0; o < out; o++) {
    baseRow(w, l, fanInFanOut, o, row);
    grad.fill(0);
    for (let k = 0; k < r; k++) {
      const b = t.b[o * r + k] * s;
      const gb = t.gradB[o * r + k] * s;
      for (let i = 0; i < n; i++) {
        row[i] += b * t.a[k * n + i];
        grad[i] += b * t.gradA[k * n + i] + gb * t.a[k * n + i];
      }
    }
    let wn = 0;
    let gn = 0;
    for (let i = 0; i < n; i++) {
      wn += row[i] * row[i];
      gn += grad[i] * grad[i];
    }
    scales[o] = (c.ggpoSigma * Math.sqrt(wn) + c.ggpoBeta * gn) / Math.sqrt(n);
  }
  return scales;
}

/** Recomputes every layer's σ after each update; logs their mean as ggpo_std. */
class GgpoController implements Controller<LoraGgpoConfig> {
  readonly gradientKeys: string[];
  private meanStd = 0;
  private readonly layers: LoraLayer[];

  constructor(
    private readonly info: ModelInfo,
    private readonly c: LoraGgpoConfig,
  ) {
    this.layers = ggpoLayers(info, c);
    this.gradientKeys = this.layers.flatMap((l) => [loraKeys(l).a, loraKeys(l).b]);
  }

  afterStep(s: ControllerStep): { tensors: Map<string, HostTensor> } {
    const tensors = new Map<string, HostTensor>();
    let sum = 0;
    let rows = 0;
    for (const l of this.layers) {
      const k = loraKeys(l);
      const data = (m: ReadonlyMap<string, HostTensor>, key: string) => m.get(key)?.data as Float32Array;
      const scales = ggpoScales(l, this.c, this.info.weight(`${l.path}.weight`).data as Float32Array, this.info.fanInFanOut, {
        a: data(s.tensors, k.a),
        b: data(s.tensors, k.b),
        gradA: data(s.gradients, k.a),
        gradB: data(s.gradients, k.b),
      });
      for (const v of scales) sum += v;
      rows += scales.length;
      tensors.set(ggpoScaleKey(l), hostTensor("f32", [l.outFeatures], scales));
    }
    this.meanStd = rows ? sum / rows : 0;
    return { tensors };
  }

  metrics(): Record<string, number> {
    return { ggpo_std: this.meanStd };
  }

  // The scales themselves are adapter tensors, which a checkpoint keeps (adapter_state.safetensors).
  state(): ControllerState {
    return { tensors: new Map(), json: { ggpo_std: this.meanStd } };
  }

  restore(s: ControllerState): null {
    const j = s.json as { ggpo_std?: unknown } | null;
    this.meanStd = typeof j?.ggpo_std === "number" ? j.ggpo_std : 0;
    return null;
  }
}

export const LORA_GGPO: Tuner<LoraGgpoConfig> = {
  peftType: "LORA_GGPO",
  parseConfig: parseLoraGgpoConfig,
  toJson: loraGgpoConfigJson,
  create: (info, c, rng, data) => {
    // LoRA's creation resolves nothing into its config: the GGPO config stays as given.
    const { tensors, baseEdits } = LORA.create(info, c, rng, data);
    for (const [k, t] of zeroScales(info, c)) tensors.set(k, t);
    return { tensors, baseEdits };
  },
  calibration: (info, c) => LORA.calibration?.(info, c) ?? null,
  trainable: (key) => !key.endsWith(SCALE),
  controller: (info, c) => (c.ggpoSigma === 0 && c.ggpoBeta === 0 ? null : new GgpoController(info, c)),
  // What a saved folder holds: LoRA's tensors only.
  expectedTensors: (info, c) => LORA.expectedTensors(info, c),
  tensorsToSave: (_info, _c, tensors) => new Map([...tensors].filter(([k]) => !k.endsWith(SCALE))),
  tensorsFromSaved: (info, c, saved) => new Map([...saved, ...zeroScales(info, c)]),
  wrap: (base, info, c, opts: WrapOptions) => {
    const lora = LORA.wrap(base, info, c, opts);
    const seed = opts.training ? opts.seed : null;
    if (!seed) return lora;
    return new LinearDeltaContext(lora, ggpoLayers(info, c), opts.rowMask, (l, x) =>
      ggpoPerturbation(x, opts.tensor(ggpoScaleKey(l)), seed, l),
    );
  },
  merge: (info, c, tensors, unmerged) => LORA.merge?.(info, c, tensors, unmerged) ?? new Map(),
  supportsMixedBatch: true,
};
