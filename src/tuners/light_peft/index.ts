/**
 * Light-PEFT's estimation phase (Gu et al. 2024, "Light-PEFT: Lightening Parameter-Efficient
 * Fine-Tuning via Early Pruning"; gccnlp/Light-PEFT NLU/trainer_base.py MaskTrainer,
 * NLU/estimate.py, peft/src/peft/tuners/lora.py; catalog §6.3). LoRA plus a trainable scalar
 * mask on every attention head and every FFN neuron of every layer (all start at 1):
 *   o_proj reads  x_h·m_h  for head h's slice of its input (the head's context vector),
 *   down_proj reads x_j·m_j for intermediate neuron j,
 * with L = task loss + mask_l1_coef·Σ|m| and the masks trained at attn_mask_lr_mult /
 * ffn_mask_lr_mult times the learning rate (update gates). Along the way it records, for each
 * LoRA module over the second half of the steps:
 *   module importance ("p2"): mean over tokens of ‖ΔW·x‖ / ‖W·x + b‖, from the forward;
 *   rank importance ("first_order"): |mean_i (A ⊙ ∇A)_{k,i}| + |mean_o (B ⊙ ∇B)_{o,k}| per rank k,
 *   signed means first, from the backward (probes: the gradient before clipping, as the authors
 *   record it after loss.backward()).
 * The sums live in fixed adapter tensors (`<module>.light_peft_*`), so checkpoints and the phase-1
 * folder carry them. The pruning and phase 2 are in train/light-peft.ts.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { layerPath } from "../../prune/heads-ffn.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import { LORA } from "../lora/index.js";
import { type LoraLayer, loraKeys, loraLayers } from "../lora/layers.js";
import { DelegatingContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type LightPeftConfig, lightPeftConfigJson, parseLightPeftConfig } from "./config.js";

export const HEAD_MASK = ".light_peft_head_mask";
export const NEURON_MASK = ".light_peft_neuron_mask";
export const MODULE_SCORE = ".light_peft_module_score";
export const RANK_SCORE = ".light_peft_rank_score";
export const SCORE_STEPS = ".light_peft_score_steps";
const SCORES = [MODULE_SCORE, RANK_SCORE, SCORE_STEPS];

/** A mask on the input of a layer's o_proj (per head) or down_proj (per neuron). */
export interface MaskSite {
  layer: number;
  kind: "head" | "neuron";
  /** Canonical path of the linear layer whose input it scales. */
  path: string;
  key: string;
  /** Scalars in the mask. */
  size: number;
  /** Input features each scalar covers (head_dim for heads, 1 for neurons). */
  width: number;
}

/** Every head and neuron mask of the model (LLaMA-family decoders). */
export function maskSites(info: ModelInfo): MaskSite[] {
  if (info.model.arch.name !== "llama")
    throw new PeftConfigError(`light_peft supports llama, mistral and qwen2 models; this one is ${info.modelType}`);
  const inter = (info.model.archConfig as { intermediate: number }).intermediate;
  const out: MaskSite[] = [];
  for (let i = 0; i < info.numLayers; i++) {
    const o = layerPath(i, "o_proj");
    const d = layerPath(i, "down_proj");
    out.push({ layer: i, kind: "head", path: o, key: `${info.peftName(o)}${HEAD_MASK}`, size: info.heads, width: info.headDim });
    out.push({ layer: i, kind: "neuron", path: d, key: `${info.peftName(d)}${NEURON_MASK}`, size: inter, width: 1 });
  }
  return out;
}

/** The LoRA modules whose importance is recorded (linear ones). */
export function scoredLayers(info: ModelInfo, c: LightPeftConfig): LoraLayer[] {
  return loraLayers(info, c).filter((l) => l.kind === "linear");
}

function scoreTensors(info: ModelInfo, c: LightPeftConfig): Map<string, HostTensor> {
  const m = new Map<string, HostTensor>();
  for (const l of scoredLayers(info, c)) {
    m.set(`${l.key}${MODULE_SCORE}`, hostTensor("f32", [1]));
    m.set(`${l.key}${RANK_SCORE}`, hostTensor("f32", [l.r]));
    m.set(`${l.key}${SCORE_STEPS}`, hostTensor("f32", [1]));
  }
  return m;
}

const probeName = (kind: "p2" | "rank_a" | "rank_b", key: string) => `light_peft.${kind}.${key}`;

/** `x` with each mask scalar applied to its `width` input features (rows of a mixed batch: only this adapter's). */
function applyMask(x: Tensor, mask: Tensor, site: MaskSite, rowMask: Tensor | null): Tensor {
  let m = mask.cast(x.dtype);
  if (site.width > 1)
    m = m
      .unsqueeze(-1)
      .expand([site.size, site.width])
      .reshape([site.size * site.width]);
  if (!rowMask) return x.mul(m);
  // 1 + rowMask·(m − 1): the mask for this adapter's rows, identity for the others.
  let r = rowMask.cast(x.dtype);
  for (let i = 1; i < x.rank; i++) r = r.unsqueeze(-1);
  return x.mul(m.sub(1).mul(r).add(1));
}

/**
 * Masks on the inputs of o_proj/down_proj (outside LoRA, so LoRA on those layers reads the masked
 * input too, as the authors' output.dense does), and in training the importance probes.
 */
class LightPeftContext extends DelegatingContext {
  private readonly sites: Map<string, MaskSite>;
  private readonly scored: Map<string, LoraLayer>;
  constructor(
    lora: ForwardContext,
    private readonly base: ForwardContext,
    info: ModelInfo,
    c: LightPeftConfig,
    private readonly opts: WrapOptions,
  ) {
    super(lora);
    this.sites = new Map(maskSites(info).map((s) => [s.path, s]));
    this.scored = new Map(opts.probe ? scoredLayers(info, c).map((l) => [l.path, l]) : []);
  }

  override linear(path: string, x: Tensor, o?: LinearOptions): Tensor {
    const site = this.sites.get(path);
    const xin = site ? applyMask(x, this.opts.tensor(site.key), site, this.opts.rowMask) : x;
    const y = this.inner.linear(path, xin, o);
    const l = this.scored.get(path);
    const probe = this.opts.probe;
    if (l && probe) {
      // ‖ΔW·x‖ / ‖W·x + b‖ per token, averaged: the LoRA output minus the layer's own.
      const plain = this.base.linear(path, xin, o);
      const ratio = y.sub(plain).square().sum(-1).sqrt().div(plain.square().sum(-1).sqrt());
      probe(probeName("p2", l.key), ratio.mean(), (v) => v);
      const k = loraKeys(l);
      probe(probeName("rank_a", l.key), this.opts.tensor(k.a), (a, g) => a.mul(g).mean(1));
      probe(probeName("rank_b", l.key), this.opts.tensor(k.b), (b, g) => b.mul(g).mean(0));
    }
    return y;
  }
}

/** A finite number, else 0 (the authors' np.nan_to_num before averaging). */
const finite = (v: number) => (Number.isFinite(v) ? v : 0);

/**
 * Gives the masks their learning-rate multiples and adds each step of the second half of the run
 * to the importance sums.
 */
class ImportanceController implements Controller<LightPeftConfig> {
  readonly gradientKeys: string[] = [];
  readonly gatedUpdates = true;
  private readonly layers: LoraLayer[];
  private readonly gates: Map<string, number>;
  private recorded = 0;

  constructor(
    info: ModelInfo,
    c: LightPeftConfig,
    private readonly run: ControllerRun,
  ) {
    this.layers = scoredLayers(info, c);
    this.gates = new Map(maskSites(info).map((s) => [s.key, s.kind === "head" ? c.attnMaskLrMult : c.ffnMaskLrMult]));
  }

  begin(): ControllerAction<LightPeftConfig> {
    return { trainable: this.gates };
  }

  afterStep(s: ControllerStep): ControllerAction<LightPeftConfig> | null {
    // estimate.py keeps the second half of the per-step records: steps ⌊N/2⌋+1 … N.
    const total = s.totalSteps ?? this.run.totalSteps;
    if (total !== null && s.step <= Math.floor(total / 2)) return null;
    const tensors = new Map<string, HostTensor>();
    for (const l of this.layers) {
      const add = (suffix: string, values: ArrayLike<number>) => {
        const key = `${l.key}${suffix}`;
        const sum = Float32Array.from(s.tensors.get(key)?.data as Float32Array);
        for (let i = 0; i < sum.length; i++) sum[i] += values[i];
        tensors.set(key, hostTensor("f32", [sum.length], sum));
      };
      const stat = (kind: "p2" | "rank_a" | "rank_b") => s.statistics.get(probeName(kind, l.key))?.data as Float32Array;
      const a = stat("rank_a");
      const b = stat("rank_b");
      add(MODULE_SCORE, [finite(stat("p2")[0])]);
      add(
        RANK_SCORE,
        Array.from({ length: l.r }, (_, k) => finite(Math.abs(a[k]) + Math.abs(b[k]))),
      );
      add(SCORE_STEPS, [1]);
    }
    this.recorded++;
    return { tensors };
  }

  metrics(): Record<string, number> {
    return { importance_steps: this.recorded };
  }

  // The sums are adapter tensors, which a checkpoint keeps; the gates are given again.
  state(): ControllerState {
    return { tensors: new Map(), json: { recorded: this.recorded } };
  }

  restore(s: ControllerState): ControllerAction<LightPeftConfig> {
    const j = s.json as { recorded?: unknown } | null;
    this.recorded = typeof j?.recorded === "number" ? j.recorded : 0;
    return { trainable: this.gates };
  }
}

function maskTensors(info: ModelInfo): Map<string, HostTensor> {
  return new Map(maskSites(info).map((s) => [s.key, hostTensor("f32", [s.size], new Float32Array(s.size).fill(1))]));
}

/** The mean importances recorded in a phase-1 adapter's tensors (0 for a module never scored). */
export function recordedImportance(
  info: ModelInfo,
  c: LightPeftConfig,
  tensors: ReadonlyMap<string, HostTensor>,
): { modules: Map<string, number>; ranks: Map<string, Float64Array> } {
  const modules = new Map<string, number>();
  const ranks = new Map<string, Float64Array>();
  const data = (key: string): Float32Array => {
    const t = tensors.get(key);
    if (!t) throw new PeftConfigError(`light_peft: the phase-1 adapter has no tensor "${key}"`);
    return t.data as Float32Array;
  };
  for (const l of scoredLayers(info, c)) {
    const n = data(`${l.key}${SCORE_STEPS}`)[0];
    const d = n > 0 ? n : 1;
    modules.set(l.key, data(`${l.key}${MODULE_SCORE}`)[0] / d);
    ranks.set(
      l.key,
      Float64Array.from(data(`${l.key}${RANK_SCORE}`), (v) => v / d),
    );
  }
  return { modules, ranks };
}

export const LIGHT_PEFT: Tuner<LightPeftConfig> = {
  peftType: "LIGHT_PEFT",
  parseConfig: parseLightPeftConfig,
  toJson: lightPeftConfigJson,
  create: (info, c, rng, data) => {
    const { tensors } = LORA.create(info, c, rng, data);
    for (const [k, t] of maskTensors(info)) tensors.set(k, t);
    for (const [k, t] of scoreTensors(info, c)) tensors.set(k, t);
    return { tensors };
  },
  trainable: (key) => !SCORES.some((s) => key.endsWith(s)),
  loss: (info, c, opts) => {
    if (c.maskL1Coef === 0) return null;
    let sum: Tensor | null = null;
    for (const s of maskSites(info)) {
      const t = opts.tensor(s.key).abs().sum();
      sum = sum ? sum.add(t) : t;
    }
    return sum ? sum.mul(c.maskL1Coef) : null;
  },
  controller: (info, c, run) => new ImportanceController(info, c, run),
  expectedTensors: (info, c) => {
    const m = LORA.expectedTensors(info, c);
    for (const s of maskSites(info)) m.set(s.key, [s.size]);
    for (const [k, t] of scoreTensors(info, c)) m.set(k, [...t.shape]);
    return m;
  },
  wrap: (base, info, c, opts) => new LightPeftContext(LORA.wrap(base, info, c, opts), base, info, c, opts),
  // W + s·B·A with its input columns scaled by the masks (o_proj per head, down_proj per neuron).
  merge: (info, c, tensors, unmerged) => {
    const out = LORA.merge?.(info, c, tensors, unmerged) ?? new Map<string, HostTensor>();
    for (const s of maskSites(info)) {
      const name = `${s.path}.weight`;
      const w = out.get(name) ?? info.weight(name);
      const [rows, cols] = w.shape;
      const m = tensors.get(s.key)?.data as Float32Array;
      const data = Float32Array.from(w.data as Float32Array);
      for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) data[r * cols + j] *= m[Math.floor(j / s.width)];
      out.set(name, hostTensor("f32", [rows, cols], data));
    }
    return out;
  },
  supportsMixedBatch: true,
};
