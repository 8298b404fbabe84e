import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { eighSym } from "../../linalg/eigh.js";
import { matrix } from "../../linalg/matrix.js";
import { adapterDiffs, quietProgress, stopThenResume } from "../../testing/resume.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { SaraConfig } from "./config.js";
import { saraTargets } from "./layers.js";
import { nuclearDirection, rankLayerAt } from "./rank.js";

const CONFIG = { peft_type: "SARA", target_modules: ["q_proj", "v_proj", "down_proj"], threshold: 0.02 };

runConformance({
  name: "SARA",
  model: "llama_basic",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_weights: false },
});

// The nuclear-norm term enters the objective the gradient check differentiates (Tuner.loss).
runConformance({
  name: "SARA (lambda_rank)",
  model: "llama_basic",
  config: { ...CONFIG, lambda_rank: 0.5, init_weights: false },
});

const weightOf = (peft: PeftModel, name: string) => Float32Array.from(peft.info.weight(name).data as Float32Array);

test("SaRA: exactly the entries with |W| < θ train; every other weight entry stays bit-identical", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, CONFIG, { seed: 1 });
  const c = peft.adapter("default").config as SaraConfig;
  const targets = saraTargets(peft.info, c);
  const base = new Map(targets.map((t) => [t.weight, weightOf(peft, t.weight)]));
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
  const ids = randomIds(2, 6, 100);
  for (let s = 0; s < 2; s++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 });
  await trainer.release();
  const merged = peft.mergeAndUnload();
  let small = 0;
  for (const t of targets) {
    const w0 = base.get(t.weight) as Float32Array;
    const w1 = merged.weights.get(t.weight)?.data as Float32Array;
    w0.forEach((v, p) => {
      const below = Math.abs(v) < 0.02;
      small += below ? 1 : 0;
      assert.equal(w1[p] !== v, below, `${t.weight}[${p}] (|W| = ${Math.abs(v)}) moved: ${w1[p] !== v}`);
    });
  }
  assert.equal(
    small,
    targets.reduce((n, t) => n + t.k, 0),
  );
  assert.ok(small > 0);
  await model.release();
});

describe("SaRA progressive re-selection", () => {
  const P = 2;
  const cfg = { ...CONFIG, target_modules: ["q_proj", "v_proj"], progressive_iter: P };
  const key = (t: { key: string }) => `${t.key}.sara.values`;

  test("after progressive_iter steps only the entries with |W + S| < θ keep training, with fresh AdamW state", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, cfg, { seed: 1 });
    const targets = saraTargets(peft.info, peft.adapter("default").config as SaraConfig);
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 5 });
    const ids = randomIds(2, 6, 100);
    // A large lr pushes some deltas past θ.
    for (let s = 0; s < P; s++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.01 });
    const a = peft.adapter("default");
    const current = (t: (typeof targets)[number]) => {
      const w = peft.info.weight(t.weight).data as Float32Array;
      const idx = a.tensors.get(`${t.key}.sara.indices`)?.data as Int32Array;
      const val = a.tensors.get(key(t))?.data as Float32Array;
      return Array.from(idx, (p, j) => Math.abs(Math.fround(w[p] + val[j])) < 0.02);
    };
    const keep = new Map(targets.map((t) => [t.key, current(t)]));
    const left = [...keep.values()].flat().filter((x) => !x).length;
    assert.ok(left > 0, "some entries left the set");
    assert.equal(trainer.controllerMetrics().sara_trained, [...keep.values()].flat().length - left);
    const snap = new Map(targets.map((t) => [t.key, Float32Array.from(a.tensors.get(key(t))?.data as Float32Array)]));
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.01 });
    for (const t of targets) {
      const v0 = snap.get(t.key) as Float32Array;
      const v1 = peft.adapter("default").tensors.get(key(t))?.data as Float32Array;
      const st = trainer.step.parameterState(key(t));
      const count = st.update_count.data as Float32Array;
      (keep.get(t.key) as boolean[]).forEach((k, j) => {
        assert.equal(v1[j] !== v0[j], k, `${t.key} slot ${j}`);
        // Fresh optimizer: one step since the re-selection (else 3).
        assert.equal(count[j], k ? 1 : P, `${t.key} slot ${j} step count`);
      });
    }
    await trainer.release();
    await model.release();
  });

  const root = mkdtempSync(join(tmpdir(), "peftkit-sara-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, cfg, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 6 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 6, lr: 0.01, seed: 3, saveSteps: 1 });

  test("a run stopped after the re-selection and resumed ends where an uninterrupted one does", async () => {
    const a = await target();
    await new Trainer(a, source, null, args(join(root, "full")), quietProgress()).run();
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), P + 1);
    for (const [k, d] of adapterDiffs(a, c)) assert.ok(d <= 1e-6, `${k}: ${d}`);
    const gate = (x: typeof a) =>
      (
        x.trainer.step.parameterState(key(saraTargets(x.peft.info, x.peft.adapter("default").config as SaraConfig)[0]))
          .update_gate as HostTensor
      ).data;
    assert.deepEqual(gate(c), gate(a));
    assert.ok([...gate(a)].some((g) => g === 0));
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });
});

/** ‖X‖_* = Σ √λ(XᵀX), by a symmetric eigensolver (not the SVD rank.ts uses). */
function nuclearByEigen(rows: number, cols: number, x: Float64Array): number {
  const g = matrix(cols, cols);
  for (let i = 0; i < cols; i++)
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let r = 0; r < rows; r++) s += x[r * cols + i] * x[r * cols + j];
      g.data[i * cols + j] = s;
    }
  return Array.from(eighSym(g).values).reduce((a, l) => a + Math.sqrt(Math.max(l, 0)), 0);
}

describe("SaRA's nuclear-norm term (lambda_rank)", () => {
  test("nuclearDirection: the norm, and U Vᵀ at the indices = finite differences of ‖ΔW‖_* in the values", () => {
    const rng = new Rng(5);
    const [rows, cols] = [9, 6];
    const idx = Int32Array.from(Array.from({ length: rows * cols }, (_, p) => p).filter(() => rng.next() < 0.6));
    const val = Float32Array.from(idx, () => rng.normal());
    const dense = (v: ArrayLike<number>) => {
      const x = new Float64Array(rows * cols);
      idx.forEach((p, j) => {
        x[p] = v[j];
      });
      return x;
    };
    const { norm, grad } = nuclearDirection([rows, cols], idx, val);
    assert.ok(Math.abs(norm - nuclearByEigen(rows, cols, dense(val))) < 1e-9 * norm);
    const h = 1e-5;
    idx.forEach((_, j) => {
      const up = Float64Array.from(val);
      const down = Float64Array.from(val);
      up[j] += h;
      down[j] -= h;
      const fd = (nuclearByEigen(rows, cols, dense(up)) - nuclearByEigen(rows, cols, dense(down))) / (2 * h);
      assert.ok(Math.abs(fd - grad[j]) < 1e-5, `entry ${j}: U Vᵀ ${grad[j]}, finite differences ${fd}`);
    });
  });

  test("each step's method loss is λ·‖ΔW‖_* of the step's layer, chosen uniformly and statelessly", async () => {
    const model = await loadTestModel("llama_basic");
    const cfg = { ...CONFIG, lambda_rank: 0.1, init_weights: false };
    const peft = PeftModel.create(model, cfg, { seed: 1 });
    const targets = saraTargets(peft.info, peft.adapter("default").config as SaraConfig);
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const ids = randomIds(2, 6, 100);
    const seen = new Set<number>();
    for (let step = 1; step <= 4; step++) {
      const l = rankLayerAt(step, targets.length);
      seen.add(l);
      const t = targets[l];
      const a = peft.adapter("default").tensors;
      const x = new Float64Array(t.shape[0] * t.shape[1]);
      const idx = a.get(`${t.key}.sara.indices`)?.data as Int32Array;
      const val = a.get(`${t.key}.sara.values`)?.data as Float32Array;
      idx.forEach((p, j) => {
        x[p] = val[j];
      });
      const want = 0.1 * nuclearByEigen(t.shape[0], t.shape[1], x);
      const r = await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 });
      const got = r.metrics.method_loss as number;
      assert.ok(Math.abs(got - want) < 1e-5 * want, `step ${step}, layer ${t.key}: method loss ${got}, λ‖ΔW‖_* ${want}`);
    }
    assert.ok(seen.size > 1, "the layer changes between steps");
    await trainer.release();
    await model.release();
  });
});
