import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { adapterDiffs, stopThenResume } from "../../testing/resume.js";
import { Progress } from "../../train/progress.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { loadTestModel, maxAbsDiff, randomIds } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { parseLocaConfig } from "./config.js";
import { COEFFICIENTS, LOCATIONS, learnLocationIter, phaseAt } from "./schedule.js";

/** The authors' loop (layer.py forward) written out: which of the two requires grad at each iteration. */
function authorsPhases(steps: number, lli: number): number[] {
  let locations = false;
  const out: number[] = [];
  for (let it = 0; it < steps; it++) {
    if (it === 0) locations = false;
    else {
      if (it < lli) {
        const pos = it % 30;
        if (pos === 0) locations = false;
        if (pos === 10) locations = true;
      }
      if (it === lli) locations = false;
    }
    out.push(locations ? LOCATIONS : COEFFICIENTS);
  }
  return out;
}

describe("LoCA's alternation (layer.py)", () => {
  test("phaseAt follows the authors' loop step by step", () => {
    for (const lli of [0, 1, 10, 11, 15, 30, 45, 70, 100, 300]) {
      const want = authorsPhases(320, lli);
      const got = want.map((_, t) => phaseAt(t, lli, 10, 20));
      assert.deepEqual(got, want, `learn_location_iter ${lli}`);
    }
    // The first cycles: 10 coefficient steps, 20 location steps.
    assert.deepEqual(Array.from({ length: 32 }, (_, t) => phaseAt(t, 100, 10, 20)).join(""), "0000000000" + "11111111111111111111" + "00");
  });

  test("learn_location_iter null: 10% of the planned steps, else the fallback", () => {
    const c = parseLocaConfig({ peft_type: "LOCA" }, "test");
    assert.equal(learnLocationIter(c, 3000), 300);
    assert.equal(learnLocationIter(c, null), 1000);
    assert.equal(learnLocationIter({ ...c, learnLocationIter: 7 }, 3000), 7);
  });
});

const TINY = { peft_type: "LOCA", n_frequency: 12, target_modules: ["q_proj", "v_proj"], coefficient_steps: 2, location_steps: 3 };

const IDS = randomIds(2, 6, 100);

async function trained(config: Record<string, unknown>, steps: number, seed = 1) {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, config, { seed });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: steps });
  const ids = IDS;
  const snap = () => new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
  const history: { phase: number | undefined; moved: Set<string>; before: Map<string, Float32Array>; after: Map<string, Float32Array> }[] =
    [];
  for (let s = 0; s < steps; s++) {
    const before = snap();
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
    const now = snap();
    const moved = new Set(
      [...now].filter(([k, v]) => maxAbsDiff(v, before.get(k) as Float32Array) > 0).map(([k]) => k.split(".").pop() as string),
    );
    history.push({ phase: trainer.controllerMetrics().loca_phase, moved, before, after: now });
  }
  await trainer.release();
  await model.release();
  return history;
}

describe("LoCA's controller in training", () => {
  test("each update changes exactly the tensors of its phase; loca_phase logs it; locations freeze at learn_location_iter", async () => {
    const history = await trained({ ...TINY, learn_location_iter: 9, location_lr_ratio: 1 }, 12);
    history.forEach((h, t) => {
      const p = phaseAt(t, 9, 2, 3);
      assert.equal(h.phase, p, `step ${t}: loca_phase`);
      assert.deepEqual([...h.moved].sort(), [p === LOCATIONS ? "loca_locations" : "loca_coefficients"], `step ${t}`);
    });
    assert.deepEqual(
      history.map((h) => h.phase),
      [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0],
    );
  });

  test("location_lr_ratio ρ: a location update is ρ times the one at the run's learning rate", async () => {
    const full = await trained({ ...TINY, learn_location_iter: 9, location_lr_ratio: 1 }, 3);
    const scaled = await trained({ ...TINY, learn_location_iter: 9, location_lr_ratio: 0.25 }, 3);
    // Steps 0 and 1 train coefficients only: both runs are identical up to step 2, the first location update.
    for (const [k, v] of full[2].before) assert.deepEqual(scaled[2].before.get(k), v, k);
    let compared = 0;
    for (const [k, after1] of full[2].after) {
      if (!k.endsWith("loca_locations")) continue;
      const before = full[2].before.get(k) as Float32Array;
      const got = scaled[2].after.get(k) as Float32Array;
      for (let i = 0; i < before.length; i++) {
        const want = before[i] + 0.25 * (after1[i] - before[i]);
        assert.ok(Math.abs(got[i] - want) <= 1e-7, `${k}[${i}]: ${got[i]} vs ${want}`);
        if (after1[i] !== before[i]) compared++;
      }
    }
    assert.ok(compared > 10, `only ${compared} location elements moved`);
  });

  const root = mkdtempSync(join(tmpdir(), "peftkit-loca-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);
  // Cycles of 1 coefficient step and 2 location steps until step 7: phases 0 1 1 0 1 1 0 0.
  const config = { ...TINY, coefficient_steps: 1, location_steps: 2, learn_location_iter: 7, location_lr_ratio: 0.5 };
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, config, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 8 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 8, lr: 0.05, seed: 3, saveSteps: 2 });

  test("a run stopped inside a location phase and resumed ends where an uninterrupted one does", async () => {
    const a = await target();
    await new Trainer(a, source, null, args(join(root, "full")), quiet()).run();
    const phases = readFileSync(join(root, "full", "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.loss !== undefined)
      .map((r) => r.loca_phase);
    assert.deepEqual(phases, [0, 1, 1, 0, 1, 1, 0, 0]);
    // Stopped after step 5: the next update is the second of a location phase, which needs the
    // locations it starts from (the scaled update) and the gates.
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 5);
    for (const [k, d] of adapterDiffs(a, c)) assert.ok(d <= 1e-6, `${k}: ${d}`);
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });
});
