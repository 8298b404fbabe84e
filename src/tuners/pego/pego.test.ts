import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { gradCheck } from "../../engine/autodiff/gradcheck.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { WeightContext } from "../../nn/context.js";
import { Progress } from "../../train/progress.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { logicalWeight } from "../lora/layers.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { WrapOptions } from "../tuner.js";
import type { PegoConfig } from "./config.js";
import { PEGO, pegoKeys, pegoLayers } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/**
 * PEGO.loss traced with the adapter's tensors (and, with `viaWrap`, the base weights) as inputs,
 * run on the reference interpreter. viaWrap: wrap() is called first with the same options, as the
 * trainer does, so the regulariser reads the weights from the step's inputs.
 */
function methodLoss(peft: PeftModel, viaWrap: boolean): number {
  const a = peft.adapter("default");
  const entries = [...a.tensors];
  const weights = viaWrap ? [...peft.base.weights] : [];
  const g = trace(
    (...xs: Tensor[]) => {
      const at = new Map(entries.map(([k], i) => [k, xs[i]]));
      const w = new Map(weights.map(([k], i) => [k, xs[entries.length + i]]));
      const opts: WrapOptions = { adapterName: "default", tensor: (k) => at.get(k) as Tensor, rowMask: null, training: true, seed: null };
      if (viaWrap) PEGO.wrap(new WeightContext((n) => w.get(n), new Set(w.keys())), peft.info, a.config as PegoConfig, opts);
      return PEGO.loss?.(peft.info, a.config as PegoConfig, opts) as Tensor;
    },
    [...entries, ...weights].map(([, t]) => ({ dtype: t.dtype, shape: t.shape })),
  );
  return (
    interpret(
      g,
      [...entries, ...weights].map(([, t]) => t),
    )[0].data as Float32Array
  )[0];
}

/** λ·Σ_layers Σ_n (‖W·ΔW_nᵀ‖₁ + Σ_{m>n} ‖ΔW_n·ΔW_mᵀ‖₁) in float64 from full [out, in] matrices, as the authors' code computes it. */
function closedForm(peft: PeftModel): number {
  const a = peft.adapter("default");
  const c = a.config as PegoConfig;
  let total = 0;
  for (const l of pegoLayers(peft.info, c)) {
    const k = pegoKeys(l.key, c.loraNums);
    const [out, inF, r, s] = [l.outFeatures, l.inFeatures, c.r, l.scaling];
    const w = logicalWeight(peft.info, l).data;
    const delta = k.a.map((ka, n) => {
      const am = f32(a.tensors.get(ka));
      const bm = f32(a.tensors.get(k.b[n]));
      const d = new Float64Array(out * inF);
      for (let o = 0; o < out; o++)
        for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) d[o * inF + i] += s * bm[o * r + j] * am[j * inF + i];
      return d;
    });
    /** Σ|X·Yᵀ| for [out, in] X and Y. */
    const l1OfProduct = (x: ArrayLike<number>, y: ArrayLike<number>) => {
      let sum = 0;
      for (let p = 0; p < out; p++)
        for (let q = 0; q < out; q++) {
          let v = 0;
          for (let i = 0; i < inF; i++) v += x[p * inF + i] * y[q * inF + i];
          sum += Math.abs(v);
        }
      return sum;
    };
    for (let n = 0; n < c.loraNums; n++) {
      total += l1OfProduct(w, delta[n]);
      for (let m = n + 1; m < c.loraNums; m++) total += l1OfProduct(delta[n], delta[m]);
    }
  }
  return c.orthLambda * total;
}

describe("PEGO", () => {
  // The regulariser is a sum of |·| over [out, out] products: a finite difference of the full
  // objective (h = 1e-5, f32-rounded inputs) crosses a kink of some entry near 0 (relative errors
  // 7e-4 at λ = 0.05, still 2.5e-6 at λ = 1e-5; measured). The suite runs with λ = 1e-8, so the
  // method loss is part of its objective; the regulariser's own gradient is checked in f64 with a
  // small step below.
  runConformance({
    name: "PEGO on llama (q_proj, v_proj; 3 modules of rank 2)",
    model: "llama_basic",
    identityConfig: { peftType: "PEGO", loraNums: 3, r: 2 },
    config: { peftType: "PEGO", loraNums: 3, r: 2, orthLambda: 1e-8, initWeights: false },
  });
  runConformance({
    name: "PEGO on GPT-2 Conv1D (c_attn, c_fc; α = 8, dropout 0.1)",
    model: "gpt2",
    config: {
      peftType: "PEGO",
      targetModules: ["c_attn", "c_fc"],
      loraNums: 2,
      loraAlpha: 8,
      loraDropout: 0.1,
      orthLambda: 1e-8,
      initWeights: false,
    },
  });

  test("the regulariser equals λ·Σ(‖W·ΔW_nᵀ‖₁ + Σ_{m>n}‖ΔW_n·ΔW_mᵀ‖₁) computed in float64 (llama, GPT-2 Conv1D)", async () => {
    for (const [name, extra] of [
      ["llama_basic", {}],
      ["gpt2", { targetModules: ["c_attn", "c_proj"] }],
    ] as const) {
      const model = await loadTestModel(name);
      const peft = PeftModel.create(
        model,
        { peftType: "PEGO", loraNums: 3, r: 2, loraAlpha: 6, orthLambda: 0.3, initWeights: false, ...extra },
        { seed: 5 },
      );
      const want = closedForm(peft);
      assert.ok(want > 0);
      for (const viaWrap of [false, true]) {
        const got = methodLoss(peft, viaWrap);
        assert.ok(Math.abs(got - want) < 1e-5 * want, `${name} viaWrap=${viaWrap}: ${got} vs ${want}`);
      }
      await model.release();
    }
  });

  test("the regulariser's gradient matches f64 central differences (h = 1e-7)", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(
      model,
      { peftType: "PEGO", loraNums: 3, r: 2, loraAlpha: 3, orthLambda: 0.5, initWeights: false },
      { seed: 6 },
    );
    const a = peft.adapter("default");
    const keys = [...a.tensors.keys()];
    const inputs = keys.map((k) => hostTensor("f64", a.tensors.get(k)?.shape as number[], Float64Array.from(f32(a.tensors.get(k)))));
    const res = gradCheck(
      (...xs: Tensor[]) =>
        PEGO.loss?.(peft.info, a.config as PegoConfig, {
          adapterName: "default",
          tensor: (k) => xs[keys.indexOf(k)],
          rowMask: null,
          training: true,
          seed: null,
        }) as Tensor,
      inputs,
      { h: 1e-7, maxElements: 6 },
    );
    const worst = res.relErrors.map((e, i) => [e, keys[i]] as const).filter(([e]) => !(e <= 1e-6));
    assert.deepEqual(worst, []);
    assert.ok(
      res.analytic.every((g) => g.some((v) => v !== 0)),
      "every tensor gets a gradient",
    );
    await model.release();
  });

  test("the regulariser is zero at the default init (B = 0) and for modules orthogonal to W and to each other", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "PEGO", loraNums: 2, r: 1, targetModules: ["q_proj"] }, { seed: 2 });
    assert.equal(methodLoss(peft, true), 0);
    const c = peft.adapter("default").config as PegoConfig;
    // W's row space misses e_0 and e_1 once those columns are zeroed; A_0 = e_0ᵀ and A_1 = e_1ᵀ then give
    // W·ΔW_nᵀ = 0 and ΔW_0·ΔW_1ᵀ = s²·B_0·(A_0·A_1ᵀ)·B_1ᵀ = 0, whatever B is.
    const edited = new Map<string, HostTensor>();
    for (const l of pegoLayers(peft.info, c)) {
      const name = `${l.path}.weight`;
      const w = Float32Array.from(f32(model.weights.get(name)));
      for (let o = 0; o < l.outFeatures; o++) w[o * l.inFeatures] = w[o * l.inFeatures + 1] = 0;
      model.weights.set(name, hostTensor("f32", [l.outFeatures, l.inFeatures], w));
      const k = pegoKeys(l.key, 2);
      for (let n = 0; n < 2; n++) {
        const a = new Float32Array(l.inFeatures);
        a[n] = 1;
        edited.set(k.a[n], hostTensor("f32", [1, l.inFeatures], a));
        edited.set(
          k.b[n],
          hostTensor(
            "f32",
            [l.outFeatures, 1],
            Float32Array.from({ length: l.outFeatures }, (_, i) => 1 + i),
          ),
        );
      }
    }
    peft.setAdapterTensors("default", edited);
    assert.equal(methodLoss(peft, false), 0);
    await model.release();
  });

  test("keys, shapes, defaults (r 4, 4 modules, α = r, λ 1e-3), and N·r·(in + out) trainable per layer; merge = W + s·Σ B_n·A_n", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "PEGO", targetModules: ["gate_proj"] });
    const a = peft.adapter("default");
    const c = a.config as PegoConfig;
    assert.deepEqual([c.r, c.loraNums, c.loraAlpha, c.orthLambda, c.loraDropout], [4, 4, 4, 1e-3, 0]);
    const k = pegoKeys("model.layers.0.mlp.gate_proj", 4);
    assert.deepEqual([...a.tensors.keys()].filter((x) => x.startsWith("model.layers.0.")).sort(), [...k.a, ...k.b].sort());
    assert.equal(k.a[2], "model.layers.0.mlp.gate_proj.pego_A.2.weight");
    assert.deepEqual(a.tensors.get(k.a[0])?.shape, [4, 32]);
    assert.deepEqual(a.tensors.get(k.b[3])?.shape, [64, 4]);
    assert.equal(peft.parameterCounts().trainable, 2 * 4 * 4 * (32 + 64));
    const json = a.tuner.toJson(a.config);
    assert.deepEqual([json.peft_type, json.r, json.lora_nums, json.lora_alpha, json.orth_lambda], ["PEGO", 4, 4, 4, 1e-3]);
    // Merge against a host sum of the modules' products.
    const a2 = peft.addAdapter(
      "p2",
      { peftType: "PEGO", targetModules: ["gate_proj"], loraNums: 2, r: 2, loraAlpha: 3, initWeights: false },
      { seed: 9 },
    );
    const merged = PEGO.merge?.(peft.info, a2.config as PegoConfig, a2.tensors) as Map<string, HostTensor>;
    const path = "model.layers.1.mlp.gate_proj";
    const k2 = pegoKeys(path, 2);
    const w0 = f32(model.weights.get(`${path}.weight`));
    const got = f32(merged.get(`${path}.weight`));
    let worst = 0;
    for (let o = 0; o < 64; o++)
      for (let i = 0; i < 32; i++) {
        let d = 0;
        for (let n = 0; n < 2; n++)
          for (let j = 0; j < 2; j++) d += 1.5 * f32(a2.tensors.get(k2.b[n]))[o * 2 + j] * f32(a2.tensors.get(k2.a[n]))[j * 32 + i];
        worst = Math.max(worst, Math.abs(got[o * 32 + i] - (w0[o * 32 + i] + d)));
      }
    assert.ok(worst < 1e-6, `merge off by ${worst}`);
    await model.release();
  });

  test("training: metrics.jsonl logs method_loss = the regulariser before each step", async () => {
    const root = mkdtempSync(join(tmpdir(), "peftkit-pego-"));
    try {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(model, { peftType: "PEGO", loraNums: 2, r: 2, orthLambda: 0.02, initWeights: false }, { seed: 11 });
      const first = closedForm(peft);
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
      const source: BatchSource = {
        batchesPerEpoch: 2,
        batch: (epoch, index) => {
          const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
          return { inputIds: ids, labels: ids, tokens: 12 };
        },
      };
      await new Trainer(
        { trainer, peft, causal: true, classification: false },
        source,
        null,
        { outputDir: root, maxSteps: 2, lr: 1e-2, seed: 1, saveSteps: 0 },
        new Progress({ write: () => true, isTTY: false }, 1000),
      ).run();
      const records = readFileSync(join(root, "metrics.jsonl"), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l))
        .filter((r) => r.loss !== undefined);
      assert.equal(records.length, 2);
      assert.ok(Math.abs(records[0].method_loss - first) < 1e-5 * first, `${records[0].method_loss} vs ${first}`);
      // The regulariser pulls the modules apart: it shrinks under training (task loss is small here).
      assert.ok(records[1].method_loss > 0 && records[1].method_loss !== records[0].method_loss);
      const after = closedForm(peft);
      assert.ok(after !== first);
      // The trained adapter still merges to the same outputs.
      const ids = randomIds(1, 5, 256);
      const unmerged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      peft.mergeAdapter();
      assert.ok(maxAbsDiff((await peft.forward({ inputIds: ids })).logits?.data as Float32Array, unmerged) < 1e-4);
      await trainer.release();
      await model.release();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test("errors: r larger than the layer, a negative λ, zero modules", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "PEGO" });
    assert.throws(
      () => peft.addAdapter("a", { peftType: "PEGO", r: 40 }),
      /PEGO: r = 40 exceeds min\(out, in\) = 32 of "model.layers.0.self_attn.q_proj"/,
    );
    assert.throws(() => peft.addAdapter("b", { peftType: "PEGO", orthLambda: -1 }), /field "orth_lambda" must be >= 0/);
    assert.throws(() => peft.addAdapter("c", { peftType: "PEGO", loraNums: 0 }), /field "lora_nums" must be an integer >= 1/);
    await model.release();
  });
});
