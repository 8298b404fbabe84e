/** LoRA variants against closed forms computed here in plain JS: DoRA merge, PiSSA/OLoRA init, embeddings, biases. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { hostTensor } from "../../engine/ir/host.js";
import { type Matrix, matmul, matrix, svd, transpose } from "../../util/linalg.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { LoraConfig } from "./config.js";
import { LORA } from "./index.js";

const f32 = (t: HostTensor | undefined) => {
  assert.ok(t, "missing tensor");
  return t.data as Float32Array;
};
const logits = async (m: { forward: PeftModel["forward"] }, ids: number[][]) =>
  (await m.forward({ inputIds: ids })).logits?.data as Float32Array;
/** [rows, cols] f32 data as a matrix, transposed when `t`. */
const mat = (d: Float32Array, rows: number, cols: number, t = false): Matrix =>
  t ? transpose(matrix(cols, rows, d)) : matrix(rows, cols, d);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const randomize = (t: HostTensor, lo: number, hi: number) =>
  hostTensor(
    "f32",
    t.shape,
    Float32Array.from(t.data as Float32Array, () => lo + (hi - lo) * Math.random()),
  );

describe("DoRA closed forms", () => {
  for (const [model, target, fif] of [
    ["llama_basic", "model.layers.1.self_attn.q_proj", false],
    ["gpt2", "transformer.h.1.attn.c_attn", true],
  ] as const) {
    test(`${model}: merged weight = (m / ‖W + s·B·A‖_row)·(W + s·B·A), by hand`, async () => {
      const m = await loadTestModel(model);
      const short = target.split(".").slice(-1)[0];
      const peft = PeftModel.create(m, {
        peftType: "LORA",
        r: 3,
        loraAlpha: 5,
        useDora: true,
        initLoraWeights: false,
        fanInFanOut: fif,
        targetModules: [short],
      });
      const a = peft.adapter("default");
      const magKey = `${target}.lora_magnitude_vector`;
      // A trained-looking magnitude, away from the initial row norms.
      peft.setAdapterTensors("default", new Map([[magKey, randomize(a.tensors.get(magKey) as HostTensor, 0.5, 2)]]));
      const A = f32(a.tensors.get(`${target}.lora_A.weight`));
      const B = f32(a.tensors.get(`${target}.lora_B.weight`));
      const mag = f32(a.tensors.get(magKey));
      const w = m.weights.get(`${target}.weight`) as HostTensor;
      const [d0, d1] = w.shape;
      const [out, inn] = fif ? [d1, d0] : [d0, d1];
      const s = 5 / 3;
      const want = new Float64Array(out * inn);
      for (let o = 0; o < out; o++) {
        const row = new Float64Array(inn);
        for (let i = 0; i < inn; i++) {
          let ba = 0;
          for (let k = 0; k < 3; k++) ba += B[o * 3 + k] * A[k * inn + i];
          row[i] = (w.data as Float32Array)[fif ? i * out + o : o * inn + i] + s * ba;
        }
        const norm = Math.hypot(...row);
        for (let i = 0; i < inn; i++) want[fif ? i * out + o : o * inn + i] = (mag[o] / norm) * row[i];
      }
      const merged = LORA.merge?.(peft.info, a.config as unknown as LoraConfig, a.tensors).get(`${target}.weight`);
      assert.ok(maxDiff(f32(merged), want) < 1e-5, `max diff ${maxDiff(f32(merged), want)}`);
      // The forward with the adapter equals the merged model.
      const ids = randomIds(2, 5, 256);
      const unmerged = await logits(peft, ids);
      peft.mergeAdapter();
      assert.ok(maxAbsDiff(await logits(peft, ids), unmerged) < 1e-4);
      await m.release();
    });
  }

  test("DoRA magnitude starts at the row norms of W (B = 0) and at ‖W + s·B·A‖ for init false", async () => {
    const m = await loadTestModel("llama_basic");
    const peft = PeftModel.create(m, { peftType: "LORA", r: 2, useDora: true, targetModules: ["k_proj"] });
    const key = "model.layers.0.self_attn.k_proj";
    const w = mat(f32(m.weights.get(`${key}.weight`)), 32, 32);
    const want = Array.from({ length: 32 }, (_, o) => Math.hypot(...w.data.subarray(o * 32, o * 32 + 32)));
    assert.ok(maxDiff(f32(peft.adapter("default").tensors.get(`${key}.lora_magnitude_vector`)), want) < 1e-6);
    await m.release();
  });
});

describe("PiSSA and OLoRA", () => {
  for (const init of ["pissa", "pissa_niter_4", "olora"] as const) {
    test(`${init} on llama all-linear: the initialised model equals the base model, base weights become W − s·B·A`, async () => {
      const m = await loadTestModel("llama_basic");
      const orig = new Map([...m.weights].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
      const ids = randomIds(2, 6, 256);
      const base = await logits(m, ids);
      const peft = PeftModel.create(m, {
        peftType: "LORA",
        r: 4,
        loraAlpha: 8,
        targetModules: "all-linear",
        initLoraWeights: init,
        useDora: true,
      });
      assert.ok(maxAbsDiff(await logits(peft, ids), base) < 1e-4, `init changes outputs by ${maxAbsDiff(await logits(peft, ids), base)}`);
      const a = peft.adapter("default");
      const key = "model.layers.0.mlp.down_proj"; // [32, 64]
      const A = mat(f32(a.tensors.get(`${key}.lora_A.weight`)), 4, 64);
      const B = mat(f32(a.tensors.get(`${key}.lora_B.weight`)), 32, 4);
      const W = mat(orig.get(`${key}.weight`) as Float32Array, 32, 64);
      const res = mat(f32(m.weights.get(`${key}.weight`)), 32, 64);
      const ba = matmul(B, A);
      assert.ok(
        maxDiff(
          res.data.map((v, i) => v + 2 * ba.data[i]),
          W.data,
        ) < 1e-5,
        "W_res + s·B·A != W",
      );
      // The DoRA magnitude is the row norm of W_res + s·B·A = W.
      const mag = f32(a.tensors.get(`${key}.lora_magnitude_vector`));
      assert.ok(
        maxDiff(
          mag,
          Array.from({ length: 32 }, (_, o) => Math.hypot(...W.data.subarray(o * 64, o * 64 + 64))),
        ) < 1e-5,
      );
      if (init === "olora") {
        // B = Q[:, :r] has orthonormal columns; A = R[:r] is upper triangular.
        const btb = matmul(transpose(B), B);
        for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) assert.ok(Math.abs(btb.data[i * 4 + j] - (i === j ? 1 : 0)) < 1e-5);
        for (let j = 0; j < 4; j++) for (let i = 0; i < j; i++) assert.equal(A.data[j * 64 + i], 0);
      } else {
        // PiSSA: s·B·A is W's best rank-r part: the residual's singular values are W's from r on,
        // and A·Aᵀ = BᵀB = diag(S_r / s).
        const sw = svd(W).s;
        const sr = svd(res).s;
        for (let i = 0; i < 8; i++) assert.ok(Math.abs(sr[i] - sw[i + 4]) < 1e-4, `residual σ${i}`);
        const aat = matmul(A, transpose(A));
        const btb = matmul(transpose(B), B);
        for (let i = 0; i < 4; i++) {
          for (let j = 0; j < 4; j++) {
            const want = i === j ? sw[i] / 2 : 0;
            assert.ok(Math.abs(aat.data[i * 4 + j] - want) < 1e-4 && Math.abs(btb.data[i * 4 + j] - want) < 1e-4);
          }
        }
      }
      // Merging restores W (up to f32 rounding); training moves only adapter tensors.
      const merged = LORA.merge?.(peft.info, a.config as unknown as LoraConfig, a.tensors).get(`${key}.weight`);
      assert.ok(maxDiff(f32(merged), W.data) < 1e-5);
      const residuals = new Map([...m.weights].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
      const trainer = await PeftTrainer.create(peft);
      await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
      for (const [k, t] of m.weights) assert.deepEqual(t.data, residuals.get(k), `base ${k} changed in training`);
      assert.ok(maxDiff(f32(peft.adapter("default").tensors.get(`${key}.lora_A.weight`)), A.data) > 0);
      await trainer.release();
      await m.release();
    });
  }

  test("PiSSA on GPT-2 Conv1D decomposes the [out, in] weight; OLoRA refuses fan_in_fan_out", async () => {
    const m = await loadTestModel("gpt2");
    const ids = randomIds(2, 6, 256);
    const base = await logits(m, ids);
    const orig = Float32Array.from(f32(m.weights.get("transformer.h.0.attn.c_attn.weight")));
    const peft = PeftModel.create(m, { peftType: "LORA", r: 4, fanInFanOut: true, targetModules: ["c_attn"], initLoraWeights: "pissa" });
    assert.ok(maxAbsDiff(await logits(peft, ids), base) < 1e-4);
    const a = peft.adapter("default");
    assert.deepEqual(a.tensors.get("transformer.h.0.attn.c_attn.lora_A.weight")?.shape, [4, 32]);
    assert.deepEqual(a.tensors.get("transformer.h.0.attn.c_attn.lora_B.weight")?.shape, [96, 4]);
    const merged = LORA.merge?.(peft.info, a.config as unknown as LoraConfig, a.tensors).get("transformer.h.0.attn.c_attn.weight");
    assert.ok(maxDiff(f32(merged), orig) < 1e-5);
    peft.unload();
    const m2 = await loadTestModel("gpt2");
    assert.throws(() => PeftModel.create(m2, { peftType: "LORA", r: 4, fanInFanOut: true, initLoraWeights: "olora" }), PeftConfigError);
    await m.release();
    await m2.release();
  });
});

describe("LoRA on embeddings and biases", () => {
  test("embedding LoRA: A = 0 and B ~ N(0,1) at init; merged table = W + s·(B·A)ᵀ, by hand", async () => {
    const m = await loadTestModel("llama_basic");
    const fresh = PeftModel.create(m, { peftType: "LORA", r: 4, loraAlpha: 8, targetModules: ["embed_tokens"] });
    const t0 = fresh.adapter("default").tensors;
    assert.deepEqual(t0.get("model.embed_tokens.lora_embedding_A")?.shape, [4, 256]);
    assert.deepEqual(t0.get("model.embed_tokens.lora_embedding_B")?.shape, [32, 4]);
    assert.ok(f32(t0.get("model.embed_tokens.lora_embedding_A")).every((v) => v === 0));
    const b0 = f32(t0.get("model.embed_tokens.lora_embedding_B"));
    const variance = b0.reduce((s, v) => s + v * v, 0) / b0.length;
    assert.ok(variance > 0.4 && variance < 2, `B variance ${variance}`);
    fresh.addAdapter("x", { peftType: "LORA", r: 4, loraAlpha: 8, targetModules: ["embed_tokens"], initLoraWeights: false });
    const a = fresh.adapter("x");
    const A = f32(a.tensors.get("model.embed_tokens.lora_embedding_A"));
    const B = f32(a.tensors.get("model.embed_tokens.lora_embedding_B"));
    const W = f32(m.weights.get("model.embed_tokens.weight"));
    const want = Float64Array.from(W, (w, idx) => {
      const n = Math.floor(idx / 32);
      const j = idx % 32;
      let ba = 0;
      for (let k = 0; k < 4; k++) ba += B[j * 4 + k] * A[k * 256 + n];
      return w + 2 * ba;
    });
    const merged = LORA.merge?.(fresh.info, a.config as unknown as LoraConfig, a.tensors).get("model.embed_tokens.weight");
    assert.ok(maxDiff(f32(merged), want) < 1e-5);
    await m.release();
  });

  test('bias keys follow PEFT: "<module>.base_layer.bias" on LoRA layers, "<module>.bias" elsewhere; merge replaces the bias', async () => {
    const m = await loadTestModel("gpt2");
    const peft = PeftModel.create(m, { peftType: "LORA", r: 2, fanInFanOut: true, bias: "all", targetModules: ["c_attn"] });
    const keys = [...peft.adapter("default").tensors.keys()];
    assert.ok(keys.includes("transformer.h.0.attn.c_attn.base_layer.bias"));
    assert.ok(keys.includes("transformer.h.0.attn.c_proj.bias"));
    assert.ok(keys.includes("transformer.h.0.ln_1.bias"));
    assert.ok(!keys.includes("transformer.h.0.attn.c_attn.bias"));
    const biasCount = [...m.weights.keys()].filter((k) => k.endsWith(".bias")).length;
    assert.equal(keys.filter((k) => k.endsWith(".bias")).length, biasCount);
    peft.addAdapter("only", { peftType: "LORA", r: 2, fanInFanOut: true, bias: "lora_only", targetModules: ["c_attn"] });
    assert.deepEqual(
      [...peft.adapter("only").tensors.keys()].filter((k) => k.endsWith(".bias")),
      ["transformer.h.0.attn.c_attn.base_layer.bias", "transformer.h.1.attn.c_attn.base_layer.bias"],
    );
    // A trained bias: the forward and the merge both use it.
    const ln = "transformer.h.1.ln_2.bias";
    const nb = randomize(peft.adapter("default").tensors.get(ln) as HostTensor, -0.5, 0.5);
    peft.setAdapterTensors("default", new Map([[ln, nb]]));
    const ids = randomIds(2, 5, 256);
    const before = await logits(peft, ids);
    peft.mergeAdapter(["default"]);
    assert.deepEqual(m.weights.get(ln)?.data, nb.data);
    assert.ok(maxAbsDiff(await logits(peft, ids), before) < 1e-4);
    await m.release();
  });
});
