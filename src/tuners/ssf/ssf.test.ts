import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

describe("SSF", () => {
  runConformance({
    name: "SSF on llama (all-linear; merging adds biases to bias-less layers)",
    model: "llama_basic",
    identityConfig: { peftType: "SSF" },
    config: { peftType: "SSF", initSsfWeights: false },
  });
  runConformance({
    name: "SSF on GPT-2 Conv1D (all-linear)",
    model: "gpt2",
    identityConfig: { peftType: "SSF" },
    config: { peftType: "SSF", initSsfWeights: false },
  });
  runConformance({
    name: "SSF on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    // Not "key": a per-channel shift of the keys adds the same score to every key, so its gradient is exactly zero.
    config: { peftType: "SSF", targetModules: ["query", "value", "dense"], initSsfWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("keys <module>.ssf_scale / .ssf_shift [out] on every linear layer but the head; init γ = 1, β = 0", async () => {
    const model = await loadTestModel("llama_basic");
    const t = PeftModel.create(model, { peftType: "SSF" }).adapter("default").tensors;
    assert.equal(t.size, 2 * 7 * 2);
    assert.ok(!t.has("lm_head.ssf_scale"));
    assert.deepEqual(t.get("model.layers.1.self_attn.k_proj.ssf_scale")?.shape, [32]);
    assert.deepEqual(t.get("model.layers.1.mlp.gate_proj.ssf_shift")?.shape, [64]);
    for (const [k, v] of t)
      assert.ok(
        f32(v).every((x) => x === (k.endsWith("ssf_scale") ? 1 : 0)),
        k,
      );
    await model.release();
  });

  test("a layer computes γ ⊙ (W·x + b) + β, and only on its rows in mixed batches", async () => {
    for (const [name, path] of [
      ["gpt2", "transformer.h.0.attn.c_attn"],
      ["llama_basic", "model.layers.1.mlp.up_proj"],
    ] as const) {
      const model = await loadTestModel(name);
      const peft = PeftModel.create(model, { peftType: "SSF", initSsfWeights: false }, { seed: 21 });
      const t = peft.adapter("default").tensors;
      const fif = peft.info.fanInFanOut;
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const b = model.weights.get(`${path}.bias`) ?? null;
      const [inF, out] = fif ? w.shape : [w.shape[1], w.shape[0]];
      const g = f32(t.get(`${path}.ssf_scale`));
      const s = f32(t.get(`${path}.ssf_shift`));
      const x = randomTensor([2, inF]);
      const base = linearJs(x.data as Float32Array, 2, w, b, fif);
      const want = base.map((v, k) => v * g[k % out] + s[k % out]);
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: fif }), x);
      assert.ok(maxDiff(got, want) < 1e-5, `${name}: ${maxDiff(got, want)}`);
      const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: fif }), x, [1, 0]);
      assert.ok(maxDiff(mixed.subarray(0, out), want.subarray(0, out)) < 1e-5, `${name} adapter row`);
      assert.ok(maxDiff(mixed.subarray(out), base.subarray(out)) < 1e-5, `${name} base row`);
      await model.release();
    }
  });

  test("merging into GPT-2 scales W's output columns by γ and gives b' = γ ⊙ b + β", async () => {
    const model = await loadTestModel("gpt2");
    const path = "transformer.h.1.mlp.c_fc";
    const w = Float32Array.from(f32(model.weights.get(`${path}.weight`)));
    const b = Float32Array.from(f32(model.weights.get(`${path}.bias`)));
    const [inF, out] = (model.weights.get(`${path}.weight`) as HostTensor).shape;
    const peft = PeftModel.create(model, { peftType: "SSF", initSsfWeights: false }, { seed: 22 });
    const g = f32(peft.adapter("default").tensors.get(`${path}.ssf_scale`));
    const s = f32(peft.adapter("default").tensors.get(`${path}.ssf_shift`));
    peft.mergeAdapter();
    const wm = f32(model.weights.get(`${path}.weight`));
    for (let i = 0; i < inF; i++) for (let o = 0; o < out; o++) assert.ok(Math.abs(wm[i * out + o] - w[i * out + o] * g[o]) < 1e-7);
    assert.ok(
      maxDiff(
        f32(model.weights.get(`${path}.bias`)),
        Float32Array.from(b, (v, o) => v * g[o] + s[o]),
      ) < 1e-7,
    );
    peft.unmergeAdapter();
    assert.deepEqual(f32(model.weights.get(`${path}.weight`)), w);
    await model.release();
  });

  test("llama: a non-zero shift merges as a new bias, which unmerge removes; a zero shift changes only W", async () => {
    const model = await loadTestModel("llama_basic");
    const before = new Map([...model.weights].map(([k, v]) => [k, f32(v)]));
    const peft = PeftModel.create(model, { peftType: "SSF", initSsfWeights: false }, { seed: 23 });
    const ids0 = randomIds(2, 5, 256);
    const unmerged0 = (await peft.forward({ inputIds: ids0 })).logits?.data as Float32Array;
    peft.mergeAdapter();
    assert.ok(model.weights.has("model.layers.0.self_attn.q_proj.bias"));
    const merged0 = (await peft.forward({ inputIds: ids0 })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(merged0, unmerged0) < 1e-4, `${maxAbsDiff(merged0, unmerged0)}`);
    peft.unmergeAdapter();
    assert.deepEqual([...model.weights.keys()], [...before.keys()]);
    for (const [k, v] of model.weights) assert.equal(v.data, before.get(k), k);
    assert.ok(maxAbsDiff((await peft.forward({ inputIds: ids0 })).logits?.data as Float32Array, unmerged0) < 1e-6);
    // With β = 0 only W changes: W' = diag(γ)·W.
    const a = peft.adapter("default");
    const zeros = new Map(
      [...a.tensors]
        .filter(([k]) => k.endsWith("ssf_shift"))
        .map(([k, v]) => [k, hostTensor("f32", v.shape, new Float32Array(v.data.length))]),
    );
    peft.setAdapterTensors("default", zeros);
    const ids = randomIds(2, 5, 256);
    const unmerged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    peft.mergeAdapter();
    const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(merged, unmerged) < 1e-4, `${maxAbsDiff(merged, unmerged)}`);
    const path = "model.layers.0.self_attn.o_proj";
    const g = f32(a.tensors.get(`${path}.ssf_scale`));
    const w0 = before.get(`${path}.weight`) as Float32Array;
    assert.ok(
      maxDiff(
        f32(model.weights.get(`${path}.weight`)),
        Float32Array.from(w0, (v, k) => v * g[Math.floor(k / 32)]),
      ) < 1e-7,
    );
    assert.ok(!model.weights.has(`${path}.bias`));
    await model.release();
  });

  test("config: fields, defaults and layer selection", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "SSF", targetModules: ["o_proj", "down_proj"], layersToTransform: [1] });
    const a = peft.adapter("default");
    assert.deepEqual([...a.tensors.keys()].sort(), [
      "model.layers.1.mlp.down_proj.ssf_scale",
      "model.layers.1.mlp.down_proj.ssf_shift",
      "model.layers.1.self_attn.o_proj.ssf_scale",
      "model.layers.1.self_attn.o_proj.ssf_shift",
    ]);
    const json = a.tuner.toJson(a.config);
    assert.equal(json.peft_type, "SSF");
    assert.equal(json.init_ssf_weights, true);
    assert.deepEqual(json.layers_to_transform, [1]);
    assert.throws(() => peft.addAdapter("x", { peftType: "SSF", initSsfWeights: "yes" }), /init_ssf_weights/);
    assert.throws(() => peft.addAdapter("y", { peftType: "SSF", targetModules: ["nothing"] }), /matched no module/);
    await model.release();
  });
});
