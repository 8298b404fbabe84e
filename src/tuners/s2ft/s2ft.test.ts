import assert from "node:assert/strict";
import { test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { fullFinetuneGradient } from "../increlora/testing.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { S2ftConfig } from "./config.js";
import { indicesKey, s2ftSlices, sliceKey } from "./layers.js";
import { layerOrders, permutedMerge, permutedWeights } from "./permute.js";

const CONFIG = { peft_type: "S2FT", v_ratio: 0.5, o_ratio: 0.5, u_ratio: 0.1, d_ratio: 0.1, seed: 3 };

runConformance({ name: "S2FT (MHA)", model: "llama_basic", identityConfig: CONFIG, config: { ...CONFIG, init_weights: false } });
runConformance({ name: "S2FT (GQA)", model: "llama_gqa_tied", identityConfig: CONFIG, config: { ...CONFIG, init_weights: false } });

const logits = async (m: { forward: PeftModel["forward"] }, ids: number[][]) =>
  (await m.forward({ inputIds: ids })).logits?.data as Float32Array;

test("S2FT selection: ⌊units·layers·ratio⌋ draws per kind; with GQA V rows and O columns cover whole KV groups", async () => {
  const model = await loadTestModel("llama_gqa_tied"); // 4 query heads, 2 KV heads, head_dim 16, 2 layers, 64 channels
  const peft = PeftModel.create(model, { ...CONFIG, v_ratio: 0.5, o_ratio: 0.75 });
  const slices = s2ftSlices(peft.info, peft.adapter("default").config as S2ftConfig);
  const count = (suffix: string) => slices.filter((s) => s.path.endsWith(suffix)).reduce((a, s) => a + s.indices.length, 0);
  assert.equal(count("v_proj"), Math.floor(2 * 2 * 0.5) * 16);
  assert.equal(count("o_proj"), Math.floor(2 * 2 * 0.75) * 32);
  assert.equal(count("up_proj"), Math.floor(64 * 2 * 0.1));
  assert.equal(count("down_proj"), Math.floor(64 * 2 * 0.1));
  for (const s of slices) {
    const block = s.path.endsWith("v_proj") ? 16 : s.path.endsWith("o_proj") ? 32 : 1;
    assert.equal(s.indices.length % block, 0, s.key);
    for (let j = 0; j < s.indices.length; j += block) {
      assert.equal(s.indices[j] % block, 0, `${s.key}: a unit starts on a group boundary`);
      for (let b = 1; b < block; b++) assert.equal(s.indices[j + b], s.indices[j] + b, `${s.key}: the group is whole`);
    }
    for (let j = 1; j < s.indices.length; j++) assert.ok(s.indices[j] > s.indices[j - 1]);
  }
  await model.release();
  const fresh = await loadTestModel("llama_gqa_tied");
  assert.throws(() => PeftModel.create(fresh, { peft_type: "S2FT" }), /S2FT trains nothing: set at least one of v_ratio/);
  assert.throws(() => PeftModel.create(fresh, { peft_type: "S2FT", d_ratio: 1.5 }), /field "d_ratio" must be in \[0, 1\], got 1.5/);
  await fresh.release();
});

for (const name of ["llama_basic", "llama_gqa_tied"] as const)
  test(`S2FT co-permutation leaves the logits unchanged and makes the chosen units contiguous (${name})`, async () => {
    const model = await loadTestModel(name);
    const ids = randomIds(2, 7, 256);
    const before = await logits(model, ids);
    const peft = PeftModel.create(model, { ...CONFIG, init_weights: false }, { seed: 5 });
    const c = peft.adapter("default").config as S2ftConfig;
    const trained = await logits(peft, ids);
    const base = new Map(model.weights);
    // The permuted base alone computes the same function.
    const permuted = permutedWeights(peft.info, c);
    let moved = 0;
    await peft.disableAdapter(async () => {
      for (const [w, t] of permuted) {
        if (maxAbsDiff(t.data as Float32Array, base.get(w)?.data as Float32Array) > 0) moved++;
        model.weights.set(w, t);
      }
      const p = await logits(model, ids);
      assert.ok(maxAbsDiff(p, before) < 1e-5, `permuted base: ${maxAbsDiff(p, before)}`);
    });
    assert.ok(moved > 0, "the permutation moves something");
    // The authors' merged model: permuted weights, slices added into contiguous blocks.
    for (const [w, t] of base) model.weights.set(w, t);
    for (const [w, t] of permutedMerge(peft.info, c, peft.adapter("default").tensors)) model.weights.set(w, t);
    const merged = await peft.disableAdapter(() => logits(peft, ids));
    assert.ok(maxAbsDiff(merged, trained) < 1e-5, `permuted merge vs adapter forward: ${maxAbsDiff(merged, trained)}`);
    for (const o of layerOrders(peft.info, c))
      for (const u of [o.attn, o.ffn]) {
        assert.deepEqual(
          [...u.order].sort((a, b) => a - b),
          u.order.map((_, i) => i),
        );
        assert.ok(u.colsStart <= u.rowsEnd && u.rowsEnd <= u.colsEnd);
      }
    for (const [w, t] of base) model.weights.set(w, t);
    await model.release();
  });

test("S2FT: one step changes only the chosen rows/columns; the slice gradient is those rows/columns of the full ∂L/∂W", async () => {
  const model = await loadTestModel("llama_gqa_tied");
  const peft = PeftModel.create(model, CONFIG, { seed: 1 });
  const c = peft.adapter("default").config as S2ftConfig;
  const ids = randomIds(2, 6, 256);
  const slices = s2ftSlices(peft.info, c);
  const full = new Map<string, Float32Array>();
  for (const s of slices) full.set(s.weight, await fullFinetuneGradient(model, peft, s.weight, ids));
  const baseWeights = new Map([...model.weights].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
  // SGD with lr 1 from zero slices: each slice becomes −∂L/∂S.
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd" } });
  await trainer.train({ inputIds: ids, labels: ids }, { lr: 1 });
  await trainer.release();
  const a = peft.adapter("default");
  for (const s of slices) {
    const g = full.get(s.weight) as Float32Array;
    const got = a.tensors.get(sliceKey(s))?.data as Float32Array;
    const [rows, cols] = s.shape;
    const n = s.indices.length;
    let worst = 0;
    let scale = 0;
    if (s.side === "rows")
      s.indices.forEach((r, j) => {
        for (let k = 0; k < cols; k++) {
          worst = Math.max(worst, Math.abs(-got[j * cols + k] - g[r * cols + k]));
          scale = Math.max(scale, Math.abs(g[r * cols + k]));
        }
      });
    else
      for (let r = 0; r < rows; r++)
        s.indices.forEach((col, j) => {
          worst = Math.max(worst, Math.abs(-got[r * n + j] - g[r * cols + col]));
          scale = Math.max(scale, Math.abs(g[r * cols + col]));
        });
    assert.ok(scale > 0 && worst <= 1e-4 * scale, `${s.key}: |slice grad − full rows/cols| ${worst} (scale ${scale})`);
    assert.deepEqual([...((a.tensors.get(indicesKey(s)) as HostTensor).data as Int32Array)], [...s.indices]);
  }
  // The effective weights: merged, only the chosen rows/columns differ from the base; every other weight is bit-identical.
  peft.mergeAdapter();
  const chosen = new Map(slices.map((s) => [s.weight, s]));
  for (const [name, t] of model.weights) {
    const now = t.data as Float32Array;
    const was = baseWeights.get(name) as Float32Array;
    const s = chosen.get(name);
    const cols = t.shape[1];
    now.forEach((v, i) => {
      const inSlice = s ? (s.side === "rows" ? s.indices.includes(Math.floor(i / cols)) : s.indices.includes(i % cols)) : false;
      if (!inSlice) assert.equal(v, was[i], `${name}[${i}] outside the slices is unchanged`);
    });
    if (s)
      assert.ok(
        now.some((v, i) => v !== was[i]),
        `${name}: the chosen slice changed`,
      );
  }
  peft.unmergeAdapter();
  for (const [name, t] of model.weights) assert.deepEqual(t.data, baseWeights.get(name), `${name} after unmerge`);
  await model.release();
});

test("S2FT refuses a model without LLaMA-style projections, and a saved index out of range", async () => {
  const gpt2 = await loadTestModel("gpt2");
  assert.throws(() => PeftModel.create(gpt2, CONFIG), /S2FT needs decoder layers with self_attn\.q_proj/);
  await gpt2.release();
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, CONFIG);
  const a = peft.adapter("default");
  const [s] = s2ftSlices(peft.info, a.config as S2ftConfig);
  const idx = a.tensors.get(indicesKey(s)) as HostTensor;
  (idx.data as Int32Array)[0] = 10_000;
  assert.throws(() => peft.mergeAdapter(), /S2FT merge: ".*s2ft\.indices"\[0\] = 10000: indices must be increasing and in \[0, \d+\)/);
  await model.release();
});
