import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import type { ControllerAction } from "../controller.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { chooseModules, importanceOf, isGrowthStep, NO_IMPORTANCE, updateImportance } from "./allocator.js";
import type { IncreloraConfig } from "./config.js";
import { increloraController, RESERVED_E, scoreName } from "./controller.js";
import { INCRELORA } from "./index.js";
import { increloraKeys, increloraLayers } from "./layers.js";
import { fullFinetuneGradient } from "./testing.js";

const CONFIG = {
  peft_type: "INCRELORA",
  init_r: 1,
  target_r: 2,
  lora_alpha: 4,
  init_warmup: 1,
  incre_interval: 2,
  top_h: 2,
  max_rank: 3,
  target_modules: ["q_proj", "v_proj"],
};

describe("IncreLoRA's allocator (loralib/increlora.py)", () => {
  test("importance: the sensitivity EMA, then the uncertainty EMA of |score − new sensitivity|", () => {
    let s = updateImportance(NO_IMPORTANCE, 2, 0.85, 0.85);
    // avgIpt = 0.15·2 = 0.3; avgUnc = 0.15·|2 − 0.3| = 0.255.
    assert.ok(Math.abs(s.avgIpt - 0.3) < 1e-12 && Math.abs(s.avgUnc - 0.255) < 1e-12);
    s = updateImportance(s, 1, 0.85, 0.85);
    // avgIpt = 0.85·0.3 + 0.15 = 0.405; avgUnc = 0.85·0.255 + 0.15·0.595 = 0.306.
    assert.ok(Math.abs(s.avgIpt - 0.405) < 1e-12 && Math.abs(s.avgUnc - 0.306) < 1e-12);
    assert.ok(Math.abs(importanceOf(s) - 0.405 * 0.306) < 1e-12);
  });

  test("the top_h most important modules that may grow are chosen, ties included", () => {
    assert.deepEqual(chooseModules([0.1, 0.5, 0.3, 0.9], [true, true, true, true], 2, 100), { chosen: [1, 3], threshold: 0.5 });
    // A module at its largest rank is passed over; the budget left caps k.
    assert.deepEqual(chooseModules([0.1, 0.5, 0.3, 0.9], [true, true, true, false], 2, 100), { chosen: [1, 2], threshold: 0.3 });
    assert.deepEqual(chooseModules([0.1, 0.5, 0.3, 0.9], [true, true, true, true], 3, 1), { chosen: [3], threshold: 0.9 });
    assert.deepEqual(chooseModules([0.2, 0.2, 0.1], [true, true, true], 1, 5), { chosen: [0, 1], threshold: 0.2 });
    assert.deepEqual(chooseModules([0.2], [false], 1, 5), { chosen: [], threshold: null });
  });

  test("rounds come every incre_interval steps after init_warmup (0-based global step)", () => {
    const steps = Array.from({ length: 12 }, (_, g) => g).filter((g) => isGrowthStep(g, 3, 4));
    assert.deepEqual(steps, [4, 8]);
  });
});

/** Drives the controller with made-up scores, as PeftTrainer would after each update. */
async function driven(config: Record<string, unknown> = CONFIG) {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, config, { seed: 1 });
  const a = peft.adapter("default");
  const c = a.config as IncreloraConfig;
  const layers = increloraLayers(peft.info, c);
  const ctl = increloraController(peft.info, c);
  assert.ok(ctl);
  const tensors = new Map(a.tensors);
  const apply = (act: ControllerAction<IncreloraConfig> | null) => {
    for (const [k, t] of act?.tensors ?? []) tensors.set(k, t);
  };
  apply(ctl.begin?.(tensors) ?? null);
  const step = (s: number, scores: number[]) => {
    const statistics = new Map(layers.map((l, i) => [scoreName(l.key), hostTensor("f32", [], [scores[i]])] as [string, HostTensor]));
    const act = ctl.afterStep({ step: s, totalSteps: 10, tensors, gradients: new Map(), statistics });
    apply(act);
    return act;
  };
  return { model, peft, layers, ctl, step, tensors: () => tensors };
}

describe("IncreLoRA's controller", () => {
  test("reserves ranks after the first update, then adds rank where the scores are highest", async () => {
    const { model, layers, ctl, step, tensors } = await driven();
    const values = (key: string) => [...((tensors().get(key) as HostTensor).data as Float32Array)];
    const e = (i: number) => values(increloraKeys(layers[i].key).e);
    const exists = (i: number) => values(increloraKeys(layers[i].key).exists);
    const ranknum = (i: number) => values(increloraKeys(layers[i].key).ranknum)[0];
    assert.equal(layers.length, 4);
    const n = layers.length;
    // Scores make module 2 the most important, then module 0.
    const scores = [0.5, 0.1, 0.9, 0.2];
    const first = step(1, scores);
    // g = 0: every module reserves incre_rank_num = 1 slot with E = 1e-5 (advance learning).
    for (let i = 0; i < n; i++) {
      assert.deepEqual(exists(i), [1, 1, 0, 0]);
      assert.ok(Math.abs(e(i)[1] - RESERVED_E) < 1e-12 && e(i)[0] === 0);
    }
    assert.deepEqual(first?.config?.tripletPattern, Object.fromEntries(layers.map((l) => [l.key, 2])));
    // The reserved slot's A row trains ahead; its E does not.
    const k0 = increloraKeys(layers[0].key);
    const gate = (act: ControllerAction<IncreloraConfig> | null, key: string) => {
      const t = act?.trainable?.get(key) as HostTensor;
      return [...(t.data as Float32Array)];
    };
    const gateA = gate(first, k0.a);
    const inF = layers[0].inFeatures;
    assert.deepEqual([gateA[0], gateA[inF], gateA[2 * inF]], [1, 1, 0]);
    assert.deepEqual(gate(first, k0.e), [1, 0, 0, 0]);
    assert.equal(step(2, scores), null);
    // g = 2 > init_warmup 1 and 2 % incre_interval 2 = 0: top_h = 2 modules grow.
    const grown = step(3, scores);
    assert.deepEqual(
      layers.map((_, i) => ranknum(i)),
      [2, 1, 2, 1],
    );
    assert.deepEqual(grown?.config?.rankPattern, Object.fromEntries(layers.map((l, i) => [l.key, [2, 1, 2, 1][i]])));
    assert.deepEqual(exists(2), [1, 1, 1, 0]);
    assert.deepEqual(exists(1), [1, 1, 0, 0]);
    // The activated slot keeps E = 1e-5 and now trains; the new reserve starts at 1e-5, frozen.
    assert.deepEqual(gate(grown, increloraKeys(layers[2].key).e), [1, 1, 0, 0]);
    assert.ok(Math.abs(e(2)[2] - RESERVED_E) < 1e-12);
    assert.deepEqual(ctl.metrics(), { rank_total: 6 });
    // The budget is 2·4 = 8: the next round adds 2 more (modules 1 and 3 can, 0 and 2 too; the
    // scores decide), reaching it; then reserved E's are zeroed and nothing more happens.
    step(4, scores);
    step(5, [0.1, 0.9, 0.1, 0.8]);
    assert.deepEqual(ctl.metrics(), { rank_total: 8 });
    for (let i = 0; i < n; i++) {
      const r = ranknum(i);
      assert.equal(e(i)[r], 0, `module ${i}: its reserve still contributes`);
    }
    assert.equal(step(6, scores), null);
    assert.equal(step(7, scores), null);
    await model.release();
  });

  test("a module at max_rank is not chosen: the next most important grows instead", async () => {
    const { model, ctl, step } = await driven({ ...CONFIG, top_h: 1, max_rank: 2, target_total_rank: 20 });
    const scores = [0.1, 0.2, 0.9, 0.3];
    const ranks = () => (ctl.state().json as { modules: { rank: number }[] }).modules.map((m) => m.rank);
    step(1, scores);
    step(3, scores);
    assert.deepEqual(ranks(), [1, 1, 2, 1]);
    step(5, scores);
    assert.deepEqual(ranks(), [1, 1, 2, 2]);
    step(7, scores);
    assert.deepEqual(ranks(), [1, 2, 2, 2]);
    await model.release();
  });
});

describe("IncreLoRA through PeftTrainer", () => {
  test("the step reports Σ|ΔW ⊙ ∂L/∂ΔW| / √numel per module, and ∂L/∂ΔW is the base weight's gradient", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CONFIG, { seed: 3 });
    // A non-zero ΔW: give E some values.
    const a = peft.adapter("default");
    const c = a.config as IncreloraConfig;
    const layers = increloraLayers(peft.info, c);
    peft.setAdapterTensors(
      "default",
      new Map(
        layers.map((l) => [
          increloraKeys(l.key).e,
          hostTensor(
            "f32",
            [l.capacity, 1],
            Float32Array.from({ length: l.capacity }, (_, i) => (i === 0 ? 0.7 : 0)),
          ),
        ]),
      ),
    );
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd" }, totalSteps: 5 });
    const ids = randomIds(2, 6, 100);
    const before = new Map(peft.adapter("default").tensors);
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 0 });
    const stats = trainer.step.getStatistics();
    // Independent: ∂L/∂W of the base weight (the same as ∂L/∂ΔW since y = (W + ΔW)·x) from a
    // full fine-tuning step of that weight over the same model with the adapter merged in.
    for (const l of layers.slice(0, 1)) {
      const k = increloraKeys(l.key);
      const scale = 4 / (1 + 1e-5);
      const A = before.get(k.a)?.data as Float32Array;
      const B = before.get(k.b)?.data as Float32Array;
      const dw = Float64Array.from({ length: l.outFeatures * l.inFeatures }, (_, j) => {
        const o = Math.floor(j / l.inFeatures);
        return B[o * l.capacity] * 0.7 * scale * A[j % l.inFeatures];
      });
      const g = await fullFinetuneGradient(model, peft, `${l.path}.weight`, ids);
      let want = 0;
      dw.forEach((v, j) => {
        want += Math.abs(v * g[j]);
      });
      want /= Math.sqrt(dw.length);
      const got = Number(stats[scoreName(l.key)].data[0]);
      assert.ok(Math.abs(got - want) <= 1e-3 * want, `${l.key}: ${got} vs ${want}`);
    }
    await trainer.release();
    await model.release();
  });
});

runConformance({ name: "IncreLoRA", model: "llama_basic", config: { ...CONFIG, init_weights: false } });

test("IncreLoRA: a saved adapter holds only existing triplets and reloads to the same outputs", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, CONFIG, { seed: 5 });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 5 });
  const ids = randomIds(2, 6, 100);
  for (let s = 0; s < 4; s++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.05 });
  const out = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "peftkit-increlora-"));
  peft.savePretrained(dir);
  const cfg = peft.adapter("default").config as IncreloraConfig;
  // After the round at g = 2 the top_h = 2 grown modules hold 3 triplets (2 active, 1 reserved), the others 2.
  assert.deepEqual(Object.values(cfg.tripletPattern ?? {}).sort(), [2, 2, 3, 3]);
  // What the run reports as trained: A and B of every triplet reached (reserved ones train ahead),
  // E of the active ranks only; the compiled capacity (max_rank triplets) is larger.
  const layers = increloraLayers(peft.info, cfg);
  const used = layers.reduce(
    (n, l) => n + (cfg.tripletPattern?.[l.key] as number) * (l.inFeatures + l.outFeatures) + (cfg.rankPattern?.[l.key] as number),
    0,
  );
  assert.equal(trainer.trainedParameters(), used);
  assert.ok(peft.parameterCounts().trainable > used);
  const base2 = await loadTestModel("llama_basic");
  const loaded = PeftModel.fromPretrained(base2, dir);
  for (const l of increloraLayers(loaded.info, cfg)) {
    const k = increloraKeys(l.key);
    const n = cfg.tripletPattern?.[l.key] as number;
    assert.deepEqual(loaded.adapter("default").tensors.get(k.a)?.shape, [n, l.inFeatures]);
    assert.deepEqual(loaded.adapter("default").tensors.get(k.b)?.shape, [l.outFeatures, n]);
  }
  const again = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
  assert.ok(maxAbsDiff(out, again) < 1e-5, `${maxAbsDiff(out, again)}`);
  rmSync(dir, { recursive: true, force: true });
  await trainer.release();
  await model.release();
  await base2.release();
  void INCRELORA;
});

test("IncreLoRA: a run stopped between growth rounds and resumed ends where an uninterrupted one does", async () => {
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { Progress } = await import("../../train/progress.js");
  const { Trainer } = await import("../../train/trainer.js");
  const root = mkdtempSync(join(tmpdir(), "peftkit-increlora-resume-"));
  const source = {
    batchesPerEpoch: 4,
    batch: (epoch: number, index: number) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { ...CONFIG, lora_dropout: 0.1, target_total_rank: 7 }, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 8, clipNorm: 1 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 8, lr: 0.05, seed: 3, saveSteps: 2 });
  const a = await target();
  await new Trainer(a, source, null, args(join(root, "full")), quiet()).run();
  const b = await target();
  const first = new Trainer(b, source, null, args(join(root, "cut")), quiet());
  const orig = b.trainer.train.bind(b.trainer);
  let steps = 0;
  b.trainer.train = async (batch, o) => {
    const r = await orig(batch, o);
    if (++steps === 4) first.requestStop();
    return r;
  };
  await first.run();
  const c = await target();
  await new Trainer(c, source, null, { ...args(join(root, "cut")), resume: true }, quiet()).run();
  assert.deepEqual(c.trainer.controllerMetrics(), a.trainer.controllerMetrics());
  assert.deepEqual(c.peft.adapter("default").config, a.peft.adapter("default").config);
  for (const [k, t] of a.peft.adapter("default").tensors) {
    const d = maxAbsDiff(t.data as Float32Array, c.peft.adapter("default").tensors.get(k)?.data as Float32Array);
    assert.ok(d <= 1e-6, `${k}: ${d}`);
  }
  for (const x of [a, b, c]) {
    await x.trainer.release();
    await x.model.release();
  }
  rmSync(root, { recursive: true, force: true });
});
