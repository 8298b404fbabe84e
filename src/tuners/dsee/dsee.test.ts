import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { adapterDiffs, quietProgress, stopThenResume } from "../../testing/resume.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { fullFinetuneGradient } from "../increlora/testing.js";
import { LORA } from "../lora/index.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { DseeConfig } from "./config.js";
import { dseeKeys, dseeLayers } from "./index.js";

const CONFIG = { peft_type: "DSEE", r: 4, lora_alpha: 8, num_sparse: 12 };

runConformance({ name: "DSEE (omp)", model: "llama_basic", identityConfig: CONFIG, config: { ...CONFIG, init_lora_weights: false } });
runConformance({
  name: "DSEE (grebsmo, GPT-2 Conv1D)",
  model: "gpt2",
  identityConfig: { ...CONFIG, sparse_method: "grebsmo" },
  config: { ...CONFIG, sparse_method: "grebsmo", init_lora_weights: false },
});
runConformance({
  name: "DSEE (rp, BERT classification)",
  model: "bert_seq_cls",
  identityConfig: { ...CONFIG, sparse_method: "rp" },
  config: { ...CONFIG, sparse_method: "rp", init_lora_weights: false },
});

const data = (t: HostTensor | undefined) => t?.data as Float32Array;
const ints = (t: HostTensor | undefined) => t?.data as Int32Array;

test("DSEE: q and v by default; omp keeps the N largest |W| of the pretrained weight (stored layout, also for Conv1D)", async () => {
  for (const name of ["llama_basic", "gpt2"] as const) {
    const model = await loadTestModel(name);
    const peft = PeftModel.create(model, CONFIG, { seed: 1 });
    const a = peft.adapter("default");
    const layers = dseeLayers(peft.info, a.config as DseeConfig);
    assert.deepEqual(
      layers.map((l) => l.lora.key.split(".").pop()),
      name === "gpt2" ? ["c_attn", "c_attn"] : ["q_proj", "v_proj", "q_proj", "v_proj"],
    );
    for (const l of layers) {
      const w = peft.info.weight(l.sparse.weight).data as Float32Array;
      const want = Array.from(w.keys())
        .sort((p, q) => Math.abs(w[q]) - Math.abs(w[p]) || p - q)
        .slice(0, 12)
        .sort((p, q) => p - q);
      assert.deepEqual([...ints(a.tensors.get(dseeKeys(l.sparse).indices))], [...want], l.lora.key);
      assert.equal(l.sparseScale, 2);
    }
    await model.release();
  }
});

test("DSEE: rp draws N distinct positions from sparse_seed (same seed, same support; another seed, another)", async () => {
  const idx = async (cfg: Record<string, unknown>, seed: number) => {
    const model = await loadTestModel("llama_basic");
    const p = PeftModel.create(model, { ...CONFIG, sparse_method: "rp", ...cfg }, { seed });
    const l = dseeLayers(p.info, p.adapter("default").config as DseeConfig)[0];
    const out = [...ints(p.adapter("default").tensors.get(dseeKeys(l.sparse).indices))];
    await model.release();
    return out;
  };
  const a = await idx({}, 1);
  assert.equal(new Set(a).size, 12);
  assert.deepEqual(await idx({}, 7), a, "the training seed does not move the support");
  assert.notDeepEqual(await idx({ sparse_seed: 3 }, 1), a);
});

test("DSEE: a step moves S only at its N positions, by s·∂L/∂W there (SGD); merged = LoRA's merge + s·S at those N entries", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, { ...CONFIG, target_modules: ["v_proj"] }, { seed: 2 });
  const [l] = dseeLayers(peft.info, peft.adapter("default").config as DseeConfig);
  const k = dseeKeys(l.sparse);
  const ids = randomIds(2, 6, 100);
  const g = await fullFinetuneGradient(model, peft, l.sparse.weight, ids);
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd" } });
  const lr = 0.5;
  await trainer.train({ inputIds: ids, labels: ids }, { lr });
  await trainer.release();
  const a = peft.adapter("default");
  const idx = a.tensors.get(k.indices)?.data as Int32Array;
  const val = data(a.tensors.get(k.values));
  idx.forEach((p, j) => {
    const want = -lr * l.sparseScale * g[p];
    assert.ok(Math.abs(val[j] - want) <= 1e-5 * Math.abs(want) + 1e-9, `S at ${p}: ${val[j]} vs ${want}`);
  });
  assert.ok(val.some((v) => v !== 0));
  // The merge adds s·S to LoRA's W + s·B·A at exactly the N positions; every other entry is LoRA's, bit for bit.
  const lora = data(LORA.merge?.(peft.info, a.config as DseeConfig, a.tensors).get(l.sparse.weight));
  const merged = peft.mergeAndUnload().weights.get(l.sparse.weight)?.data as Float32Array;
  const chosen = new Map(Array.from(idx, (p, j) => [p, j]));
  let moved = 0;
  merged.forEach((v, p) => {
    const j = chosen.get(p);
    if (j === undefined) assert.equal(v, lora[p], `entry ${p} is not LoRA's merge`);
    else {
      assert.equal(v, Math.fround(lora[p] + l.sparseScale * val[j]));
      moved += v !== lora[p] ? 1 : 0;
    }
  });
  assert.equal(moved, 12);
  await model.release();
});

test("DSEE: sparse_scaling false adds S unscaled; the saved config says which", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, { ...CONFIG, sparse_scaling: false, init_lora_weights: false }, { seed: 2 });
  const a = peft.adapter("default");
  const [l] = dseeLayers(peft.info, a.config as DseeConfig);
  assert.equal(l.sparseScale, 1);
  assert.equal(a.tuner.toJson(a.config).sparse_scaling, false);
  const k = dseeKeys(l.sparse);
  const lora = data(LORA.merge?.(peft.info, a.config as DseeConfig, a.tensors).get(l.sparse.weight));
  const merged = data(peft.mergeAndUnload().weights.get(l.sparse.weight));
  const val = data(a.tensors.get(k.values));
  ints(a.tensors.get(k.indices)).forEach((p, j) => {
    assert.equal(merged[p], Math.fround(lora[p] + val[j]));
  });
  await model.release();
});

test("DSEE: bad input names the field", async () => {
  const model = await loadTestModel("llama_basic");
  // llama_basic's v_proj is 32×32 = 1024 entries.
  assert.throws(
    () => PeftModel.create(model, { ...CONFIG, num_sparse: 2000 }),
    /DSEE config: field "num_sparse" = 2000 exceeds the 1024 entries of "model.layers.0.self_attn.q_proj"/,
  );
  assert.throws(() => PeftModel.create(model, { ...CONFIG, num_sparse: 0 }), /field "num_sparse" must be an integer >= 1, got 0/);
  assert.throws(
    () => PeftModel.create(model, { ...CONFIG, sparse_method: "svd" }),
    /field "sparse_method" must be one of "omp", "rp", "grebsmo", got "svd"/,
  );
  assert.throws(() => PeftModel.create(model, { ...CONFIG, grebsmo_rank_step: 0 }), /field "grebsmo_rank_step" must be an integer >= 1/);
  assert.throws(() => PeftModel.create(model, { ...CONFIG, use_dora: true }), /DSEE does not combine with "use_dora"/);
  assert.throws(
    () => PeftModel.create(model, { ...CONFIG, target_modules: ["embed_tokens"] }),
    /"model.embed_tokens" is an embedding table; DSEE's sparse part trains linear layers only|"embed_tokens" is an embedding table/,
  );
  await model.release();
});

test("DSEE: a run stopped after 3 steps and resumed from its checkpoint ends where an uninterrupted one does", async () => {
  const root = mkdtempSync(join(tmpdir(), "peftkit-dsee-"));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { ...CONFIG, sparse_method: "grebsmo" }, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 6 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 6, lr: 0.01, seed: 3, saveSteps: 1 });
  const a = await target();
  await new Trainer(a, source, null, args(join(root, "full")), quietProgress()).run();
  const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 3);
  for (const [k, d] of adapterDiffs(a, c)) assert.ok(d <= 1e-6, `${k}: ${d}`);
  for (const x of [a, b, c]) {
    await x.trainer.release();
    await x.model.release();
  }
  rmSync(root, { recursive: true, force: true });
});
