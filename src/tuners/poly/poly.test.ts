import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { reduceSeed, uniformAt } from "../../engine/ir/random.js";
import { trace } from "../../engine/trace/trace.js";
import { AutoModelForImageClassification } from "../../models/auto.js";
import { GOLDEN_MODELS } from "../../testing/paths.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { layerSalt } from "../layer-seed.js";
import { PeftModel } from "../peft-model.js";
import { resolveTask, TaskIdError } from "../task-ids.js";
import { PeftTrainer } from "../train.js";
import { parsePolyConfig } from "./config.js";
import { loraConfigOfPoly, polyToLoraTensors } from "./export.js";
import { polyKeys, polyLayers, polyLayerWeights, polyMix } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;
const randn = (n: number, rng: Rng, scale = 0.5) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale);

/** Every POLY tensor of a model's adapter filled with values far from init (B non-zero). */
function randomize(peft: PeftModel, seed: number, logits?: (key: string, t: HostTensor) => Float32Array): void {
  const rng = new Rng(seed);
  const t = new Map(peft.adapter("default").tensors);
  for (const [k, v] of t) {
    const data = k.endsWith("module_logits") && logits ? logits(k, v) : randn(v.data.length, rng);
    t.set(k, hostTensor("f32", v.shape, data));
  }
  peft.setAdapterTensors("default", t);
}

describe("POLY", () => {
  const tasks = (rows: number) => Array.from({ length: rows }, (_, i) => (i * 2) % 3);
  runConformance({
    name: "POLY on llama (q_proj, v_proj; 3 tasks, 4 skills)",
    model: "llama_basic",
    identityConfig: { peftType: "POLY", nTasks: 3 },
    config: { peftType: "POLY", nTasks: 3, nSkills: 4, r: 2, initWeights: false },
    mergeable: false,
    tasks,
  });
  runConformance({
    name: "MHR on GPT-2 Conv1D (all-linear, 2 splits)",
    model: "gpt2",
    config: { peftType: "POLY", nTasks: 3, nSkills: 3, nSplits: 2, r: 2, targetModules: "all-linear", initWeights: false },
    mergeable: false,
    tasks,
  });

  test("keys and shapes: poly_lora_A [q, s, in/q, r], poly_lora_B [q, s, r, out/q], poly_router.module_logits [n_tasks, q·s]", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "POLY", r: 4, nTasks: 5, nSkills: 3, nSplits: 2 });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].filter((k) => k.startsWith("model.layers.0.self_attn.q_proj")).sort(), [
      "model.layers.0.self_attn.q_proj.poly_lora_A",
      "model.layers.0.self_attn.q_proj.poly_lora_B",
      "model.layers.0.self_attn.q_proj.poly_router.module_logits",
    ]);
    assert.deepEqual(t.get("model.layers.0.self_attn.q_proj.poly_lora_A")?.shape, [2, 3, 16, 4]);
    assert.deepEqual(t.get("model.layers.0.self_attn.q_proj.poly_lora_B")?.shape, [2, 3, 4, 16]);
    assert.deepEqual(t.get("model.layers.0.self_attn.q_proj.poly_router.module_logits")?.shape, [5, 6]);
    const logits = f32(t.get("model.layers.0.self_attn.q_proj.poly_router.module_logits"));
    assert.ok(logits.every((x) => Math.abs(x) <= 1e-3));
    assert.ok(f32(t.get("model.layers.0.self_attn.q_proj.poly_lora_B")).every((x) => x === 0));
    await model.release();
  });

  test("n_splits = 1 and one-hot-like logits (±30): a Poly layer equals the chosen skill's LoRA", async () => {
    const model = await loadTestModel("llama_basic");
    const ids = randomIds(2, 5, 100);
    const chosen = [2, 0, 3]; // skill of task 0, 1, 2
    const peft = PeftModel.create(model, { peftType: "POLY", r: 2, nTasks: 3, nSkills: 4 });
    randomize(peft, 11, (_k, v) => {
      const d = new Float32Array(v.data.length).fill(-30);
      chosen.forEach((s, t) => {
        d[t * 4 + s] = 30;
      });
      return d;
    });
    const c = peft.adapter("default").config as ReturnType<typeof parsePolyConfig>;
    const poly = peft.adapter("default").tensors;
    for (const task of [0, 1, 2]) {
      const got = (await peft.forward({ inputIds: ids, taskIds: [task, task] })).logits?.data as Float32Array;
      // The chosen skill's LoRA, written by hand: lora_A = A[0, s]ᵀ, lora_B = B[0, s]ᵀ, scaling 1/r.
      const lora = new Map<string, HostTensor>();
      for (const l of polyLayers(peft.info, c)) {
        const k = polyKeys(l.key);
        const a = f32(poly.get(k.a));
        const b = f32(poly.get(k.b));
        const s = chosen[task];
        const la = new Float32Array(2 * l.inFeatures);
        const lb = new Float32Array(l.outFeatures * 2);
        for (let i = 0; i < l.inFeatures; i++) for (let j = 0; j < 2; j++) la[j * l.inFeatures + i] = a[(s * l.inFeatures + i) * 2 + j];
        for (let j = 0; j < 2; j++) for (let o = 0; o < l.outFeatures; o++) lb[o * 2 + j] = b[(s * 2 + j) * l.outFeatures + o];
        lora.set(`${l.key}.lora_A.weight`, hostTensor("f32", [2, l.inFeatures], la));
        lora.set(`${l.key}.lora_B.weight`, hostTensor("f32", [l.outFeatures, 2], lb));
      }
      const ref = PeftModel.create(await loadTestModel("llama_basic"), { peftType: "LORA", r: 2, loraAlpha: 1 });
      ref.setAdapterTensors("default", lora);
      const want = (await ref.forward({ inputIds: ids })).logits?.data as Float32Array;
      const base = (await peft.disableAdapter(() => peft.forward({ inputIds: ids }))).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(want, base) > 1e-3, "the skill changes the output");
      assert.ok(maxAbsDiff(got, want) < 1e-5, `task ${task}: ${maxAbsDiff(got, want)}`);
      await ref.base.release();
    }
    await model.release();
  });

  test("q > 1: the block layout matches an explicit loop over splits, skills and examples", () => {
    const q = 2;
    const s = 3;
    const r = 2;
    const din = 6;
    const dout = 4;
    const c = parsePolyConfig({ peft_type: "POLY", r, n_tasks: 2, n_skills: s, n_splits: q }, "test");
    const layer = { path: "l", key: "l", inFeatures: din, outFeatures: dout };
    const rng = new Rng(5);
    const a = randn(q * s * (din / q) * r, rng);
    const b = randn(q * s * r * (dout / q), rng);
    const w = Float32Array.from({ length: 2 * q * s }, () => rng.next());
    const x = randn(2 * 3 * din, rng, 1);
    const g = trace(
      (aa, bb, ww, xx) => polyMix(xx, aa, bb, ww, layer, c),
      [
        { dtype: "f64", shape: [q, s, din / q, r] },
        { dtype: "f64", shape: [q, s, r, dout / q] },
        { dtype: "f64", shape: [2, q, s] },
        { dtype: "f64", shape: [2, 3, din] },
      ],
    );
    const f = (d: Float32Array, shape: number[]) => hostTensor("f64", shape, Float64Array.from(d));
    const [got] = interpret(g, [f(a, [q, s, din / q, r]), f(b, [q, s, r, dout / q]), f(w, [2, q, s]), f(x, [2, 3, din])], {
      precision: "f64",
    });
    // Explicit: example e's A_e (din × r) has split k in rows k·din/q…; B_e (r × dout) has split k in columns k·dout/q….
    const want = new Float64Array(2 * 3 * dout);
    for (let e = 0; e < 2; e++) {
      const ae = new Float64Array(din * r);
      const be = new Float64Array(r * dout);
      for (let k = 0; k < q; k++)
        for (let j = 0; j < s; j++) {
          const wk = w[(e * q + k) * s + j];
          for (let i = 0; i < din / q; i++)
            for (let t = 0; t < r; t++) ae[(k * (din / q) + i) * r + t] += wk * a[((k * s + j) * (din / q) + i) * r + t];
          for (let t = 0; t < r; t++)
            for (let o = 0; o < dout / q; o++) be[t * dout + k * (dout / q) + o] += wk * b[((k * s + j) * r + t) * (dout / q) + o];
        }
      for (let p = 0; p < 3; p++)
        for (let o = 0; o < dout; o++) {
          let v = 0;
          for (let t = 0; t < r; t++) {
            let xa = 0;
            for (let i = 0; i < din; i++) xa += x[(e * 3 + p) * din + i] * ae[i * r + t];
            v += xa * be[t * dout + o];
          }
          want[(e * 3 + p) * dout + o] = v / r;
        }
    }
    let d = 0;
    for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs((got.data as Float64Array)[i] - want[i]));
    assert.ok(d < 1e-12, `${d}`);
  });

  test("MHR-μ export (w = 1/S) equals the averaged forward, and a task's export equals its eval forward", async () => {
    const model = await loadTestModel("llama_basic");
    const ids = randomIds(2, 5, 100);
    const cfg = { peftType: "POLY", r: 2, nTasks: 3, nSkills: 3, nSplits: 2 };
    const peft = PeftModel.create(model, cfg);
    // Zero logits: sigmoid gives every skill 1/2, normalised 1/S — mttl's AverageSelector.
    randomize(peft, 12, (_k, v) => new Float32Array(v.data.length));
    const c = peft.adapter("default").config as ReturnType<typeof parsePolyConfig>;
    const avg = (await peft.forward({ inputIds: ids, taskIds: [1, 2] })).logits?.data as Float32Array;
    const check = async (task: number | "mean", want: Float32Array) => {
      const ref = PeftModel.create(await loadTestModel("llama_basic"), loraConfigOfPoly(c));
      ref.setAdapterTensors("default", polyToLoraTensors(peft.info, c, peft.adapter("default").tensors, task));
      const got = (await ref.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(got, want) < 1e-5, `${task}: ${maxAbsDiff(got, want)}`);
      await ref.base.release();
    };
    await check("mean", avg);
    randomize(peft, 13, (_k, v) => randn(v.data.length, new Rng(14), 3));
    const t2 = (await peft.forward({ inputIds: ids, taskIds: [2, 2] })).logits?.data as Float32Array;
    await check(2, t2);
    await model.release();
  });

  test("the RelaxedBernoulli path: uniforms drawn in the graph from the seed, sample in closed form", () => {
    const c = parsePolyConfig({ peft_type: "POLY", r: 2, n_tasks: 3, n_skills: 4, n_splits: 2 }, "test");
    const layer = { path: "model.layers.0.self_attn.q_proj", key: "model.layers.0.self_attn.q_proj", inFeatures: 8, outFeatures: 8 };
    const logits = Float32Array.from({ length: 3 * 8 }, (_, i) => Math.sin(i) * 2);
    const ids = [2, 0, 2];
    const seed = 1234n;
    const g = trace(
      (lg, t, sd) => {
        const tensor = (_k: string) => lg;
        return polyLayerWeights({ adapterName: "default", tensor, rowMask: null, training: true, seed: sd }, layer, c, t);
      },
      [
        { dtype: "f32", shape: [3, 8] },
        { dtype: "i32", shape: [3] },
        { dtype: "i64", shape: [] },
      ],
    );
    const [w] = interpret(
      g,
      [
        hostTensor("f32", [3, 8], logits),
        hostTensor("i32", [3], Int32Array.from(ids)),
        hostTensor("i64", [], [seed] as unknown as number[]),
      ],
      { precision: "f64" },
    );
    const s32 = reduceSeed(seed + BigInt(layerSalt(layer.key)));
    const eps = 2 ** -23;
    for (let e = 0; e < 3; e++)
      for (let k = 0; k < 2; k++) {
        const y = Array.from({ length: 4 }, (_, j) => {
          const u = Math.min(Math.max(uniformAt(s32, (e * 2 + k) * 4 + j), eps), 1 - eps);
          const l = logits[ids[e] * 8 + k * 4 + j];
          return 1 / (1 + Math.exp(-(l + Math.log(u) - Math.log1p(-u))));
        });
        const sum = y.reduce((a, b) => a + b, 0) + 1e-12;
        for (let j = 0; j < 4; j++) {
          const got = (w.data as Float64Array)[(e * 2 + k) * 4 + j];
          assert.ok(Math.abs(got - y[j] / sum) < 1e-12, `e${e} k${k} j${j}: ${got} vs ${y[j] / sum}`);
        }
      }
  });

  test("task ids absent from the routing table: one clear error naming the task and the table size", async () => {
    const model = await loadTestModel("llama_basic");
    const ids = randomIds(2, 4, 100);
    const peft = PeftModel.create(model, { peftType: "POLY", nTasks: 3 });
    await assert.rejects(peft.forward({ inputIds: ids }), /routes by task: give a task id .* routing table has 3 tasks/);
    await assert.rejects(peft.forward({ inputIds: ids, taskIds: [0, 3] }), (e: Error) => {
      assert.ok(e instanceof TaskIdError);
      assert.match(e.message, /task id 3 is absent from the routing table of adapter "default" \(3 tasks: ids 0\.\.2\)/);
      return true;
    });
    await assert.rejects(peft.forward({ inputIds: ids, taskIds: [-1, 0] }), /task id -1 is absent/);
    await assert.rejects(peft.forward({ inputIds: ids, taskIds: [0] }), /1 task ids given for a batch of 2 examples/);
    await assert.rejects(peft.generate([[1, 2]], { maxNewTokens: 1, taskIds: [7] }), /task id 7 is absent/);
    peft.useTask(2);
    assert.ok((await peft.forward({ inputIds: ids })).logits);
    const table = { names: ["chat-kind", "define-lemma", "kind-of"] };
    assert.equal(resolveTask("kind-of", table, 3, "x"), 2);
    assert.equal(resolveTask(1, table, 3, "x"), 1);
    assert.throws(
      () => resolveTask("synonyms", table, 3, "data.jsonl:4"),
      /data.jsonl:4: task "synonyms" is absent from the routing table \(3 tasks: "chat-kind", "define-lemma", "kind-of"\)/,
    );
    assert.throws(() => resolveTask(3, table, 3, "--task"), /--task: task id 3 is absent from the routing table \(3 tasks/);
    assert.throws(() => resolveTask(-2, table, 3, "--task"), /task id -2 is absent/);
    assert.throws(() => resolveTask(undefined, table, 3, "data.jsonl:9"), /data.jsonl:9: no task given; the routing table has 3 tasks/);
    const trainer = await PeftTrainer.create(peft);
    await assert.rejects(trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 }), /every training batch needs task ids .* 3 tasks/);
    await assert.rejects(trainer.train({ inputIds: ids, labels: ids, taskIds: [0, 5] }, { lr: 1e-3 }), /task id 5 is absent/);
    await trainer.release();
    await model.release();
  });

  test("lrScale (--poly-router-lr): under SGD the routers move 10× as far, the skills as without it", async () => {
    const ids = randomIds(2, 5, 100);
    const run = async (lrScale?: (k: string) => number) => {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(model, { peftType: "POLY", nTasks: 2, initWeights: false }, { seed: 4 });
      const before = new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(f32(t))]));
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd", momentum: 0 }, lrScale });
      await trainer.train({ inputIds: ids, labels: ids, taskIds: [0, 1] }, { lr: 1e-2, seed: 3 });
      const delta = new Map(
        [...peft.adapter("default").tensors].map(([k, t]) => [k, f32(t).map((x, i) => x - (before.get(k) as Float32Array)[i])]),
      );
      await trainer.release();
      await model.release();
      return delta;
    };
    const plain = await run();
    const scaled = await run((k) => (k.endsWith("module_logits") ? 10 : 1));
    for (const [k, d] of plain) {
      const got = scaled.get(k) as Float32Array;
      const m = k.endsWith("module_logits") ? 10 : 1;
      let worst = 0;
      let size = 0;
      for (let i = 0; i < d.length; i++) {
        worst = Math.max(worst, Math.abs(got[i] - m * d[i]));
        size = Math.max(size, Math.abs(m * d[i]));
      }
      assert.ok(size > 0 && worst <= 1e-3 * size, `${k}: ${worst} of ${size}`);
    }
  });

  test("task ids route images too: a ViT classifier's rows follow their own tasks (pixel inputs)", async () => {
    const model = await AutoModelForImageClassification.fromPretrained(join(GOLDEN_MODELS, "vit_cls"));
    const peft = PeftModel.create(model, { peftType: "POLY", nTasks: 2, nSkills: 2, r: 2, targetModules: ["query", "value"] });
    randomize(peft, 21, (_k, v) => randn(v.data.length, new Rng(22), 3));
    const rng = new Rng(23);
    const pix = Float32Array.from({ length: 2 * 3 * 32 * 32 }, () => rng.next());
    const px = (rows: number[]) => {
      const d = new Float32Array(rows.length * 3 * 32 * 32);
      rows.forEach((r, i) => {
        d.set(pix.subarray(r * 3072, (r + 1) * 3072), i * 3072);
      });
      return hostTensor("f32", [rows.length, 3, 32, 32], d);
    };
    const both = (await peft.forward({ pixelValues: px([0, 1]), taskIds: [1, 0] })).logits?.data as Float32Array;
    const r0 = (await peft.forward({ pixelValues: px([0]), taskIds: [1] })).logits?.data as Float32Array;
    const r1 = (await peft.forward({ pixelValues: px([1]), taskIds: [0] })).logits?.data as Float32Array;
    const other = (await peft.forward({ pixelValues: px([0]), taskIds: [0] })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(both.subarray(0, 4), r0) < 1e-5 && maxAbsDiff(both.subarray(4, 8), r1) < 1e-5);
    assert.ok(maxAbsDiff(r0, other) > 1e-4, "the task changes the output");
    await assert.rejects(peft.forward({ pixelValues: px([0, 1]), taskIds: [0, 2] }), /task id 2 is absent/);
    await model.release();
  });

  test("n_splits must divide in and out features: the error names the tensor", async () => {
    const model = await loadTestModel("llama_basic");
    assert.throws(
      () => PeftModel.create(model, { peftType: "POLY", nSplits: 3 }),
      /n_splits = 3 does not divide in_features = 32 of "model.layers.0.self_attn.q_proj" \(tensor model.layers.0.self_attn.q_proj.poly_lora_A\)/,
    );
    assert.throws(() => PeftModel.create(model, { peftType: "POLY", polyType: "mhr" }), /unsupported poly_type "mhr"/);
    await model.release();
  });

  test("freeze (MHR-z: routers only): A and B stay bit-identical, the routers move", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "POLY", nTasks: 2, initWeights: false });
    const before = new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(f32(t))]));
    const trainer = await PeftTrainer.create(peft, { freeze: (k) => !k.endsWith("module_logits") });
    const ids = randomIds(2, 5, 100);
    await trainer.train({ inputIds: ids, labels: ids, taskIds: [0, 1] }, { lr: 1e-2, seed: 3 });
    for (const [k, t] of peft.adapter("default").tensors) {
      const moved = maxAbsDiff(f32(t), before.get(k) as Float32Array) > 0;
      assert.equal(moved, k.endsWith("module_logits"), k);
    }
    assert.equal(trainer.trainedParameters(), 2 * 2 * 4 * 2);
    await trainer.release();
    await model.release();
  });
});
