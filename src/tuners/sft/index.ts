/**
 * SpIEL (Ansell et al. 2024, "Scaling Sparse Fine-Tuning to Large Language Models"), in the
 * format of the authors' PEFT fork (AlanAnsell/peft, peft_type "SFT"): each targeted linear
 * layer trains k entries of its weight, `<module>.sft_delta.values` [k] at the flat positions
 * `<module>.sft_delta.indices` [k] (int32, increasing), and y = x·(W + S)ᵀ + b. The index sets
 * start uniformly random; a controller drops and regrows them between steps (controller.ts).
 * The shared machinery (the forward with its memory-lean backward, merging, the delta files)
 * is src/sparse/.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { zeros } from "../../engine/trace/tensor.js";
import type { ForwardContext } from "../../nn/context.js";
import { mergeSparse, SparseDeltaContext, type SparseTarget, sparseTensors } from "../../sparse/adapter.js";
import { samplePositions } from "../../sparse/delta.js";
import type { SparseLinearTaps } from "../../sparse/linear.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import type { CreatedAdapter, ModelInfo, Tuner, WrapOptions } from "../tuner.js";
import { parseSftConfig, type SftConfig, sftConfigJson } from "./config.js";
import { atName, sftController, topName } from "./controller.js";
import { candidatesKey, sftKeys, sftTargets } from "./layers.js";

/** Spread of the values init_weights: false draws. */
const RANDOM_STD = 0.1;

function allPositions(n: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  return out;
}

/** Reselection needs the candidates tensor in the step (controller.ts); it is not saved. */
const reselects = (c: SftConfig) => c.reselectionSteps > 0;

function create(info: ModelInfo, c: SftConfig, rng: Rng): CreatedAdapter<SftConfig> {
  const tensors = new Map<string, HostTensor>();
  const targets = sftTargets(info, c);
  for (const t of targets) {
    if (reselects(c)) tensors.set(candidatesKey(t), hostTensor("i32", [t.k]));
    const draw = rng.fork();
    const n = t.shape[0] * t.shape[1];
    // Every entry (LT-SFT's dense first phase): no need to draw.
    const indices = t.k === n ? allPositions(n) : samplePositions(n, t.k, () => draw.next());
    const values = c.initWeights ? new Float32Array(t.k) : fillNormal(t.k, RANDOM_STD, draw);
    for (const [k, v] of sparseTensors(sftKeys(t), indices, values)) tensors.set(k, v);
  }
  // As SftModel.inject_adapter, the counts it derived are written into num_deltas.
  return { tensors, config: { ...c, numDeltas: Object.fromEntries(targets.map((t) => [t.key, t.k])) } };
}

function expectedTensors(info: ModelInfo, c: SftConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const t of sftTargets(info, c)) {
    const k = sftKeys(t);
    out.set(k.indices, [t.k]);
    out.set(k.values, [t.k]);
  }
  return out;
}

/** The step reports the top-k |∂L/∂W| (first micro-batch) and ∂L/∂W at the candidates (controller.ts). */
function taps(t: SparseTarget, opts: WrapOptions): SparseLinearTaps {
  const probe = opts.probe as NonNullable<WrapOptions["probe"]>;
  const at = zeros([t.k]);
  const top = zeros([3, t.k]);
  probe(atName(t.key), at, (_v, g) => g);
  probe(topName(t.key), top, (_v, g) => g, { combine: "first" });
  return { gradientAt: { slot: at, indices: opts.tensor(candidatesKey(t)) }, largest: { slot: top, m: t.k } };
}

function wrap(base: ForwardContext, info: ModelInfo, c: SftConfig, opts: WrapOptions): ForwardContext {
  const tapped = opts.probe && reselects(c) ? (t: SparseTarget) => taps(t, opts) : undefined;
  return new SparseDeltaContext(base, sftTargets(info, c), sftKeys, opts, tapped);
}

/** The candidates are training state, not part of the adapter. */
function tensorsToSave(_info: ModelInfo, _c: SftConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  return new Map([...tensors].filter(([k]) => !k.endsWith(".sft_delta.candidates")));
}

function tensorsFromSaved(info: ModelInfo, c: SftConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(saved);
  if (reselects(c)) for (const t of sftTargets(info, c)) out.set(candidatesKey(t), hostTensor("i32", [t.k]));
  return out;
}

export const SFT: Tuner<SftConfig> = {
  peftType: "SFT",
  parseConfig: parseSftConfig,
  toJson: sftConfigJson,
  create,
  expectedTensors,
  trainable: (key) => key.endsWith(".sft_delta.values"),
  controller: sftController,
  wrap,
  tensorsToSave,
  tensorsFromSaved,
  merge: (info, c, tensors) => mergeSparse(info, sftTargets(info, c), sftKeys, tensors, "SFT merge"),
  supportsMixedBatch: true,
};
