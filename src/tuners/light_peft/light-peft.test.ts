import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import { prunableShape, pruneModel } from "../../prune/heads-ffn.js";
import { modelForAdapter, writePlan, writePrunedModel } from "../../prune/heads-ffn-files.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { loraKeys, loraLayers } from "../lora/layers.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { LightPeftConfig } from "./config.js";
import { maskSites, recordedImportance, SCORE_STEPS } from "./index.js";
import { adapterPlan, backbonePlan, keptByQuantile, prunedCount, quantileLinear } from "./plan.js";
import { phase2LoraConfig, phase2LoraTensors } from "./prune-adapter.js";

const CONFIG = { peft_type: "LIGHT_PEFT", r: 4, lora_alpha: 8, target_modules: "all-linear" };

runConformance({ name: "LIGHT_PEFT (MHA)", model: "llama_basic", identityConfig: CONFIG, config: { ...CONFIG, init_lora_weights: false } });
runConformance({
  name: "LIGHT_PEFT (GQA)",
  model: "llama_gqa_tied",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_lora_weights: false },
});

const logits = async (m: { forward: PeftModel["forward"] }, ids: number[][]) =>
  Float32Array.from((await m.forward({ inputIds: ids })).logits?.data as Float32Array);

test("quantile rule = numpy.quantile (linear) on hand cases; ties at the threshold are pruned; ratio 0 prunes nothing", () => {
  // Values from numpy 2.4.6 np.quantile; by hand: sorted position (n−1)·q, then linear interpolation.
  assert.equal(quantileLinear([1, 2, 3, 4, 10], 0.3), 2.2); // position 1.2: 2 + 0.2·(3 − 2)
  assert.equal(quantileLinear([3, 1, 2, 2], 0.5), 2); // position 1.5 between two 2s
  assert.equal(quantileLinear([0, 1, 5, 9], 0.6), 4.199999999999999); // numpy's lerp from above: 5 − 4·(1 − 0.8)
  assert.equal(quantileLinear([0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.8, 0.4, 0.6], 1 / 3), 0.36666666666666664);
  assert.deepEqual(keptByQuantile([3, 1, 2, 2], 0.5), [true, false, false, false]);
  assert.deepEqual(keptByQuantile([5, 5, 5], 0.5), [false, false, false]);
  assert.deepEqual(keptByQuantile([5, 5, 5], 0), [true, true, true]);
  // Distinct scores: the rule prunes ⌊(n−1)q⌋+1 of them.
  for (const [n, q] of [
    [9, 1 / 3],
    [3, 1 / 3],
    [4, 0.5],
    [1536, 1 / 3],
  ] as const) {
    const v = Array.from({ length: n }, (_, i) => (i * 7919) % n);
    assert.equal(keptByQuantile(v, q).filter((k) => !k).length, prunedCount(n, q), `n=${n} q=${q}`);
  }
  const plan = adapterPlan(
    new Map([
      ["a", 0.1],
      ["b", 0.4],
      ["c", 0.3],
      ["d", 0.2],
    ]),
    new Map([
      ["a", [1, 2]],
      ["b", [0.5, 3]],
      ["c", [0.1, 4]],
      ["d", [9, 9]],
    ]),
    0.5, // modules: quantile 0.25 → keep b and c
    0.5, // ranks of b, c: [0.5, 3, 0.1, 4], quantile 1.75 → keep 3 and 4
  );
  assert.deepEqual(
    [...plan.ranks],
    [
      ["b", [1]],
      ["c", [1]],
    ],
  );
});

function setTensors(peft: PeftModel, f: (key: string, t: HostTensor) => HostTensor | null): void {
  const t = new Map(peft.adapter("default").tensors);
  for (const [k, v] of t) {
    const n = f(k, v);
    if (n) t.set(k, n);
  }
  peft.setAdapterTensors("default", t);
}

/**
 * Masks: 1 on the kept units and 0 on the pruned ones of a plan drawn from random scores; the
 * masked phase-1 model must equal the pruned model with the sliced LoRA.
 */
async function maskedVsPruned(name: "llama_basic" | "llama_gqa_tied", rankRatio: number) {
  const model = await loadTestModel(name);
  const o = prunableShape(model);
  const rng = new Rng(11);
  const peft = PeftModel.create(model, { ...CONFIG, init_lora_weights: false }, { seed: 3 });
  const info = peft.info;
  const c = peft.adapter("default").config as LightPeftConfig;
  const sites = maskSites(info);
  const scores = new Map(sites.map((s) => [s.key, Float32Array.from({ length: s.size }, () => rng.next())]));
  const heads = sites.filter((s) => s.kind === "head").map((s) => scores.get(s.key) as Float32Array);
  const neurons = sites.filter((s) => s.kind === "neuron").map((s) => scores.get(s.key) as Float32Array);
  const backbone = backbonePlan(o, heads, neurons, 1 / 3, 1 / 3);
  assert.equal(backbone.layers[0].kvHeads.length, o.kvHeads - prunedCount(o.kvHeads, 1 / 3));
  assert.equal(backbone.layers[0].neurons.length, o.intermediate - prunedCount(o.intermediate, 1 / 3));
  // Masks of the kept units 1, the pruned ones 0.
  const perKv = o.heads / o.kvHeads;
  setTensors(peft, (k) => {
    const s = sites.find((x) => x.key === k);
    if (!s) return null;
    const l = backbone.layers[s.layer];
    const keep = new Set(s.kind === "head" ? l.kvHeads : l.neurons);
    return hostTensor(
      "f32",
      [s.size],
      Float32Array.from({ length: s.size }, (_, j) => (keep.has(s.kind === "head" ? Math.floor(j / perKv) : j) ? 1 : 0)),
    );
  });
  // Module and rank plans from random scores (half the modules go, then rankRatio of the ranks).
  const layers = loraLayers(info, c);
  const ranks = new Map(layers.map((l) => [l.key, Array.from({ length: l.r }, () => rng.next())]));
  const aplan = adapterPlan(new Map(layers.map((l) => [l.key, rng.next()])), ranks, 0.5, rankRatio);
  assert.ok(aplan.ranks.size > 0 && aplan.ranks.size <= layers.length / 2);
  // The masked model with the dropped modules' and ranks' B columns zeroed is what the pruned model must compute.
  setTensors(peft, (k, t) => {
    const l = layers.find((x) => loraKeys(x).b === k);
    if (!l) return null;
    const keep = new Set(aplan.ranks.get(l.key) ?? []);
    const d = Float32Array.from(t.data as Float32Array);
    for (let i = 0; i < d.length; i++) if (!keep.has(i % l.r)) d[i] = 0;
    return hostTensor("f32", t.shape, d);
  });
  const ids = randomIds(2, 7, 256);
  const masked = await logits(peft, ids);
  const tensors = new Map(peft.adapter("default").tensors);
  const pruned = pruneModel(model, backbone);
  const p2 = PeftModel.create(pruned, phase2LoraConfig(info, c, aplan));
  p2.setAdapterTensors("default", phase2LoraTensors(info, c, tensors, backbone, aplan));
  const got = await logits(p2, ids);
  return { model, pruned, p2, backbone, masked, got, ids, peft };
}

for (const name of ["llama_basic", "llama_gqa_tied"] as const)
  test(`pruning heads (whole KV groups), neurons, LoRA modules and ranks = masking them to 0 (${name})`, async () => {
    const { model, pruned, masked, got } = await maskedVsPruned(name, 0.5);
    const diff = maxAbsDiff(masked, got);
    assert.ok(diff < 1e-5, `pruned vs masked: ${diff}`);
    const base = model.weights.get("model.layers.0.mlp.down_proj.weight") as HostTensor;
    const small = pruned.weights.get("model.layers.0.mlp.down_proj.weight") as HostTensor;
    assert.ok(small.shape[1] < base.shape[1], "down_proj lost columns");
    await pruned.release();
    await model.release();
  });

test("masks fold into o_proj/down_proj columns when merging; masks at 1 and B = 0 leave the logits unchanged", async () => {
  const model = await loadTestModel("llama_gqa_tied");
  const ids = randomIds(2, 6, 256);
  const base = await logits(model, ids);
  const peft = PeftModel.create(model, CONFIG, { seed: 1 });
  assert.ok(maxAbsDiff(await logits(peft, ids), base) < 1e-6);
  const rng = new Rng(5);
  const sites = new Set(maskSites(peft.info).map((s) => s.key));
  setTensors(peft, (k, t) =>
    sites.has(k)
      ? hostTensor(
          "f32",
          t.shape,
          Float32Array.from({ length: t.shape[0] }, () => rng.next() * 2),
        )
      : null,
  );
  const masked = await logits(peft, ids);
  assert.ok(maxAbsDiff(masked, base) > 1e-3, "the masks change nothing");
  peft.mergeAdapter();
  assert.ok(maxAbsDiff(await logits(peft, ids), masked) < 1e-4);
  peft.unmergeAdapter();
  await model.release();
});

test("a pruned adapter saved with pruned_backbone.json loads over the original base (and over the written pruned model) with the same logits", async () => {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-lightpeft-"));
  try {
    const { model, pruned, p2, backbone, got, ids } = await maskedVsPruned("llama_gqa_tied", 0.5);
    const adapter = join(dir, "adapter");
    p2.savePretrained(adapter);
    writePlan(adapter, backbone);
    const fresh = await loadTestModel("llama_gqa_tied");
    const sliced = modelForAdapter(fresh, adapter);
    assert.notEqual(sliced, fresh);
    const loaded = PeftModel.fromPretrained(sliced, adapter);
    assert.ok(maxAbsDiff(await logits(loaded, ids), got) < 1e-6);
    // The pruned base as a model folder; it is not sliced a second time.
    const folder = join(dir, "pruned_model");
    writePrunedModel(pruned, backbone, folder, null);
    const { AutoModelForCausalLM } = await import("../../models/auto.js");
    const reread: PreTrainedModel = await AutoModelForCausalLM.fromPretrained(folder);
    assert.equal(modelForAdapter(reread, adapter), reread);
    const again = PeftModel.fromPretrained(reread, adapter);
    assert.ok(maxAbsDiff(await logits(again, ids), got) < 1e-6);
    for (const m of [model, pruned, fresh, sliced, reread]) await m.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("importance is recorded over the second half of the steps; masks train at their lr multiples, the L1 term is logged", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, { ...CONFIG, attn_mask_lr_mult: 100, ffn_mask_lr_mult: 1 }, { seed: 2 });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 5 });
  const ids = randomIds(2, 6, 256);
  // The L1 term at the first step, all masks at 1: 1e-4 · (number of mask scalars).
  const first = await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 });
  const scalars = maskSites(peft.info).reduce((n, s) => n + s.size, 0);
  assert.ok(Math.abs((first.metrics.method_loss as number) - 1e-4 * scalars) < 1e-6 * scalars, JSON.stringify(first.metrics));
  for (let s = 1; s < 5; s++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 });
  const a = peft.adapter("default");
  const c = a.config as LightPeftConfig;
  for (const l of loraLayers(peft.info, c))
    assert.deepEqual([...((a.tensors.get(`${l.key}${SCORE_STEPS}`) as HostTensor).data as Float32Array)], [3]);
  const imp = recordedImportance(peft.info, c, a.tensors);
  for (const [k, v] of imp.modules) assert.ok(Number.isFinite(v) && v > 0, `${k}: ${v}`);
  for (const [k, v] of imp.ranks) assert.ok(v.every((x) => Number.isFinite(x) && x >= 0) && v.some((x) => x > 0), k);
  // Adam moves every element by about lr·mult per step: heads by ~0.1 each step, neurons by ~1e-3.
  const move = (kind: "head" | "neuron") => {
    let m = 0;
    for (const s of maskSites(peft.info).filter((x) => x.kind === kind))
      for (const v of (a.tensors.get(s.key) as HostTensor).data as Float32Array) m = Math.max(m, Math.abs(v - 1));
    return m;
  };
  assert.ok(move("head") > 0.1 && move("head") < 0.6, `heads moved ${move("head")}`);
  assert.ok(move("neuron") > 1e-4 && move("neuron") < 6e-3, `neurons moved ${move("neuron")}`);
  await trainer.release();
  await model.release();
});

test("encoders are refused in one line; bad config fields name the field", async () => {
  const bert = await loadTestModel("bert_seq_cls");
  assert.throws(
    () => PeftModel.create(bert, { ...CONFIG, task_type: "SEQ_CLS" }),
    /^PeftConfigError: light_peft supports llama, mistral and qwen2 models; this one is bert$/,
  );
  await bert.release();
  const model = await loadTestModel("llama_basic");
  assert.throws(() => PeftModel.create(model, { ...CONFIG, ffn_pruning_ratio: 1 }), /field "ffn_pruning_ratio" must be in \[0, 1\), got 1/);
  assert.throws(
    () => PeftModel.create(model, { ...CONFIG, init_lora_weights: "pissa" }),
    /LIGHT_PEFT needs "init_lora_weights" true, false or "gaussian"/,
  );
  await model.release();
});
