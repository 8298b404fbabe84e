import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { evaluate } from "../../train/evaluate.js";
import { randomIds, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { IstConfig } from "./config.js";
import { IstController, isOutputFactor } from "./controller.js";

const CONFIG = { peft_type: "IST", target_modules: ["q_proj", "v_proj", "down_proj"] };

runConformance({
  name: "IST",
  model: "llama_basic",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_lora_weights: false },
});

// 4 transformer layers, so fractions give counts above 1.
const WORDNET = join(REPO_ROOT, "models/wordnet-llama");
const layerOf = (k: string) => Number(/\.layers\.(\d+)\./.exec(k)?.[1]);
const copy = (m: ReadonlyMap<string, HostTensor>) => new Map([...m].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));

test("IST step: exactly round(f·L) sampled layers' adapters move, every other adapter tensor and its AdamW state stay bit-identical", async () => {
  for (const [fraction, count] of [
    [0.25, 1],
    [0.5, 2],
  ] as const) {
    const model = await AutoModelForCausalLM.fromPretrained(WORDNET);
    try {
      const peft = PeftModel.create(
        model,
        { ...CONFIG, init_lora_weights: false, update_fraction: fraction, importance_interval: 1000 },
        { seed: 1 },
      );
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw", weightDecay: 0.01 } });
      const ctl = trainer.controller as IstController;
      const keys = [...peft.adapter("default").tensors.keys()];
      const seen = new Set<string>();
      for (let step = 1; step <= 6; step++) {
        const before = copy(peft.adapter("default").tensors);
        const moments = new Map(keys.map((k) => [k, Float32Array.from(trainer.step.parameterState(k).exp_avg.data as Float32Array)]));
        const ids = randomIds(2, 6, 1000);
        await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
        const want = ctl.selection(step);
        assert.equal(want.length, count);
        const moved = new Set<number>();
        for (const k of keys) {
          const now = peft.adapter("default").tensors.get(k)?.data as Float32Array;
          const changed = now.some((v, i) => v !== before.get(k)?.[i]);
          if (want.includes(layerOf(k))) assert.ok(changed, `step ${step}: ${k} of a selected layer did not move`);
          else {
            assert.ok(!changed, `step ${step}: ${k} of an unselected layer moved`);
            assert.deepEqual(trainer.step.parameterState(k).exp_avg.data, moments.get(k), `step ${step}: ${k}'s exp_avg moved`);
          }
          if (changed) moved.add(layerOf(k));
        }
        assert.deepEqual([...moved].sort(), want);
        seen.add(want.join(","));
      }
      assert.ok(seen.size > 1, "the selection changes from step to step");
      await trainer.release();
    } finally {
      await model.release();
    }
  }
});

test("IST importance round: 3 distinct subsets of round(0.5·L) layers, their lora_B scaled by 0.25 in the passes, scores by the rule", async () => {
  const model = await AutoModelForCausalLM.fromPretrained(WORDNET);
  try {
    const peft = PeftModel.create(model, { ...CONFIG, init_lora_weights: false, importance_interval: 2 }, { seed: 2 });
    const c = peft.adapter("default").config as IstConfig;
    const ctl = new IstController(peft.info, c);
    const tensors = peft.adapter("default").tensors;
    const batches: number[] = [];
    for (const round of [0, 1]) {
      const scores = [...ctl.layerScores];
      const subsets: number[][] = [];
      const losses: number[] = [];
      const passes = {
        loss: async (index: number, scaled?: ReadonlyMap<string, HostTensor>) => {
          batches.push(index);
          const layers = [...new Set([...(scaled?.keys() ?? [])].map(layerOf))].sort();
          const want = [...tensors.keys()].filter((k) => isOutputFactor(k) && layers.includes(layerOf(k))).sort();
          assert.deepEqual([...(scaled?.keys() ?? [])].sort(), want);
          for (const [k, t] of scaled ?? []) {
            const orig = tensors.get(k)?.data as Float32Array;
            (t.data as Float32Array).forEach((v, i) => {
              assert.equal(v, orig[i] * 0.25, k);
            });
          }
          subsets.push(layers);
          // Any loss works; this one makes layers differ.
          const loss = 2 + 0.3 * layers.reduce((s, l) => s + l * l, 0) - 0.1 * round;
          losses.push(loss);
          return loss;
        },
      };
      const s = { step: 2 * round + 2, totalSteps: null, tensors, gradients: new Map(), statistics: new Map() };
      await ctl.runPasses({ ...s, step: 2 * round + 1 }, passes);
      assert.equal(losses.length, 0, "no round between intervals");
      await ctl.runPasses(s, passes);
      assert.equal(subsets.length, 3);
      assert.equal(new Set(subsets.map((x) => x.join(","))).size, 3, "the trials' subsets are distinct");
      for (const x of subsets) assert.equal(x.length, 2);
      // s_i += (exp(−loss_k) − mean_j exp(−loss_j))·σ(s_i)(1 − σ(s_i))·10 for each trial k suppressing i.
      const r = losses.map((l) => Math.exp(-l));
      const mean = (r[0] + r[1] + r[2]) / 3;
      const want = scores.map((si, i) => {
        const p = 1 / (1 + Math.exp(-si));
        let d = 0;
        subsets.forEach((x, k) => {
          if (x.includes(i)) d += (r[k] - mean) * p * (1 - p) * 10;
        });
        return si + d;
      });
      for (const [i, v] of ctl.layerScores.entries())
        assert.ok(Math.abs(v - want[i]) < 1e-12, `round ${round}, s_${i}: ${v} vs ${want[i]}`);
    }
    assert.deepEqual(batches, [0, 0, 0, 1, 1, 1], "one importance batch per round, the next one each round");
    assert.ok(ctl.layerScores.some((v) => v !== 0));

    // The state carries the scores and rounds; other settings refuse it, naming the field.
    const again = new IstController(peft.info, c);
    again.restore(ctl.state());
    assert.deepEqual(again.layerScores, ctl.layerScores);
    assert.deepEqual(again.selection(9), ctl.selection(9));
    assert.deepEqual(again.trialSubsets(2), ctl.trialSubsets(2));
    assert.throws(() => new IstController(peft.info, { ...c, trials: 4 }).restore(ctl.state()), /trained with trials 3, this run asks 4/);
  } finally {
    await model.release();
  }
});

test("IST passes: the loss of a pass = eval loss of the adapter; scaled tensors apply to that pass only", async () => {
  const model = await AutoModelForCausalLM.fromPretrained(WORDNET);
  try {
    const peft = PeftModel.create(model, { ...CONFIG, init_lora_weights: false, lora_dropout: 0 }, { seed: 3 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const ids = randomIds(3, 7, 1000);
    const batch = { inputIds: ids, attentionMask: ids.map((r) => r.map(() => 1)), labels: ids };
    trainer.usePassBatches(() => batch);
    const passes = trainer.controllerPasses();
    const tensors = peft.adapter("default").tensors;
    const withAdapter = (await evaluate(peft, [batch], { causal: true, classification: false })).eval_loss;
    const base = (await peft.disableAdapter(() => evaluate(peft, [batch], { causal: true, classification: false }))).eval_loss;
    assert.ok(Math.abs(withAdapter - base) > 1e-3);
    assert.ok(Math.abs((await passes.loss(0)) - withAdapter) < 1e-6);
    const zeroB = new Map(
      [...tensors].filter(([k]) => isOutputFactor(k)).map(([k, t]) => [k, { ...t, data: new Float32Array(t.data.length) } as HostTensor]),
    );
    assert.ok(Math.abs((await passes.loss(0, zeroB)) - base) < 1e-6);
    for (const [k, t] of tensors) assert.equal(peft.adapter("default").tensors.get(k), t, `${k} is back`);
    assert.ok(Math.abs((await passes.loss(0)) - withAdapter) < 1e-6);
    await trainer.release();
  } finally {
    await model.release();
  }
});

test("IST config: fractions in (0, 1], interval and trials >= 1, base-editing inits refused; folder config is LoRA's", async () => {
  const { parseIstConfig, istConfigJson } = await import("./config.js");
  assert.throws(() => parseIstConfig({ ...CONFIG, update_fraction: 0 }, "cfg"), /cfg: field "update_fraction" must be in \(0, 1\], got 0/);
  assert.throws(
    () => parseIstConfig({ ...CONFIG, suppress_fraction: 1.5 }, "cfg"),
    /cfg: field "suppress_fraction" must be in \(0, 1\], got 1.5/,
  );
  assert.throws(
    () => parseIstConfig({ ...CONFIG, importance_interval: 0 }, "cfg"),
    /cfg: field "importance_interval" must be an integer >= 1, got 0/,
  );
  assert.throws(() => parseIstConfig({ ...CONFIG, init_lora_weights: "pissa" }, "cfg"), /cfg: IST trains LoRA from PEFT's default init/);
  const c = parseIstConfig(CONFIG, "cfg");
  assert.deepEqual(
    [c.updateFraction, c.suppressFraction, c.suppressFactor, c.importanceInterval, c.trials, c.scoreLr, c.importanceBatchSize],
    [0.25, 0.5, 0.25, 10, 3, 10, 16],
  );
  const json = istConfigJson(c);
  assert.equal(json.peft_type, "LORA");
  assert.ok(!("update_fraction" in json) && !("seed" in json));
});
