/**
 * DSEE's pruning (prune.ts) against references written here from the definition: a lexicographic
 * sort of (score, layer, position) over the whole pool, scores computed in float64 loops from
 * the weights and the adapter's A, B, S.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { loadTestModel } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import type { DseeConfig } from "./config.js";
import { dseeKeys, dseeLayers } from "./index.js";
import { dseePruning, otherLinearWeights, smallestEntries } from "./prune.js";

const CONFIG = { peft_type: "DSEE", r: 4, lora_alpha: 8, num_sparse: 12, init_lora_weights: false };

/** The k smallest of (score, group, position), lexicographically: per group, increasing positions. */
function reference(groups: { weight: string; scores: ArrayLike<number> }[], k: number): Map<string, number[]> {
  const all: [number, number, number][] = [];
  groups.forEach((g, gi) => {
    for (let p = 0; p < g.scores.length; p++) all.push([g.scores[p], gi, p]);
  });
  all.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  const out = new Map<string, number[]>();
  for (const [, gi, p] of all.slice(0, k)) {
    const w = groups[gi].weight;
    out.set(w, [...(out.get(w) ?? []), p]);
  }
  for (const v of out.values()) v.sort((a, b) => a - b);
  return out;
}

const pruned = (deltas: ReadonlyMap<string, { indices: Int32Array }>, names: readonly string[]) =>
  new Map(names.filter((n) => deltas.has(n)).map((n) => [n, [...(deltas.get(n)?.indices ?? [])]]));

test("smallestEntries: exactly k over all groups; ties at the threshold go to the earlier group, then the lower position", () => {
  const groups = [
    { weight: "a", scores: Float32Array.from([1, 0.5, 0.5]) },
    { weight: "b", scores: Float32Array.from([0.5, 2, 0.1]) },
  ];
  const got = (k: number) => smallestEntries(groups, k).map((x) => [...x]);
  assert.deepEqual(got(0), [[], []]);
  assert.deepEqual(got(1), [[], [2]]);
  assert.deepEqual(got(3), [[1, 2], [2]]);
  assert.deepEqual(got(4), [
    [1, 2],
    [0, 2],
  ]);
  assert.deepEqual(got(6), [
    [0, 1, 2],
    [0, 1, 2],
  ]);
  assert.throws(() => smallestEntries(groups, 7), /cannot prune 7 of 6/);
});

test("DSEE pruning: round(R·n) entries of the other linear weights by |W| (global), values −W; q/v not among them", async () => {
  for (const name of ["llama_basic", "gpt2"] as const) {
    const model = await loadTestModel(name);
    const peft = PeftModel.create(model, CONFIG, { seed: 4 });
    const a = peft.adapter("default");
    const c = a.config as DseeConfig;
    const info = peft.info;
    const others = otherLinearWeights(info, c);
    const adapted = new Set(dseeLayers(info, c).map((l) => l.sparse.weight));
    assert.ok(others.length > 0 && others.every((w) => !adapted.has(w)), others.join());
    const groups = others.map((weight) => ({ weight, scores: Array.from(info.weight(weight).data as Float32Array, Math.abs) }));
    const n = groups.reduce((s, g) => s + g.scores.length, 0);
    const p = dseePruning(info, c, a.tensors, { pruning: 0.3, adPruning: 0 });
    assert.equal(p.other.total, n);
    assert.equal(p.other.pruned, Math.round(0.3 * n));
    assert.equal(p.adapted.pruned, 0);
    assert.deepEqual(pruned(p.delta.deltas, others), reference(groups, Math.round(0.3 * n)), name);
    const count = [...p.delta.deltas.values()].reduce((s, d) => s + d.indices.length, 0);
    assert.equal(count, Math.round(0.3 * n));
    for (const [w, d] of p.delta.deltas) {
      const wd = info.weight(w).data as Float32Array;
      d.indices.forEach((q, i) => {
        assert.equal(d.values[i], -wd[q], `${w}[${q}]`);
      });
    }
    await model.release();
  }
});

/** |s·B·A + s·S| in float64, in the stored layout, straight from the tensors. */
function updateScores(peft: PeftModel, tensors: ReadonlyMap<string, HostTensor>): { weight: string; scores: number[] }[] {
  const c = peft.adapter("default").config as DseeConfig;
  return dseeLayers(peft.info, c).map(({ lora, sparse }) => {
    const A = tensors.get(`${lora.key}.lora_A.weight`)?.data as Float32Array;
    const B = tensors.get(`${lora.key}.lora_B.weight`)?.data as Float32Array;
    const s = c.loraAlpha / c.r;
    const [out, inn, r] = [lora.outFeatures, lora.inFeatures, c.r];
    const stored = (o: number, i: number) => (peft.info.fanInFanOut ? i * out + o : o * inn + i);
    const d = new Array<number>(out * inn).fill(0);
    for (let o = 0; o < out; o++)
      for (let i = 0; i < inn; i++) {
        let acc = 0;
        for (let j = 0; j < r; j++) acc += B[o * r + j] * A[j * inn + i];
        d[stored(o, i)] = s * acc;
      }
    const k = dseeKeys(sparse);
    const idx = tensors.get(k.indices)?.data as Int32Array;
    const val = tensors.get(k.values)?.data as Float32Array;
    idx.forEach((q, j) => {
      d[q] += s * val[j];
    });
    return { weight: sparse.weight, scores: d.map(Math.abs) };
  });
}

test("DSEE pruning: q/v by the update's magnitude |s·(B·A + S)| (global over q and v), not by |W|", async () => {
  for (const name of ["llama_basic", "gpt2"] as const) {
    const model = await loadTestModel(name);
    const peft = PeftModel.create(model, CONFIG, { seed: 5 });
    const a = peft.adapter("default");
    const c = a.config as DseeConfig;
    const groups = updateScores(peft, a.tensors);
    const n = groups.reduce((s, g) => s + g.scores.length, 0);
    const k = Math.round(0.25 * n);
    const p = dseePruning(peft.info, c, a.tensors, { pruning: 0, adPruning: 0.25 });
    assert.deepEqual([p.adapted.pruned, p.adapted.total, p.other.pruned], [k, n, 0]);
    const names = groups.map((g) => g.weight);
    const want = reference(groups, k);
    assert.deepEqual(pruned(p.delta.deltas, names), want, name);
    // |W| would choose otherwise: the score is what decides.
    const byW = reference(
      names.map((weight) => ({ weight, scores: Array.from(peft.info.weight(weight).data as Float32Array, Math.abs) })),
      k,
    );
    assert.notDeepEqual(byW, want);
    await model.release();
  }
});
