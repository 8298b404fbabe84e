/**
 * ID³ (incremental unmasking): each targeted linear layer holds slots `<module>.id3.indices` [C]
 * (i32 positions) and `<module>.id3.values` [C] (trained deltas), C = min(B, the layer's size),
 * all masked at first (update gates closed, values 0, positions placeholders). After every step
 * the controller (controller.ts) reads each layer's top D³ scores among its still-masked entries
 * (a sparseLinear tap) and unmasks the schedule's count of the global best into free slots.
 * y = x·(W + S)ᵀ + b with the shared sparse machinery (src/sparse/).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { zeros } from "../../engine/trace/tensor.js";
import type { ForwardContext } from "../../nn/context.js";
import { mergeSparse, SparseDeltaContext, type SparseTarget } from "../../sparse/adapter.js";
import type { SparseLinearTaps } from "../../sparse/linear.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import type { CreatedAdapter, ModelInfo, Tuner, WrapOptions } from "../tuner.js";
import { type Id3Config, id3ConfigJson, parseId3Config } from "./config.js";
import { id3Controller, scoreName, tapWidth } from "./controller.js";
import { id3Keys, id3Targets, usedKey } from "./layers.js";

const RANDOM_STD = 0.1;

function create(info: ModelInfo, c: Id3Config, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const t of id3Targets(info, c)) {
    const k = id3Keys(t);
    const draw = rng.fork();
    tensors.set(
      k.indices,
      hostTensor(
        "i32",
        [t.k],
        Int32Array.from({ length: t.k }, (_, i) => i),
      ),
    );
    tensors.set(k.values, hostTensor("f32", [t.k], c.initWeights ? new Float32Array(t.k) : fillNormal(t.k, RANDOM_STD, draw)));
    tensors.set(usedKey(t), hostTensor("f32", [t.k], new Float32Array(t.k).fill(c.initWeights ? 0 : 1)));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: Id3Config): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const t of id3Targets(info, c)) {
    const k = id3Keys(t);
    out.set(k.indices, [t.k]);
    out.set(k.values, [t.k]);
  }
  return out;
}

/** The step reports each layer's best D³ scores among its masked entries (controller.ts). */
function taps(t: SparseTarget, c: Id3Config, width: number, opts: WrapOptions): SparseLinearTaps {
  const probe = opts.probe as NonNullable<WrapOptions["probe"]>;
  const m = Math.min(width, t.shape[0] * t.shape[1]);
  const slot = zeros([3, m]);
  // The first micro-batch's scores: a top-m list has no mean over micro-batches.
  probe(scoreName(t.key), slot, (_v, g) => g, { combine: "first" });
  return {
    topScores: { slot, m, eps: c.eps, exp: c.exp, exclude: { indices: opts.tensor(id3Keys(t).indices), weight: opts.tensor(usedKey(t)) } },
  };
}

function wrap(base: ForwardContext, info: ModelInfo, c: Id3Config, opts: WrapOptions): ForwardContext {
  const targets = id3Targets(info, c);
  const width = opts.probe ? tapWidth(info, c) : 0;
  const tapped = opts.probe && width > 0 ? (t: SparseTarget) => taps(t, c, width, opts) : undefined;
  return new SparseDeltaContext(base, targets, id3Keys, opts, tapped);
}

/**
 * Saved as a sparse delta per layer: slots ordered by position (the format's rule), without the
 * training-only `used` flags. Free slots hold distinct placeholder positions with value 0, which
 * change nothing.
 */
function tensorsToSave(info: ModelInfo, c: Id3Config, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const targets = id3Targets(info, c);
  const used = new Set(targets.map(usedKey));
  // Everything else the adapter holds (modules_to_save copies: a classifier head) is saved as is.
  const out = new Map([...tensors].filter(([k]) => !used.has(k)));
  for (const t of targets) {
    const k = id3Keys(t);
    const idx = tensors.get(k.indices)?.data as Int32Array;
    const val = tensors.get(k.values)?.data as Float32Array;
    const order = Array.from(idx.keys()).sort((a, b) => idx[a] - idx[b]);
    out.set(
      k.indices,
      hostTensor(
        "i32",
        [t.k],
        Int32Array.from(order, (s) => idx[s]),
      ),
    );
    out.set(
      k.values,
      hostTensor(
        "f32",
        [t.k],
        Float32Array.from(order, (s) => val[s]),
      ),
    );
  }
  return out;
}

/** A loaded folder's unmasked entries are its nonzero values (what a resumed run needs comes from its checkpoint). */
function tensorsFromSaved(info: ModelInfo, c: Id3Config, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(saved);
  for (const t of id3Targets(info, c)) {
    const val = saved.get(id3Keys(t).values)?.data as Float32Array;
    out.set(
      usedKey(t),
      hostTensor(
        "f32",
        [t.k],
        Float32Array.from(val, (v) => (v !== 0 ? 1 : 0)),
      ),
    );
  }
  return out;
}

export const ID3: Tuner<Id3Config> = {
  peftType: "ID3",
  parseConfig: parseId3Config,
  toJson: id3ConfigJson,
  create,
  expectedTensors,
  trainable: (key) => key.endsWith(".id3.values"),
  controller: id3Controller,
  wrap,
  tensorsToSave,
  tensorsFromSaved,
  merge: (info, c, tensors) => mergeSparse(info, id3Targets(info, c), id3Keys, tensorsToSave(info, c, tensors), "ID3 merge"),
  supportsMixedBatch: true,
};
