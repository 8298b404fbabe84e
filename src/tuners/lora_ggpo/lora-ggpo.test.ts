import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { type LoraLayer, logicalWeight, loraKeys, scaledDelta } from "../lora/layers.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { LoraGgpoConfig } from "./config.js";
import { ggpoLayers, ggpoPerturbation, ggpoScaleKey, LORA_GGPO } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/**
 * σ_i = (σ·‖W'_i‖ + β·‖Ĝ_i‖²)/√in from full float64 matrices: W' = W + s·B·A (LoRA's merge
 * helpers) and Ĝ = s·(B·∇A + ∇B·A) formed entry by entry.
 */
function expectedScales(peft: PeftModel, l: LoraLayer, c: LoraGgpoConfig, gradA: Float32Array, gradB: Float32Array): Float64Array {
  const t = peft.adapter("default").tensors;
  const k = loraKeys(l);
  const a = f32(t.get(k.a));
  const b = f32(t.get(k.b));
  const w = logicalWeight(peft.info, l).data;
  const d = scaledDelta(l, t.get(k.a) as HostTensor, t.get(k.b) as HostTensor).data;
  const [out, n, r, s] = [l.outFeatures, l.inFeatures, l.r, l.scaling];
  const res = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let wn = 0;
    let gn = 0;
    for (let i = 0; i < n; i++) {
      wn += (w[o * n + i] + d[o * n + i]) ** 2;
      let g = 0;
      for (let j = 0; j < r; j++) g += b[o * r + j] * gradA[j * n + i] + gradB[o * r + j] * a[j * n + i];
      gn += (s * g) ** 2;
    }
    res[o] = (c.ggpoSigma * Math.sqrt(wn) + c.ggpoBeta * gn) / Math.sqrt(n);
  }
  return res;
}

const batchOf = (step: number) => {
  const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((step * 31 + r * 7 + t * 5) % 90)));
  return { inputIds: ids, labels: ids };
};

/** n AdamW steps of `config` on llama_basic (seeds 1…n), returning the adapter's tensors. */
async function trainSteps(config: Record<string, unknown>, steps: number): Promise<Map<string, HostTensor>> {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, config, { seed: 3 });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
  for (let s = 1; s <= steps; s++) await trainer.train(batchOf(s), { lr: 1e-2, seed: s });
  const out = new Map(peft.adapter("default").tensors);
  await trainer.release();
  await model.release();
  return out;
}

describe("LoRA-GGPO", () => {
  // The suite's "one optimizer step" check wants fixed tensors untouched, but GGPO's controller
  // rewrites its fixed scales after every step by design: the suite runs without the controller
  // (σ = β = 0; the perturbation is still in the training graph, times zero). The controller, the
  // noise and the scales are checked by the tests below.
  runConformance({
    name: "LoRA-GGPO on llama (q,v defaults)",
    model: "llama_basic",
    identityConfig: { peftType: "LORA_GGPO", r: 4, loraAlpha: 8 },
    config: { peftType: "LORA_GGPO", r: 4, loraAlpha: 8, initLoraWeights: false, ggpoSigma: 0, ggpoBeta: 0 },
  });
  runConformance({
    name: "LoRA-GGPO on GPT-2 Conv1D (fan_in_fan_out)",
    model: "gpt2",
    config: {
      peftType: "LORA_GGPO",
      r: 4,
      loraAlpha: 8,
      fanInFanOut: true,
      targetModules: ["c_attn", "mlp.c_proj"],
      initLoraWeights: false,
      ggpoSigma: 0,
      ggpoBeta: 0,
    },
  });

  test("with ggpo_sigma = ggpo_beta = 0 training equals plain LoRA; with them, the first step does too (σ starts at 0) and the second does not", async () => {
    const lora = { r: 4, loraAlpha: 8, loraDropout: 0.1, initLoraWeights: false };
    const plain3 = await trainSteps({ peftType: "LORA", ...lora }, 3);
    const zero3 = await trainSteps({ peftType: "LORA_GGPO", ...lora, ggpoSigma: 0, ggpoBeta: 0 }, 3);
    for (const [k, t] of plain3) assert.ok(maxAbsDiff(f32(t), f32(zero3.get(k))) <= 1e-6, k);
    const plain1 = await trainSteps({ peftType: "LORA", ...lora }, 1);
    const ggpo1 = await trainSteps({ peftType: "LORA_GGPO", ...lora, ggpoSigma: 0.5, ggpoBeta: 0.5 }, 1);
    for (const [k, t] of plain1) assert.ok(maxAbsDiff(f32(t), f32(ggpo1.get(k))) <= 1e-6, k);
    const plain2 = await trainSteps({ peftType: "LORA", ...lora }, 2);
    const ggpo2 = await trainSteps({ peftType: "LORA_GGPO", ...lora, ggpoSigma: 0.5, ggpoBeta: 0.5 }, 2);
    const moved = [...plain2].filter(([k, t]) => maxAbsDiff(f32(t), f32(ggpo2.get(k))) > 1e-4);
    assert.ok(moved.length > 0, "the perturbation changed nothing");
  });

  test("after a step the scales are (σ·‖(W + s·B·A)_i‖ + β·‖s·(B·∇A + ∇B·A)_i‖²)/√in of that step's gradients (llama; GPT-2 Conv1D)", async () => {
    for (const [name, extra] of [
      ["llama_basic", {}],
      ["gpt2", { fanInFanOut: true, targetModules: ["c_attn", "mlp.c_proj"] }],
    ] as const) {
      const model = await loadTestModel(name);
      const config = { peftType: "LORA_GGPO", r: 4, loraAlpha: 8, initLoraWeights: false, ggpoSigma: 0.2, ggpoBeta: 3, ...extra };
      const peft = PeftModel.create(model, config, { seed: 4 });
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
      assert.deepEqual(
        trainer.controller?.gradientKeys.length,
        2 * ggpoLayers(peft.info, peft.adapter("default").config as LoraGgpoConfig).length,
      );
      const ids = randomIds(2, 5, 256);
      await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2, seed: 1 });
      const grads = trainer.step.getGradients();
      const c = peft.adapter("default").config as LoraGgpoConfig;
      let mean = 0;
      let rows = 0;
      for (const l of ggpoLayers(peft.info, c)) {
        const k = loraKeys(l);
        const want = expectedScales(peft, l, c, f32(grads[k.a]), f32(grads[k.b]));
        const got = f32(peft.adapter("default").tensors.get(ggpoScaleKey(l)));
        for (let o = 0; o < want.length; o++)
          assert.ok(Math.abs(got[o] - want[o]) <= 1e-5 * want[o], `${name} ${l.key}[${o}]: ${got[o]} vs ${want[o]}`);
        assert.ok(want.every((v) => v > 0));
        for (const v of want) mean += v;
        rows += want.length;
      }
      assert.ok(Math.abs((trainer.controllerMetrics().ggpo_std as number) - mean / rows) < 1e-6 * (mean / rows));
      await trainer.release();
      await model.release();
    }
  });

  test("the perturbation ε = diag(σ)·Z: per-row std over 60 seeds matches σ_i (5σ statistical bounds), mean ≈ 0, fresh per seed and per layer", () => {
    const l: LoraLayer = { path: "m.q", key: "m.q", kind: "linear", inFeatures: 16, outFeatures: 6, r: 2, scaling: 1 };
    const other: LoraLayer = { ...l, path: "m.k", key: "m.k" };
    const sigma = [0.5, 2, 0.01, 1, 0, 3];
    // x = I: the layer's output rows are the rows of εᵀ.
    const g = trace(
      (x: Tensor, scale: Tensor, seed: Tensor) => [ggpoPerturbation(x, scale, seed, l), ggpoPerturbation(x, scale, seed, other)],
      [spec("f32", [16, 16]), spec("f32", [6]), spec("i64", [])],
    );
    const eye = new Float32Array(256);
    for (let i = 0; i < 16; i++) eye[i * 17] = 1;
    const seeds = 60;
    const sum = new Float64Array(6);
    const sq = new Float64Array(6);
    let first: Float32Array | null = null;
    for (let s = 0; s < seeds; s++) {
      const [eT, eOther] = interpret(g, [
        hostTensor("f32", [16, 16], eye),
        hostTensor("f32", [6], sigma),
        hostTensor("i64", [], [BigInt(1000 + s)] as unknown as number[]),
      ]).map((t) => t.data as Float32Array);
      if (s === 0) first = eT;
      if (s === 1) assert.ok(maxAbsDiff(eT, first as Float32Array) > 0.1, "the same noise for two seeds");
      if (s === 0) assert.ok(maxAbsDiff(eT, eOther) > 0.1, "the same noise in two layers");
      for (let i = 0; i < 16; i++)
        for (let o = 0; o < 6; o++) {
          const v = eT[i * 6 + o];
          sum[o] += v;
          sq[o] += v * v;
        }
    }
    const n = seeds * 16;
    for (let o = 0; o < 6; o++) {
      const mean = sum[o] / n;
      const std = Math.sqrt(sq[o] / n - mean * mean);
      if (sigma[o] === 0) {
        assert.equal(sq[o], 0);
        continue;
      }
      // Sample std of n normals: relative standard error 1/√(2n) ≈ 2.3%; the mean's is σ/√n.
      assert.ok(Math.abs(std / sigma[o] - 1) < 5 / Math.sqrt(2 * n), `row ${o}: std ${std} vs ${sigma[o]}`);
      assert.ok(Math.abs(mean) < (5 * sigma[o]) / Math.sqrt(n), `row ${o}: mean ${mean}`);
    }
  });

  test("inference and merging ignore the scales: outputs equal a LoRA adapter with the same A and B, unmerged and merged", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "LORA_GGPO", r: 4, loraAlpha: 8, initLoraWeights: false }, { seed: 2 });
    const c = peft.adapter("default").config as LoraGgpoConfig;
    const big = new Map<string, HostTensor>();
    const rng = new Rng(1);
    for (const l of ggpoLayers(peft.info, c))
      big.set(
        ggpoScaleKey(l),
        hostTensor(
          "f32",
          [l.outFeatures],
          Float32Array.from({ length: l.outFeatures }, () => 5 + rng.next()),
        ),
      );
    peft.setAdapterTensors("default", big);
    peft.addAdapter("lora", { peftType: "LORA", r: 4, loraAlpha: 8, initLoraWeights: false }, { seed: 9 });
    peft.setAdapterTensors("lora", new Map([...peft.adapter("default").tensors].filter(([k]) => !k.endsWith(".ggpo_scale"))));
    const ids = randomIds(2, 5, 256);
    const logits = async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const ggpo = await logits();
    peft.setAdapter("lora");
    assert.ok(maxAbsDiff(await logits(), ggpo) < 1e-6);
    peft.setAdapter("default");
    peft.mergeAdapter();
    assert.ok(maxAbsDiff(await logits(), ggpo) < 1e-4);
    await model.release();
  });

  test("the folder holds PEFT LoRA's tensors only; with peft_type LORA it loads as LoRA with the same outputs; the scales come back as zeros", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-ggpo-"));
    try {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(
        model,
        { peftType: "LORA_GGPO", r: 4, loraAlpha: 8, initLoraWeights: false, ggpoSigma: 0.1 },
        { seed: 2 },
      );
      const c = peft.adapter("default").config as LoraGgpoConfig;
      const l0 = ggpoLayers(peft.info, c)[0];
      peft.setAdapterTensors(
        "default",
        new Map([[ggpoScaleKey(l0), hostTensor("f32", [l0.outFeatures], new Float32Array(l0.outFeatures).fill(1))]]),
      );
      const ids = randomIds(2, 5, 256);
      const before = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      peft.savePretrained(dir);
      const f = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
      const names = f.entries.map((e) => e.name);
      f.close();
      assert.ok(names.length > 0 && names.every((n) => /\.lora_[AB]\.weight$/.test(n)), names.join(", "));
      const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
      assert.deepEqual([cfg.peft_type, cfg.r, cfg.lora_alpha, cfg.ggpo_sigma, cfg.ggpo_beta], ["LORA_GGPO", 4, 8, 0.1, 0.01]);
      const fresh = await loadTestModel("llama_basic");
      const back = PeftModel.fromPretrained(fresh, dir);
      assert.ok(f32(back.adapter("default").tensors.get(ggpoScaleKey(l0))).every((v) => v === 0));
      assert.ok(maxAbsDiff((await back.forward({ inputIds: ids })).logits?.data as Float32Array, before) < 1e-6);
      // As HF PEFT would read it: peft_type LORA (PEFT ignores the unknown ggpo_* fields with a warning).
      const { ggpo_sigma: _s, ggpo_beta: _b, ...asLora } = cfg;
      writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ ...asLora, peft_type: "LORA" }));
      const fresh2 = await loadTestModel("llama_basic");
      const asPlain = PeftModel.fromPretrained(fresh2, dir);
      assert.equal(asPlain.adapter("default").tuner.peftType, "LORA");
      assert.ok(maxAbsDiff((await asPlain.forward({ inputIds: ids })).logits?.data as Float32Array, before) < 1e-6);
      await Promise.all([model.release(), fresh.release(), fresh2.release()]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("config: defaults σ = 0.03, β = 0.01; DoRA and negative weights are refused", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "LORA_GGPO" });
    const c = peft.adapter("default").config as LoraGgpoConfig;
    assert.deepEqual([c.ggpoSigma, c.ggpoBeta, c.r], [0.03, 0.01, 8]);
    assert.equal(peft.parameterCounts().trainable, 2 * 2 * 8 * (32 + 32));
    assert.throws(() => peft.addAdapter("d", { peftType: "LORA_GGPO", useDora: true }), /LORA_GGPO does not combine with "use_dora"/);
    assert.throws(() => peft.addAdapter("n", { peftType: "LORA_GGPO", ggpoBeta: -1 }), /field "ggpo_beta" must be a finite number >= 0/);
    assert.equal(LORA_GGPO.controller?.(peft.info, { ...c, ggpoSigma: 0, ggpoBeta: 0 }, { totalSteps: null }), null);
    await model.release();
  });
});
