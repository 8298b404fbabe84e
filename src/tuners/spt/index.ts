/**
 * SPT (He et al. 2023, "Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning", ICCV; code
 * ziplab/SPT), peft_type "SPT". A calibration pass gives each targeted weight's sensitivity
 * Σ(∂L/∂W)²; under a parameter budget, matrices with many sensitive entries get a LoRA module
 * (ΔW = B·A, no α/r scaling, as the authors' StructuredTuningModule), the others train just their
 * sensitive entries (a sparse delta, src/sparse/). select.ts does the allocation.
 *
 * Keys: `<module>.lora_A.weight` [r, in] and `<module>.lora_B.weight` [out, r] for structured
 * modules; `<module>.spt_delta.indices` (i32) and `<module>.spt_delta.values` for the others.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext } from "../../nn/context.js";
import { mergeSparse, SparseDeltaContext, type SparseKeys, type SparseTarget, sparseTargets, sparseTensors } from "../../sparse/adapter.js";
import { matmul, matrix } from "../../util/linalg.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, type LoraLayer, logicalWeight, storedWeight } from "../lora/layers.js";
import { totalParameters } from "../sft/layers.js";
import { type TargetedLinear, targetedLinears } from "../targets.js";
import {
  type CalibrationRequest,
  type CreateData,
  type CreatedAdapter,
  LinearDeltaContext,
  type ModelInfo,
  type Tuner,
  type WrapOptions,
} from "../tuner.js";
import { parseSptConfig, type SptConfig, sptConfigJson } from "./config.js";
import { allocate } from "./select.js";

const WHERE = "SPT config";
/** Spread of what init_weights: false draws. */
const RANDOM_STD = 0.1;

export const sptKeys = (t: { key: string }): SparseKeys => ({ indices: `${t.key}.spt_delta.indices`, values: `${t.key}.spt_delta.values` });
const loraKeys = (key: string) => ({ a: `${key}.lora_A.weight`, b: `${key}.lora_B.weight` });

const candidates = (info: ModelInfo, c: SptConfig): TargetedLinear[] =>
  targetedLinears(info, { ...c, targetModules: c.targetModules ?? "all-linear" }, WHERE);

/** The resolved layout: LoRA layers and sparse targets (from the config creation wrote). */
function layout(info: ModelInfo, c: SptConfig): { lora: TargetedLinear[]; sparse: SparseTarget[] } {
  if (!c.structuredModules || !c.numDeltas)
    throw new PeftConfigError(
      `${WHERE}: "structured_modules" and "num_deltas" are missing (an SPT adapter is created from calibration data)`,
    );
  const byKey = new Map(candidates(info, c).map((l) => [l.key, l]));
  const get = (k: string, field: string) => {
    const l = byKey.get(k);
    if (!l)
      throw new PeftConfigError(`${WHERE}: ${field} names "${k}", which is not a targeted linear layer of this ${info.modelType} model`);
    return l;
  };
  const lora = c.structuredModules.map((k) => get(k, "structured_modules"));
  const nd = c.numDeltas;
  const sparse = sparseTargets(
    info,
    Object.keys(nd).map((k) => get(k, "num_deltas")),
    (l) => nd[l.key],
  );
  return { lora, sparse };
}

function calibration(info: ModelInfo, c: SptConfig): CalibrationRequest {
  return { layers: candidates(info, c).map((l) => l.path), gradientSquareSum: true };
}

function create(info: ModelInfo, c: SptConfig, rng: Rng, data?: CreateData): CreatedAdapter<SptConfig> {
  const stats = data?.calibration;
  if (!stats)
    throw new PeftConfigError(
      "SPT chooses what to train from gradients of your data: pass --calibration-data FILE (library: addAdapter(..., { calibration }))",
    );
  const layers = candidates(info, c);
  const budget = c.numTunableWeights ?? Math.floor(totalParameters(info) * c.density);
  const matrices = layers.map((l) => {
    const s = stats.gradientSquareSum.get(`${l.path}.weight`);
    if (!s) throw new PeftConfigError(`SPT: the calibration statistics have no squared-gradient sum for "${l.path}.weight"`);
    return { key: l.key, scores: s.data, structuredSize: c.r * (l.inFeatures + l.outFeatures) };
  });
  const alloc = allocate(matrices, budget, c.alpha);
  const resolved: SptConfig = {
    ...c,
    structuredModules: alloc.structured,
    numDeltas: Object.fromEntries([...alloc.entries].map(([k, idx]) => [k, idx.length])),
  };
  const { lora, sparse } = layout(info, resolved);
  const tensors = new Map<string, HostTensor>();
  for (const l of lora) {
    checkRank(l, c.r);
    const k = loraKeys(l.key);
    // Kaiming-uniform (a = √5) A and zero B, as nn.Linear-initialised LoRA.
    const bound = 1 / Math.sqrt(l.inFeatures);
    tensors.set(k.a, hostTensor("f32", [c.r, l.inFeatures], fillUniform(c.r * l.inFeatures, -bound, bound, rng)));
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, c.r], c.initWeights ? undefined : fillNormal(l.outFeatures * c.r, RANDOM_STD, rng)));
  }
  for (const t of sparse) {
    const values = c.initWeights ? new Float32Array(t.k) : fillNormal(t.k, RANDOM_STD, rng);
    for (const [k, v] of sparseTensors(sptKeys(t), alloc.entries.get(t.key) as Int32Array, values)) tensors.set(k, v);
  }
  return { tensors, config: resolved };
}

function checkRank(l: TargetedLinear, r: number): void {
  if (r > Math.min(l.inFeatures, l.outFeatures))
    throw new PeftConfigError(`${WHERE}: r = ${r} exceeds min(in, out) = ${Math.min(l.inFeatures, l.outFeatures)} of "${l.key}"`);
}

function expectedTensors(info: ModelInfo, c: SptConfig): Map<string, number[]> {
  const { lora, sparse } = layout(info, c);
  const out = new Map<string, number[]>();
  for (const l of lora) {
    const k = loraKeys(l.key);
    out.set(k.a, [c.r, l.inFeatures]);
    out.set(k.b, [l.outFeatures, c.r]);
  }
  for (const t of sparse) {
    const k = sptKeys(t);
    out.set(k.indices, [t.k]);
    out.set(k.values, [t.k]);
  }
  return out;
}

function loraChange(c: SptConfig, opts: WrapOptions, l: TargetedLinear, x: Tensor): Tensor {
  const k = loraKeys(l.key);
  const seed = opts.training && c.loraDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.loraDropout, layerSeed(seed, l.path)) : x;
  return xin.matmul(opts.tensor(k.a).transpose()).matmul(opts.tensor(k.b).transpose());
}

function wrap(base: ForwardContext, info: ModelInfo, c: SptConfig, opts: WrapOptions): ForwardContext {
  const { lora, sparse } = layout(info, c);
  // The two sets of layers are disjoint: the sparse context reads the weights beneath it.
  const structured = new LinearDeltaContext(base, lora, opts.rowMask, (l, x) => loraChange(c, opts, l, x));
  return new SparseDeltaContext(structured, sparse, sptKeys, opts);
}

function merge(info: ModelInfo, c: SptConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const { lora, sparse } = layout(info, c);
  const out = mergeSparse(info, sparse, sptKeys, tensors, "SPT merge");
  for (const l of lora) {
    const k = loraKeys(l.key);
    const a = tensors.get(k.a);
    const b = tensors.get(k.b);
    if (!a || !b) throw new PeftConfigError(`SPT merge: the adapter has no tensor "${a ? k.b : k.a}"`);
    const delta = matmul(
      matrix(l.outFeatures, c.r, Float64Array.from(b.data as Float32Array)),
      matrix(c.r, l.inFeatures, Float64Array.from(a.data as Float32Array)),
    );
    const ll: LoraLayer = { ...l, kind: "linear", r: c.r, scaling: 1 };
    out.set(`${l.path}.weight`, storedWeight(info, ll, addInto(logicalWeight(info, ll), delta)));
  }
  return out;
}

export const SPT: Tuner<SptConfig> = {
  peftType: "SPT",
  parseConfig: parseSptConfig,
  toJson: sptConfigJson,
  calibration,
  create,
  expectedTensors,
  trainable: (key) => !key.endsWith(".spt_delta.indices"),
  wrap,
  merge,
  supportsMixedBatch: true,
};
