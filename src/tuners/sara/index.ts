/**
 * SaRA: each targeted linear layer trains the entries of its base weight below the threshold,
 * `<module>.sara.values` [k] (deltas) at `<module>.sara.indices` [k] (int32, increasing, fixed
 * at creation from the base weights), y = x·(W + S)ᵀ + b with the shared sparse machinery
 * (src/sparse/). The progressive re-selection and the nuclear-norm term's layer choice run
 * between steps (controller.ts, rank.ts).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext } from "../../nn/context.js";
import { mergeSparse, SparseDeltaContext, sparseTensors } from "../../sparse/adapter.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import type { CreatedAdapter, ModelInfo, Tuner, WrapOptions } from "../tuner.js";
import { parseSaraConfig, type SaraConfig, saraConfigJson } from "./config.js";
import { saraController } from "./controller.js";
import { rankKey, saraKeys, saraTargets, smallEntries } from "./layers.js";

const RANDOM_STD = 0.1;

function create(info: ModelInfo, c: SaraConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const t of saraTargets(info, c)) {
    const draw = rng.fork();
    const indices = Int32Array.from(smallEntries(info.weight(t.weight).data as ArrayLike<number>, c.threshold));
    const values = c.initWeights ? new Float32Array(t.k) : fillNormal(t.k, RANDOM_STD, draw);
    for (const [k, v] of sparseTensors(saraKeys(t), indices, values)) tensors.set(k, v);
    if (c.lambdaRank > 0) tensors.set(rankKey(t), hostTensor("f32", [t.k]));
  }
  return { tensors };
}

/** λ·Σ_layers ⟨G, S⟩: the controller sets G = U Vᵀ on one layer per step, zero elsewhere (rank.ts). */
function loss(info: ModelInfo, c: SaraConfig, opts: WrapOptions): Tensor | null {
  if (c.lambdaRank === 0) return null;
  let sum: Tensor | null = null;
  for (const t of saraTargets(info, c)) {
    const term = opts
      .tensor(rankKey(t))
      .mul(opts.tensor(saraKeys(t).values))
      .sum();
    sum = sum ? sum.add(term) : term;
  }
  return (sum as Tensor).mul(c.lambdaRank);
}

/** The rank directions are training state, not part of the adapter. */
function tensorsToSave(_info: ModelInfo, _c: SaraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  return new Map([...tensors].filter(([k]) => !k.endsWith(".sara.rank_direction")));
}

function tensorsFromSaved(info: ModelInfo, c: SaraConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(saved);
  if (c.lambdaRank > 0) for (const t of saraTargets(info, c)) out.set(rankKey(t), hostTensor("f32", [t.k]));
  return out;
}

function expectedTensors(info: ModelInfo, c: SaraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const t of saraTargets(info, c)) {
    const k = saraKeys(t);
    out.set(k.indices, [t.k]);
    out.set(k.values, [t.k]);
  }
  return out;
}

function wrap(base: ForwardContext, info: ModelInfo, c: SaraConfig, opts: WrapOptions): ForwardContext {
  return new SparseDeltaContext(base, saraTargets(info, c), saraKeys, opts);
}

export const SARA: Tuner<SaraConfig> = {
  peftType: "SARA",
  parseConfig: parseSaraConfig,
  toJson: saraConfigJson,
  create,
  expectedTensors,
  trainable: (key) => key.endsWith(".sara.values"),
  controller: saraController,
  loss,
  wrap,
  tensorsToSave,
  tensorsFromSaved,
  merge: (info, c, tensors) => mergeSparse(info, saraTargets(info, c), saraKeys, tensors, "SARA merge"),
  supportsMixedBatch: true,
};
