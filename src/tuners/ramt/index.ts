/**
 * R-AMT: each targeted weight θ gets a dense score tensor `<module>.ramt_scores` (θ's stored
 * shape, f32, trained), the mask M = 1[S > τ] (straight-through in training) and θ_eff = M ⊙ θ.
 * The step minimises CE + w·Σ‖S‖₂ and, by gradient surgery (Tuner.gradientSurgery), applies the
 * task gradient a element-wise dropped where it disagrees with b = ∇_S of the soft cross-entropy
 * to the frozen model's logits (the teacher, traced in the same step). Saved: the masks
 * bit-packed (`<module>.ramt_mask`, U8), or the scores with save_scores.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import type { GradientSet } from "../../engine/optim/train-step.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { RawTensor } from "../../io/safetensors.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import type { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { layerSeed } from "../layer-seed.js";
import { type TargetedLinear, targetedLinears } from "../targets.js";
import {
  type CreatedAdapter,
  DelegatingContext,
  type ModelInfo,
  maskRows,
  type Tuner,
  type TunerSurgery,
  type WrapOptions,
} from "../tuner.js";
import { parseRamtConfig, RAMT_DEFAULT_TARGETS, type RamtConfig, ramtConfigJson } from "./config.js";
import { gradientDropout, packedLength, packMask, softCrossEntropy, straightThroughMask, unpackMask } from "./mask.js";

export interface RamtTarget extends TargetedLinear {
  /** θ's stored shape ([out, in], or [in, out] for GPT-2's Conv1D). */
  readonly shape: [number, number];
}

export const scoresKey = (t: { key: string }): string => `${t.key}.ramt_scores`;
export const maskKey = (t: { key: string }): string => `${t.key}.ramt_mask`;
/** The surgery term's name (and its metrics key). */
export const DISTILL_TERM = "distill_loss";
/** Which random op of a layer the dropout's noise is (layerSeed's `use`). */
const NOISE_USE = 3;

export function ramtTargets(info: ModelInfo, c: RamtConfig): RamtTarget[] {
  return targetedLinears(info, c, "RAMT config", RAMT_DEFAULT_TARGETS[info.modelType] ?? null).map((l) => {
    const [d0, d1] = info.weight(`${l.path}.weight`).shape;
    return { ...l, shape: [d0, d1] };
  });
}

function create(info: ModelInfo, c: RamtConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const t of ramtTargets(info, c)) {
    const n = t.shape[0] * t.shape[1];
    const draw = rng.fork();
    const s = c.initWeights ? new Float32Array(n).fill(c.maskScale) : Float32Array.from({ length: n }, () => 2 * c.maskScale * draw.next());
    tensors.set(scoresKey(t), { dtype: "f32", shape: [...t.shape], data: s });
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: RamtConfig): Map<string, number[]> {
  return new Map(
    ramtTargets(info, c).map((t) => (c.saveScores ? [scoresKey(t), [...t.shape]] : [maskKey(t), [packedLength(t.shape[0] * t.shape[1])]])),
  );
}

/** y = x·(M ⊙ θ)ᵀ + b on the targeted layers; `maskOf` replaces M (tests: the mask linearised). */
export class RamtContext extends DelegatingContext {
  private readonly layers: Map<string, RamtTarget>;
  constructor(
    inner: ForwardContext,
    targets: readonly RamtTarget[],
    private readonly c: RamtConfig,
    private readonly opts: WrapOptions,
    private readonly maskOf?: (t: RamtTarget, scores: Tensor) => Tensor,
  ) {
    super(inner);
    this.layers = new Map(targets.map((t) => [t.path, t]));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const t = this.layers.get(path);
    if (!t) return this.inner.linear(path, x, lin);
    const s = this.opts.tensor(scoresKey(t));
    // Straight-through wherever a gradient is taken (the training step, gradient checks).
    const m = this.maskOf ? this.maskOf(t, s) : straightThroughMask(s, this.c.threshold);
    const w = this.inner.weight(`${path}.weight`);
    const product = (v: Tensor) => x.matmul(lin?.fanInFanOut ? v : v.transpose());
    // A training step wraps the base weights alone: one product with the masked weight. Elsewhere
    // (stacks, mixed batches) the inner layer's output plus the change x·((M − 1) ⊙ θ)ᵀ per row.
    if (this.opts.training && !this.opts.rowMask) {
      const y = product(w.mul(m.cast(w.dtype)));
      return this.inner.hasWeight(`${path}.bias`) ? y.add(this.inner.weight(`${path}.bias`)) : y;
    }
    return this.inner.linear(path, x, lin).add(maskRows(product(w.mul(m.sub(1).cast(w.dtype))), this.opts.rowMask));
  }
}

function wrap(base: ForwardContext, info: ModelInfo, c: RamtConfig, opts: WrapOptions): ForwardContext {
  return new RamtContext(base, ramtTargets(info, c), c, opts);
}

/** w·Σ_tensors ‖S‖₂ (the authors' RegLoss(param, 2), not squared). */
function loss(info: ModelInfo, c: RamtConfig, opts: WrapOptions): Tensor | null {
  if (c.maskLossWeight === 0) return null;
  let sum: Tensor | null = null;
  for (const t of ramtTargets(info, c)) {
    const norm = opts.tensor(scoresKey(t)).square().sum().sqrt();
    sum = sum ? sum.add(norm) : norm;
  }
  return (sum as Tensor).mul(c.maskLossWeight);
}

/**
 * The gradient dropout (graddrop_backward_and_update): b = ∇_S of the soft cross-entropy to the
 * teacher's logits decides, element by element, whether the task gradient a is kept.
 */
function gradientSurgery(info: ModelInfo, c: RamtConfig, opts: WrapOptions): TunerSurgery | null {
  if (c.gradDropLambda === 0) return null;
  const seed = opts.seed;
  if (!seed) throw new PeftConfigError("RAMT: the gradient dropout needs the training step's seed");
  const targets = ramtTargets(info, c);
  return {
    reference: true,
    terms: ({ logits, reference, labels }) => ({
      [DISTILL_TERM]: softCrossEntropy(logits, reference as Tensor, labels, c.distillTemperature),
    }),
    combine: (g: GradientSet) =>
      Object.fromEntries(
        targets.map((t) => {
          const k = scoresKey(t);
          return [k, gradientDropout(g.loss[k], g.terms[DISTILL_TERM][k], layerSeed(seed, t.key, NOISE_USE), c.gradDropLambda)];
        }),
      ),
  };
}

/** θ ← M ⊙ θ in place: no inference overhead. */
function merge(info: ModelInfo, c: RamtConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const t of ramtTargets(info, c)) {
    const name = `${t.path}.weight`;
    const w = info.weight(name);
    const s = tensors.get(scoresKey(t))?.data as Float32Array | undefined;
    if (!s) throw new PeftConfigError(`RAMT merge: the adapter has no tensor "${scoresKey(t)}"`);
    const data = (w.data as Float32Array).slice();
    for (let i = 0; i < data.length; i++) if (!(s[i] > c.threshold)) data[i] = 0;
    out.set(name, { dtype: w.dtype, shape: [...w.shape], data });
  }
  return out;
}

/** Masks only (8 per byte), unless save_scores asks for the scores themselves. */
function tensorsToSave(info: ModelInfo, c: RamtConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor | RawTensor> {
  if (c.saveScores) return new Map(tensors);
  const out = new Map<string, HostTensor | RawTensor>();
  for (const t of ramtTargets(info, c)) {
    const bytes = packMask(tensors.get(scoresKey(t)) as HostTensor, c.threshold);
    out.set(maskKey(t), { dtype: "U8", shape: [bytes.length], data: bytes });
  }
  return out;
}

/** Unpacked masks become scores 0.0/1.0 (on: 1 > τ), as the authors' load_model does. */
function tensorsFromSaved(info: ModelInfo, c: RamtConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  if (c.saveScores) return new Map(saved);
  const out = new Map<string, HostTensor>();
  for (const t of ramtTargets(info, c)) {
    const bytes = saved.get(maskKey(t)) as HostTensor;
    try {
      out.set(scoresKey(t), unpackMask(bytes.data as ArrayLike<number>, t.shape, `tensor "${maskKey(t)}"`));
    } catch (e) {
      throw new PeftConfigError(`RAMT: ${(e as Error).message}`);
    }
  }
  return out;
}

export const RAMT: Tuner<RamtConfig> = {
  peftType: "RAMT",
  parseConfig: parseRamtConfig,
  toJson: ramtConfigJson,
  create,
  expectedTensors,
  loss,
  gradientSurgery,
  wrap,
  merge,
  tensorsToSave,
  tensorsFromSaved,
  supportsMixedBatch: true,
};
