import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { TrainStep } from "../engine/optim/train-step.js";
import { crossEntropy } from "../engine/trace/composites.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { WeightContext } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { prepareBatch, stepBatchDecls, stepModelInputs } from "../tuners/train.js";
import { drawRng, hftTensors, LayerSelectionError, lisaLayers, sampleWithoutReplacement } from "./layer-selection.js";
import { hftPolicy, lisaPolicy, type SelectionPolicy, SelectiveTrainer } from "./selective.js";

const CONFIG = JSON.parse(readFileSync(join(GOLDEN_MODELS, "llama_gqa_tied", "config.json"), "utf8"));
/** Four layers, so γ = 2 leaves two frozen. */
const model4 = (seed = 1) => PreTrainedModel.fromConfig({ ...CONFIG, num_hidden_layers: 4 }, "causal_lm", { seed });
const SEQ = [
  [5, 17, 99, 3, 42, 7, 7, 120, 64, 1],
  [9, 8, 200, 31, 4, 77, 12, 6, 130, 2],
];
const BATCH = { inputIds: SEQ, labels: SEQ };

const snapshot = (m: PreTrainedModel) => new Map([...m.weights].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
const changedNames = (before: Map<string, Float32Array>, m: PreTrainedModel) =>
  [...before].filter(([k, v]) => !v.every((x, i) => Object.is(x, (m.weights.get(k) as HostTensor).data[i]))).map(([k]) => k);

test("LISA trains exactly γ sampled layers plus embeddings, final norm and head between switches; the rest stays bit-identical", async () => {
  const model = model4();
  const layout = SelectiveTrainer.layout(model);
  assert.deepEqual(layout.outside, ["model.embed_tokens.weight", "model.norm.weight"]);
  const t = SelectiveTrainer.create(model, lisaPolicy(layout, 7, { layers: 2, interval: 3 }));
  for (const interval of [0, 1]) {
    const before = snapshot(model);
    for (let i = 0; i < 3; i++) await t.train(BATCH, { lr: 1e-2 });
    const layers = lisaLayers(7, interval * 3, { layers: 2, interval: 3 }, 4);
    assert.deepEqual(t.current?.layers, layers);
    const expected = [...layout.outside, ...layers.flatMap((l) => layout.blocks[l])];
    // the tied head is the embedding: it changes with it
    expected.push("lm_head.weight");
    assert.deepEqual(changedNames(before, model).sort(), expected.sort(), `interval ${interval}`);
  }
  assert.equal(model.weights.get("lm_head.weight"), model.weights.get("model.embed_tokens.weight"));
  await t.release();
  await model.release();
});

test("LISA's layers follow the documented generator: draw i = partial Fisher–Yates on Rng(mix(seed, i)), uniform over layers", () => {
  // pinned: the draws of seed 0 on 30 layers, γ = 2, K = 20 (docs/methods/lisa.md)
  const draws = [0, 20, 40, 60].map((s) => lisaLayers(0, s, { layers: 2, interval: 20 }, 30));
  assert.deepEqual(draws, PINNED_DRAWS);
  assert.deepEqual(lisaLayers(0, 19, { layers: 2, interval: 20 }, 30), draws[0]);
  assert.deepEqual(lisaLayers(5, 40, { layers: 3, interval: 20 }, 30), sampleWithoutReplacement(30, 3, drawRng(5, 2)));
  const counts = new Array(10).fill(0);
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const d = lisaLayers(1, i, { layers: 3, interval: 1 }, 10);
    assert.equal(new Set(d).size, 3);
    for (const l of d) counts[l]++;
  }
  // each layer is drawn with probability γ/L = 0.3 (binomial sd ≈ 65 of 6000)
  for (const c of counts) assert.ok(Math.abs(c - 0.3 * n) < 300, `counts ${counts}`);
});
const PINNED_DRAWS = [
  [4, 22],
  [11, 26],
  [5, 15],
  [16, 27],
];

test("HFT trains exactly half of each block pair's matrices per stage: 2 of 4 attention, 1 or 2 of 3 FFN; a new half each stage", async () => {
  const model = model4(2);
  const layout = SelectiveTrainer.layout(model);
  for (const stage of [0, 1, 2]) {
    const sel = hftTensors(layout, 11, stage);
    let ffnOnes = 0;
    layout.blocks.forEach((_, l) => {
      const mine = sel.filter((n) => n.startsWith(`model.layers.${l}.`));
      const attn = mine.filter((n) => /self_attn\.[qkvo]_proj\.weight$/.test(n));
      const ffn = mine.filter((n) => /mlp\.(gate|up|down)_proj\.weight$/.test(n));
      assert.equal(attn.length, 2);
      assert.ok(ffn.length === 1 || ffn.length === 2);
      assert.equal(mine.length, attn.length + ffn.length);
      if (ffn.length === 1) ffnOnes++;
    });
    assert.equal(ffnOnes, 2);
    assert.equal(sel.length, (4 * 7) / 2);
  }
  assert.notDeepEqual(hftTensors(layout, 11, 0), hftTensors(layout, 11, 1));
  const t = SelectiveTrainer.create(model, hftPolicy(layout, 11, { stageSteps: 2 }));
  for (const stage of [0, 1]) {
    const before = snapshot(model);
    for (let i = 0; i < 2; i++) await t.train(BATCH, { lr: 1e-2 });
    assert.deepEqual(changedNames(before, model).sort(), [...hftTensors(layout, 11, stage)].sort());
  }
  await t.release();
  await model.release();
});

test("γ larger than the number of layers, or K < 1: one clear error naming the flag", () => {
  const layout = SelectiveTrainer.layout(model4());
  assert.throws(
    () => lisaPolicy(layout, 0, { layers: 5 }),
    (e: Error) => {
      assert.ok(e instanceof LayerSelectionError);
      assert.equal(e.message, "--lisa-layers: 5 is not a layer count in 1..4 (the model has 4 layers)");
      return true;
    },
  );
  assert.throws(() => lisaPolicy(layout, 0, { interval: 0 }), /--lisa-interval: 0 is not a step count >= 1/);
});

/**
 * Reference for switching: one step graph over every tensor with per-element update gates (0/1
 * per tensor, set from the policy), and at a switch the optimizer state of the tensors switched
 * off zeroed (moments and step counts). A different mechanism from the per-selection graphs.
 */
async function gatedReference(model: PreTrainedModel, policy: SelectionPolicy, steps: number): Promise<void> {
  const { names, aliases } = SelectiveTrainer.distinctWeights(model);
  const params = Object.fromEntries(names.map((k) => [k, model.weights.get(k) as HostTensor]));
  const step = await TrainStep.create(
    {
      params: Object.fromEntries(names.map((k) => [k, { dtype: params[k].dtype, shape: params[k].shape }])),
      batch: stepBatchDecls(model.head, false),
      optimizer: { kind: "adamw" },
      clipNorm: 1,
      gatedUpdates: true,
      loss: ({ params: p, batch }) => {
        const ctx = new WeightContext((n) => p[aliases.get(n) ?? n], new Set(model.weights.keys()));
        return crossEntropy(model.traceForward(ctx, stepModelInputs(batch)).logits!, batch.labels, { ignoreIndex: -100 });
      },
    },
    { params },
  );
  let on = new Set<string>();
  for (let i = 0; i < steps; i++) {
    const next = new Set(policy.select(i).tensors);
    for (const k of names) {
      if (on.has(k) && !next.has(k)) {
        const s = step.parameterState(k);
        step.setParameterState(k, {
          exp_avg: { ...s.exp_avg, data: new Float32Array(s.exp_avg.data.length) },
          exp_avg_sq: { ...s.exp_avg_sq, data: new Float32Array(s.exp_avg.data.length) },
          update_count: { ...s.update_count, data: new Float32Array(s.exp_avg.data.length) },
        });
      }
      step.setUpdateGate(k, next.has(k));
    }
    on = next;
    await step.step(prepareBatch(model.head, BATCH), { lr: 1e-2, seed: i + 1 });
  }
  const p = step.getParams();
  for (const [k, t] of Object.entries(p)) model.weights.set(k, t);
  for (const [alias, first] of aliases) model.weights.set(alias, p[first]);
  await step.release();
}

test("switching selections (state dropped, re-activated layers fresh) equals one all-tensor graph with per-tensor update gates and state resets", async () => {
  const a = model4(3);
  const b = model4(3);
  const layout = SelectiveTrainer.layout(a);
  // K = 2 over 6 steps: layers {1,2}, then {0,3}, then {1,2} again (re-activated with fresh state)
  const policy = lisaPolicy(layout, 4, { layers: 2, interval: 2 });
  const keys = [0, 2, 4].map((s) => policy.select(s).key);
  assert.deepEqual(keys, ["lisa:1,2", "lisa:0,3", "lisa:1,2"]);
  const t = SelectiveTrainer.create(a, policy, { clipNorm: 1 });
  for (let i = 0; i < 6; i++) await t.train(BATCH, { lr: 1e-2, seed: i + 1 });
  assert.equal(t.switchStats.switches, 3);
  await t.release();
  await gatedReference(b, policy, 6);
  let worst = 0;
  for (const [k, w] of a.weights) {
    const r = b.weights.get(k) as HostTensor;
    for (let i = 0; i < w.data.length; i++) worst = Math.max(worst, Math.abs(Number(w.data[i]) - Number(r.data[i])));
  }
  // lr 1e-2 for 6 steps moves weights by ~6e-2; measured: bit-identical (same f32 arithmetic)
  assert.ok(worst <= 1e-6, `max |Δ| ${worst}`);
});

test("resume: a run checkpointed between switches and restored into a fresh model ends bit-identical to an uninterrupted one", async () => {
  const run = async (split: number | null) => {
    const m = model4(5);
    const policy = lisaPolicy(SelectiveTrainer.layout(m), 9, { layers: 1, interval: 2 });
    let t = SelectiveTrainer.create(m, policy, { clipNorm: 1 });
    let i = 0;
    for (; i < (split ?? 0); i++) await t.train(BATCH, { lr: 1e-2, seed: i + 1 });
    if (split !== null) {
      const ck = t.checkpointState();
      const tensors = new Map([...t.changedTensors()].map(([k, v]) => [k, { ...v, data: Float32Array.from(v.data as Float32Array) }]));
      const opt = Object.fromEntries(
        Object.entries(ck.optimizer).map(([k, v]) => [k, { ...v, data: Float32Array.from(v.data as Float32Array) }]),
      );
      await t.release();
      const fresh = model4(5);
      t = SelectiveTrainer.create(fresh, lisaPolicy(SelectiveTrainer.layout(fresh), 9, { layers: 1, interval: 2 }), { clipNorm: 1 });
      await t.restore(ck.step, ck.selection, opt, tensors);
    }
    for (; i < 7; i++) await t.train(BATCH, { lr: 1e-2, seed: i + 1 });
    await t.release();
    return t.model;
  };
  const whole = await run(null);
  const resumed = await run(3);
  for (const [k, w] of whole.weights) assert.deepEqual(resumed.weights.get(k)?.data, w.data, k);
});
