/**
 * DSEE's sparse final model (VITA-Group/DSEE run_glue_prune_with_WAB.py, mode "ABS"): after
 * training, unstructured magnitude pruning of the base weights, as two global pools:
 *
 *   the other linear layers (the authors' "key"/"dense"/"in_proj": every linear layer but the
 *   output head that DSEE does not adapt — k, o, gate, up, down on Llama) by |W|, pruning_ratio;
 *   the adapted layers (q, v) by the score |ΔW| = |s·B·A + s·S| (s·S unscaled with
 *   sparse_scaling false: the update itself), ad_pruning_ratio.
 *
 * In each pool exactly round(ratio · entries) entries are pruned, the smallest scores first; ties at
 * the threshold go to the earlier layer (the order of the model's linear layers), then the lower
 * position in the weight's stored layout. The pruned base is a sparse delta: −W at the pruned
 * positions (docs/formats/sparse-delta.md), for the unpruned base's fingerprint.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import type { SparseDelta } from "../../sparse/delta.js";
import type { SparseDeltaSet } from "../../sparse/format.js";
import { weightsFingerprint } from "../../util/fingerprint.js";
import { loraKeys, scaledDelta } from "../lora/layers.js";
import type { ModelInfo } from "../tuner.js";
import type { DseeConfig } from "./config.js";
import { dseeKeys, dseeLayers } from "./index.js";

export interface PruneGroup {
  /** The base weight's canonical name. */
  weight: string;
  /** One score per entry of the weight, in its stored layout. */
  scores: Float32Array | Float64Array;
}

/**
 * The `k` entries with the smallest scores over all groups, per group as increasing positions.
 * Ties at the k-th score are taken in group order, then position order.
 */
export function smallestEntries(groups: readonly PruneGroup[], k: number): Int32Array[] {
  const n = groups.reduce((a, g) => a + g.scores.length, 0);
  if (!(Number.isInteger(k) && k >= 0 && k <= n)) throw new RangeError(`cannot prune ${k} of ${n} entries`);
  if (k === 0) return groups.map(() => new Int32Array(0));
  const all = new Float64Array(n);
  let at = 0;
  for (const g of groups) {
    all.set(g.scores, at);
    at += g.scores.length;
  }
  all.sort();
  const t = all[k - 1];
  let below = 0;
  for (const g of groups) for (const v of g.scores) if (v < t) below++;
  let ties = k - below;
  return groups.map((g) => {
    const out: number[] = [];
    g.scores.forEach((v, p) => {
      if (v < t) out.push(p);
      else if (v === t && ties > 0) {
        out.push(p);
        ties--;
      }
    });
    return Int32Array.from(out);
  });
}

/** Entries to prune out of n: round(ratio · n). */
export const pruneCount = (ratio: number, n: number): number => Math.round(ratio * n);

/** The linear layers DSEE does not adapt (the output head aside): pruned by |W|. */
export function otherLinearWeights(info: ModelInfo, c: DseeConfig): string[] {
  const adapted = new Set(dseeLayers(info, c).map((l) => l.lora.path));
  return info.allLinear.filter((p) => !adapted.has(p)).map((p) => `${p}.weight`);
}

/** |W| of each other linear layer. */
export function magnitudeGroups(info: ModelInfo, c: DseeConfig): PruneGroup[] {
  return otherLinearWeights(info, c).map((weight) => ({
    weight,
    scores: Float32Array.from(info.weight(weight).data as Float32Array, Math.abs),
  }));
}

/** |s·B·A + s·S| of each adapted layer, in the weight's stored layout (float64). */
export function updateGroups(info: ModelInfo, c: DseeConfig, tensors: ReadonlyMap<string, HostTensor>): PruneGroup[] {
  return dseeLayers(info, c).map(({ lora, sparse, sparseScale }) => {
    const k = loraKeys(lora);
    const a = tensors.get(k.a);
    const b = tensors.get(k.b);
    const s = dseeKeys(sparse);
    const idx = tensors.get(s.indices)?.data as Int32Array | undefined;
    const val = tensors.get(s.values)?.data as Float32Array | undefined;
    if (!a || !b || !idx || !val) throw new Error(`DSEE pruning: the adapter lacks the tensors of "${lora.key}"`);
    const d = scaledDelta(lora, a, b).data;
    const out = lora.outFeatures;
    const inn = lora.inFeatures;
    const scores = new Float64Array(out * inn);
    // Stored layout: [out, in], or [in, out] for GPT-2's Conv1D.
    if (info.fanInFanOut) for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) scores[i * out + o] = d[o * inn + i];
    else scores.set(d);
    for (let j = 0; j < idx.length; j++) scores[idx[j]] += sparseScale * val[j];
    for (let p = 0; p < scores.length; p++) scores[p] = Math.abs(scores[p]);
    return { weight: sparse.weight, scores };
  });
}

export interface DseePruning {
  /** −W at the pruned positions, for the unpruned base. */
  delta: SparseDeltaSet;
  /** Entries pruned / entries in each pool. */
  other: { pruned: number; total: number };
  adapted: { pruned: number; total: number };
}

/** The pruned base as a sparse delta, from a trained DSEE adapter's tensors and the unpruned base. */
export function dseePruning(
  info: ModelInfo,
  c: DseeConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  ratios: { pruning: number; adPruning: number },
): DseePruning {
  const deltas = new Map<string, SparseDelta>();
  const pool = (groups: PruneGroup[], ratio: number) => {
    const total = groups.reduce((a, g) => a + g.scores.length, 0);
    const k = pruneCount(ratio, total);
    smallestEntries(groups, k).forEach((positions, i) => {
      if (positions.length === 0) return;
      const w = info.weight(groups[i].weight);
      const wd = w.data as Float32Array;
      deltas.set(groups[i].weight, { shape: [...w.shape], indices: positions, values: Float32Array.from(positions, (p) => -wd[p]) });
    });
    return { pruned: k, total };
  };
  const other = pool(magnitudeGroups(info, c), ratios.pruning);
  const adapted = pool(updateGroups(info, c, tensors), ratios.adPruning);
  const base = new Map(info.weightNames().map((n) => [n, info.weight(n)]));
  return { delta: { deltas, baseModel: weightsFingerprint(base) }, other, adapted };
}
