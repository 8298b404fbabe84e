import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { WeightContext } from "../../nn/context.js";
import { Progress } from "../../train/progress.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { svd } from "../../util/linalg.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { maxDiff } from "../ia3/testing.js";
import { logicalWeight } from "../lora/layers.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { KasaConfig } from "./config.js";
import { KASA, kasaKeys, kasaLayers } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/** KASA.loss traced with the adapter's tensors as inputs, run on the reference interpreter. */
function methodLoss(peft: PeftModel, name = "default"): number {
  const a = peft.adapter(name);
  const entries = [...a.tensors];
  const g = trace(
    (...xs: Tensor[]) => {
      const at = new Map(entries.map(([k], i) => [k, xs[i]]));
      return KASA.loss?.(peft.info, a.config as KasaConfig, {
        adapterName: name,
        tensor: (k) => at.get(k) as Tensor,
        rowMask: null,
        training: true,
        seed: null,
      }) as Tensor;
    },
    entries.map(([, t]) => ({ dtype: t.dtype, shape: t.shape })),
  );
  return (
    interpret(
      g,
      entries.map(([, t]) => t),
    )[0].data as Float32Array
  )[0];
}

/** (β·Σ‖δ‖² + γ·Σ(‖BᵀB − I‖_F + ‖A·Aᵀ − I‖_F)) / #layers in plain JS (float64) from the adapter's tensors. */
function closedForm(peft: PeftModel, name = "default"): number {
  const a = peft.adapter(name);
  const c = a.config as KasaConfig;
  const layers = kasaLayers(peft.info, c);
  const gramDistance = (m: Float32Array, rows: number, cols: number, left: boolean) => {
    // left: MᵀM (cols×cols); else M·Mᵀ (rows×rows).
    const n = left ? cols : rows;
    let s = 0;
    for (let p = 0; p < n; p++)
      for (let q = 0; q < n; q++) {
        let g = 0;
        if (left) for (let i = 0; i < rows; i++) g += m[i * cols + p] * m[i * cols + q];
        else for (let j = 0; j < cols; j++) g += m[p * cols + j] * m[q * cols + j];
        s += (g - (p === q ? 1 : 0)) ** 2;
      }
    return Math.sqrt(s);
  };
  let diag = 0;
  let orth = 0;
  for (const l of layers) {
    const k = kasaKeys(l.key);
    for (const d of f32(a.tensors.get(k.diag))) diag += d * d;
    orth +=
      gramDistance(f32(a.tensors.get(k.b)), l.outFeatures, c.r, true) + gramDistance(f32(a.tensors.get(k.a)), c.r, l.inFeatures, false);
  }
  return (c.beta * diag + c.gamma * orth) / layers.length;
}

describe("KaSA", () => {
  runConformance({
    name: "KaSA on llama (q_proj, v_proj)",
    model: "llama_basic",
    config: { peftType: "KASA", initWeights: false },
  });
  runConformance({
    name: "KaSA on GPT-2 Conv1D (c_attn, c_fc; r = 4, dropout 0.1)",
    model: "gpt2",
    config: { peftType: "KASA", targetModules: ["c_attn", "c_fc"], r: 4, loraDropout: 0.1, initWeights: false },
  });

  test("the merged-at-init base is W without exactly its r smallest singular triplets", async () => {
    for (const name of ["llama_basic", "gpt2"] as const) {
      const model = await loadTestModel(name);
      const originals = new Map([...model.weights].map(([k, t]) => [k, t]));
      const peft = PeftModel.create(model, { peftType: "KASA", r: 3 }, { seed: 1 });
      const c = peft.adapter("default").config as KasaConfig;
      const layers = kasaLayers(peft.info, c);
      const before = layers.map((l) => svd(logicalWeight(peft.info, l)).s);
      peft.mergeAdapter();
      layers.forEach((l, i) => {
        const s = svd(logicalWeight(peft.info, l)).s;
        const k = s.length;
        // The top k − r values are kept (to f32 rounding), the r smallest are gone.
        assert.ok(maxDiff(s.subarray(0, k - 3), before[i].subarray(0, k - 3)) < 1e-5, `${name} ${l.key} kept`);
        assert.ok(
          s.subarray(k - 3).every((v) => v < 1e-5),
          `${name} ${l.key} dropped: ${[...s.subarray(k - 3)]}`,
        );
        assert.ok(before[i][k - 1] > 1e-3, "the test needs a non-zero tail");
        // W − W' = U_t·Σ_t·V_tᵀ has Frobenius norm² Σ_t σ².
        const w0 = logicalWeight(peft.info, l, originals.get(`${l.path}.weight`));
        const w1 = logicalWeight(peft.info, l);
        let fro = 0;
        for (let j = 0; j < w0.data.length; j++) fro += (w0.data[j] - w1.data[j]) ** 2;
        const tail = before[i].subarray(k - 3).reduce((p, v) => p + v * v, 0);
        assert.ok(Math.abs(fro - tail) < 1e-5 * Math.max(1, tail), `${name} ${l.key}: ${fro} vs ${tail}`);
      });
      // Unmerged (B = 0 at init) the forward computes the same truncated model.
      const ids = randomIds(2, 5, 256);
      const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      peft.unmergeAdapter();
      const unmerged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(merged, unmerged) < 1e-4);
      await model.release();
    }
  });

  test("keys and shapes; trainable: A, B and δ, r·(in + out + 1) per layer; the tail is frozen", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "KASA", targetModules: ["gate_proj"] });
    const a = peft.adapter("default");
    const k = kasaKeys("model.layers.0.mlp.gate_proj");
    assert.deepEqual([...a.tensors.keys()].filter((x) => x.startsWith("model.layers.0.")).sort(), Object.values(k).sort());
    assert.deepEqual(a.tensors.get(k.a)?.shape, [8, 32]);
    assert.deepEqual(a.tensors.get(k.b)?.shape, [64, 8]);
    assert.deepEqual(a.tensors.get(k.tailU)?.shape, [64, 8]);
    assert.deepEqual(a.tensors.get(k.tailV)?.shape, [8, 32]);
    assert.ok(f32(a.tensors.get(k.b)).every((v) => v === 0));
    let trainable = 0;
    for (const [key, t] of a.tensors) if (KASA.trainable?.(key, a.config as KasaConfig)) trainable += t.data.length;
    assert.equal(trainable, 2 * 8 * (32 + 64 + 1));
    assert.equal(peft.parameterCounts().trainable, trainable);
    const json = a.tuner.toJson(a.config);
    assert.deepEqual([json.r, json.lora_alpha, json.lora_dropout, json.beta, json.gamma], [8, 16, 0, 1e-4, 1e-3]);
    await model.release();
  });

  test("the regulariser equals (β·Σ‖δ‖² + γ·Σ(‖BᵀB − I‖_F + ‖A·Aᵀ − I‖_F)) / #layers", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "KASA", r: 2, beta: 0.3, gamma: 0.7, initWeights: false }, { seed: 5 });
    const a = peft.adapter("default");
    const layers = kasaLayers(peft.info, a.config as KasaConfig);
    const want = closedForm(peft);
    const got = methodLoss(peft);
    assert.ok(Math.abs(got - want) < 1e-5 * want, `${got} vs ${want}`);
    // An orthonormal A and B (here: unit vectors) and δ = 0 make it vanish.
    const zeroed = new Map<string, HostTensor>();
    for (const l of layers) {
      const k = kasaKeys(l.key);
      const unit = (rows: number, cols: number) => {
        const m = new Float32Array(rows * cols);
        for (let j = 0; j < Math.min(rows, cols); j++) m[j * cols + j] = 1;
        return m;
      };
      zeroed.set(k.a, hostTensor("f32", [2, l.inFeatures], unit(2, l.inFeatures)));
      zeroed.set(k.b, hostTensor("f32", [l.outFeatures, 2], unit(l.outFeatures, 2)));
      zeroed.set(k.diag, hostTensor("f32", [2], [0, 0]));
    }
    peft.setAdapterTensors("default", zeroed);
    assert.equal(methodLoss(peft), 0);
    await model.release();
  });

  test("training: metrics.jsonl logs method_loss (the regulariser before each step); fixed tail tensors do not move", async () => {
    const root = mkdtempSync(join(tmpdir(), "peftkit-kasa-"));
    try {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(model, { peftType: "KASA", r: 4, beta: 0.5, gamma: 0.25 }, { seed: 11 });
      const first = closedForm(peft);
      const tail = new Map(
        [...peft.adapter("default").tensors].filter(([k]) => k.includes(".kasa_tail_")).map(([k, t]) => [k, f32(t).slice()]),
      );
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
      const source: BatchSource = {
        batchesPerEpoch: 2,
        batch: (epoch, index) => {
          const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
          return { inputIds: ids, labels: ids, tokens: 12 };
        },
      };
      const progress = new Progress({ write: () => true, isTTY: false }, 1000);
      await new Trainer(
        { trainer, peft, causal: true, classification: false },
        source,
        null,
        { outputDir: root, maxSteps: 2, lr: 1e-2, seed: 1, saveSteps: 0 },
        progress,
      ).run();
      const records = readFileSync(join(root, "metrics.jsonl"), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l))
        .filter((r) => r.loss !== undefined);
      assert.equal(records.length, 2);
      assert.ok(Math.abs(records[0].method_loss - first) < 1e-5 * first, `${records[0].method_loss} vs ${first}`);
      assert.ok(records[1].method_loss > 0 && records[1].method_loss !== records[0].method_loss);
      for (const [k, t] of peft.adapter("default").tensors) if (tail.has(k)) assert.deepEqual(f32(t), tail.get(k), k);
      await trainer.release();
      await model.release();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("dropout draws a different mask in each layer (q and k share their input)", async () => {
    const model = await loadTestModel("llama_basic");
    const q = "model.layers.0.self_attn.q_proj";
    const k = "model.layers.0.self_attn.k_proj";
    const peft = PeftModel.create(model, {
      peftType: "KASA",
      r: 4,
      loraDropout: 0.5,
      initWeights: false,
      targetModules: ["q_proj", "k_proj"],
    });
    const a = peft.adapter("default");
    // Same tensors and a zero base weight in both layers: their outputs differ only by the dropout mask.
    const kq = kasaKeys(q);
    const kk = kasaKeys(k);
    peft.setAdapterTensors(
      "default",
      new Map((Object.keys(kq) as (keyof typeof kq)[]).map((part) => [kk[part], a.tensors.get(kq[part]) as HostTensor])),
    );
    const keys = [...a.tensors.keys()];
    const g = trace(
      (x: Tensor, seed: Tensor, zero: Tensor, ...adapter: Tensor[]) => {
        const base = new WeightContext(() => zero, new Set([`${q}.weight`, `${k}.weight`]));
        const tensor = (key: string) => adapter[keys.indexOf(key)];
        const ctx = a.tuner.wrap(base, peft.info, a.config, { adapterName: "default", tensor, rowMask: null, training: true, seed });
        return [ctx.linear(q, x), ctx.linear(k, x)];
      },
      [
        spec("f32", [1, 3, 32]),
        spec("i64", []),
        spec("f32", [32, 32]),
        ...keys.map((key) => spec("f32", a.tensors.get(key)?.shape as number[])),
      ],
    );
    const x = hostTensor(
      "f32",
      [1, 3, 32],
      Float32Array.from({ length: 96 }, (_, i) => 1 + (i % 7)),
    );
    const [yq, yk] = interpret(g, [
      x,
      hostTensor("i64", [], [5n] as unknown as number[]),
      hostTensor("f32", [32, 32]),
      ...keys.map((key) => a.tensors.get(key) as HostTensor),
    ]);
    assert.ok(maxDiff(yq.data as Float32Array, yk.data as Float32Array) > 1e-3, "q and k dropped the same features");
    await model.release();
  });

  test("errors: r larger than the layer, a negative β", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "KASA" });
    assert.throws(
      () => peft.addAdapter("a", { peftType: "KASA", r: 40 }),
      /KaSA: r = 40 exceeds min\(out, in\) = 32 of "model.layers.0.self_attn.q_proj"/,
    );
    assert.throws(() => peft.addAdapter("b", { peftType: "KASA", beta: -1 }), /field "beta" must be >= 0/);
    await model.release();
  });
});
