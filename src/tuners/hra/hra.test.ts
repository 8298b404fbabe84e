import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { writeSafetensors } from "../../io/safetensors.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import { gramSchmidt, householderProduct } from "./layers.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/** ‖AᵀA − I‖_max for a square [n, n] row-major matrix. */
function orthogonalityError(h: Float64Array, n: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += h[k * n + i] * h[k * n + j];
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  return worst;
}

function randomU(inF: number, r: number): Float32Array {
  return Float32Array.from({ length: inF * r }, () => Math.random() * 2 - 1);
}

describe("HRA", () => {
  runConformance({
    name: "HRA on llama (q,v defaults), random vectors",
    model: "llama_basic",
    config: { peftType: "HRA", r: 4, initWeights: false },
  });
  runConformance({
    name: "HRA with apply_GS on llama, all-linear",
    model: "llama_basic",
    config: { peftType: "HRA", r: 3, apply_GS: true, targetModules: "all-linear" },
  });
  runConformance({
    name: "HRA on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "HRA", taskType: "SEQ_CLS", r: 5, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("exact at init: PEFT's paired default init leaves the logits as the base model's (up to f32 rounding)", async () => {
    const model = await loadTestModel("llama_basic");
    const ids = randomIds(2, 6, 256);
    const base = (await model.forward({ inputIds: ids })).logits?.data as Float32Array;
    const peft = PeftModel.create(model, { peftType: "HRA", r: 8, targetModules: "all-linear" }, { seed: 1 });
    const got = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const d = maxDiff(got, base);
    // Two equal reflections cancel exactly in real arithmetic; the f32 graph leaves rounding only.
    assert.ok(d < 1e-5, `default init moved the logits by ${d}`);
    peft.mergeAdapter();
    const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxDiff(merged, base) < 1e-5);
    await model.release();
  });

  test("a stack of two HRA adapters computes W·H_a·H_b, merged or not", async () => {
    const model = await loadTestModel("llama_basic");
    const ids = randomIds(2, 5, 256);
    const peft = PeftModel.create(model, { peftType: "HRA", r: 3, targetModules: ["q_proj", "down_proj"] }, { seed: 4 });
    peft.addAdapter("b", { peftType: "HRA", r: 2, apply_GS: true, initWeights: false, targetModules: ["q_proj", "o_proj"] }, { seed: 5 });
    peft.setAdapter(["default", "b"]);
    const unmerged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    peft.setAdapter(["b", "default"]);
    const swapped = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    // Reflections do not commute: the order of the stack matters.
    assert.ok(maxAbsDiff(swapped, unmerged) > 1e-3);
    peft.setAdapter(["default", "b"]);
    peft.mergeAdapter();
    const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(merged, unmerged) < 1e-4, `${maxAbsDiff(merged, unmerged)}`);
    await model.release();
  });

  test("the product of reflections is orthogonal, with and without Gram–Schmidt", () => {
    for (const [inF, r] of [
      [6, 3],
      [16, 8],
      [5, 7],
    ]) {
      const u = randomU(inF, r);
      assert.ok(orthogonalityError(householderProduct(u, inF, r, false), inF) < 1e-12, `${inF}x${r}`);
      if (r <= inF) assert.ok(orthogonalityError(householderProduct(u, inF, r, true), inF) < 1e-12, `GS ${inF}x${r}`);
    }
  });

  test("Gram–Schmidt gives orthonormal vectors spanning the same space, and H = I − 2·Q·Qᵀ", () => {
    const inF = 9;
    const r = 4;
    const u = randomU(inF, r);
    const q = gramSchmidt(u, inF, r);
    for (let a = 0; a < r; a++)
      for (let b = 0; b < r; b++) {
        const d = q[a].reduce((s, x, i) => s + x * q[b][i], 0);
        assert.ok(Math.abs(d - (a === b ? 1 : 0)) < 1e-12, `q${a}·q${b} = ${d}`);
      }
    // Upper-triangular relation: u_j lies in span(q_0..q_j), so it has no component along q_k, k > j.
    for (let j = 0; j < r; j++)
      for (let k = j + 1; k < r; k++) {
        const d = q[k].reduce((s, x, i) => s + x * u[i * r + j], 0);
        assert.ok(Math.abs(d) < 1e-6, `u${j}·q${k}`);
      }
    const h = householderProduct(u, inF, r, true);
    for (let i = 0; i < inF; i++)
      for (let j = 0; j < inF; j++) {
        const want = (i === j ? 1 : 0) - 2 * q.reduce((s, v) => s + v[i] * v[j], 0);
        assert.ok(Math.abs(h[i * inF + j] - want) < 1e-12);
      }
    // Orthonormal vectors: the chain of reflections is the same single reflection I − 2·Q·Qᵀ.
    const qm = new Float64Array(inF * r);
    for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) qm[i * r + j] = q[j][i];
    const chain = householderProduct(qm, inF, r, false);
    assert.ok(maxDiff(chain, h) < 1e-12);
  });

  test("default init: vectors come in equal pairs (u₀ u₀ u₁ u₁ …), so H = I; odd r or init_weights=false start random", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "HRA", r: 4 }, { seed: 3 });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].sort(), [
      "model.layers.0.self_attn.q_proj.hra_u",
      "model.layers.0.self_attn.v_proj.hra_u",
      "model.layers.1.self_attn.q_proj.hra_u",
      "model.layers.1.self_attn.v_proj.hra_u",
    ]);
    const u = t.get("model.layers.0.self_attn.q_proj.hra_u") as HostTensor;
    const [inF, r] = u.shape;
    assert.deepEqual(u.shape, [32, 4]);
    const d = f32(u);
    let maxAbs = 0;
    for (let i = 0; i < inF; i++) {
      assert.equal(d[i * r], d[i * r + 1]);
      assert.equal(d[i * r + 2], d[i * r + 3]);
      assert.notEqual(d[i * r], d[i * r + 2]);
      maxAbs = Math.max(maxAbs, Math.abs(d[i * r]));
    }
    // kaiming_uniform_(a=√5) on the [in, r/2] half: bound 1/√(r/2).
    assert.ok(maxAbs <= 1 / Math.sqrt(2) && maxAbs > 0.5);
    const h = householderProduct(d, inF, r, false);
    for (let i = 0; i < inF; i++) for (let j = 0; j < inF; j++) assert.ok(Math.abs(h[i * inF + j] - (i === j ? 1 : 0)) < 1e-12);
    const odd = f32(peft.addAdapter("odd", { peftType: "HRA", r: 3 }).tensors.get("model.layers.0.self_attn.q_proj.hra_u"));
    assert.ok(orthogonalityError(householderProduct(odd, inF, 3, false), inF) < 1e-12);
    assert.ok(Math.abs(householderProduct(odd, inF, 3, false)[0] - 1) > 1e-6, "odd r starts away from I");
    await model.release();
  });

  test("a layer computes x·(W·H)ᵀ with H = H₁·…·H_r (PEFT's order), per row in mixed batches; merging gives W·H", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = new PeftModel(model);
    for (const applyGs of [false, true]) {
      const name = applyGs ? "gs" : "chain";
      peft.addAdapter(name, { peftType: "HRA", r: 3, initWeights: false, apply_GS: applyGs }, { seed: 21 });
      peft.setAdapter(name);
      const path = "model.layers.1.self_attn.v_proj";
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const [out, inF] = w.shape;
      const u = f32(peft.adapter(name).tensors.get(`${path}.hra_u`));
      const h = householderProduct(u, inF, 3, applyGs);
      // W·H by a plain triple loop.
      const wh = new Float32Array(out * inF);
      for (let o = 0; o < out; o++)
        for (let j = 0; j < inF; j++) {
          let s = 0;
          for (let k = 0; k < inF; k++) s += f32(w)[o * inF + k] * h[k * inF + j];
          wh[o * inF + j] = s;
        }
      const whT = hostTensor("f32", [out, inF], wh);
      const x = randomTensor([2, inF]);
      const want = linearJs(x.data as Float32Array, 2, whT, null, false);
      const got = probe(peft, name, (ctx, xt) => ctx.linear(path, xt), x);
      assert.ok(maxDiff(got, want) < 1e-5, `GS=${applyGs}: ${maxDiff(got, want)}`);
      // The reverse order (H_r·…·H₁) is a different matrix for non-orthogonal vectors.
      if (!applyGs) {
        const rev = new Float32Array(inF * 3);
        for (let i = 0; i < inF; i++) for (let j = 0; j < 3; j++) rev[i * 3 + j] = u[i * 3 + (2 - j)];
        const hr = householderProduct(rev, inF, 3, false);
        assert.ok(maxDiff(hr, h) > 1e-3);
      }
      const mixed = probe(peft, name, (ctx, xt) => ctx.linear(path, xt), x, [0, 1]);
      assert.ok(maxDiff(mixed.subarray(0, out), linearJs(x.data as Float32Array, 1, w, null, false)) < 1e-5, "base row");
      assert.ok(maxDiff(mixed.subarray(out), want.subarray(out)) < 1e-5, "adapter row");
      const a = peft.adapter(name);
      const merged = a.tuner.merge?.(peft.info, a.config, a.tensors) as Map<string, HostTensor>;
      assert.ok(maxDiff(f32(merged.get(`${path}.weight`)), wh) < 1e-5);
      assert.equal(merged.size, 4);
    }
    await model.release();
  });

  test("config: PEFT's fields (apply_GS spelled as PEFT does) and defaults", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "HRA" });
    const a = peft.adapter("default");
    const json = a.tuner.toJson(a.config);
    assert.equal(json.r, 8);
    assert.equal(json.apply_GS, false);
    assert.equal(json.init_weights, true);
    assert.equal(json.bias, "none");
    assert.ok(!("apply__g_s" in json));
    for (const spelling of ["apply_GS", "applyGS", "applyGs"]) {
      const b = peft.addAdapter(spelling, { peftType: "HRA", r: 2, [spelling]: true });
      assert.equal(b.tuner.toJson(b.config).apply_GS, true, spelling);
    }
    assert.throws(
      () => peft.addAdapter("two", { peftType: "HRA", apply_GS: true, applyGs: false }),
      (e: Error) => e instanceof PeftConfigError && /more than once/.test(e.message),
    );
    await model.release();
  });

  test("bad input: GPT-2 Conv1D, apply_GS with r > in_features, trained biases, conflicting target options", async () => {
    const gpt2 = await loadTestModel("gpt2");
    assert.throws(
      () => PeftModel.create(gpt2, { peftType: "HRA" }),
      (e: Error) => e instanceof PeftConfigError && /transformer\.h\.0\.attn\.c_attn.*only nn\.Linear/.test(e.message),
    );
    await gpt2.release();
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "HRA", r: 2 });
    assert.throws(
      () => peft.addAdapter("gs", { peftType: "HRA", r: 33, apply_GS: true }),
      (e: Error) =>
        e instanceof PeftConfigError && /r = 33 exceeds in_features = 32 of "model\.layers\.0\.self_attn\.q_proj"/.test(e.message),
    );
    // Without Gram–Schmidt more reflections than dimensions are legal (PEFT allows it).
    peft.addAdapter("many", { peftType: "HRA", r: 40, targetModules: ["q_proj"] });
    assert.throws(
      () => peft.addAdapter("bias", { peftType: "HRA", bias: "all" }),
      (e: Error) => e instanceof PeftConfigError && /does not save them/.test(e.message),
    );
    assert.throws(
      () => peft.addAdapter("re", { peftType: "HRA", targetModules: ".*q_proj", layersToTransform: [0] }),
      (e: Error) => e instanceof PeftConfigError && /layers_to_transform/.test(e.message),
    );
    await model.release();
  });

  test("loading: a missing or mis-shaped hra_u is named", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "HRA", r: 2, targetModules: ["q_proj"] });
    const dir = mkdtempSync(join(tmpdir(), "peftkit-hra-"));
    try {
      peft.savePretrained(dir);
      const key = "base_model.model.model.layers.1.self_attn.q_proj.hra_u";
      writeSafetensors(
        join(dir, "adapter_model.safetensors"),
        {
          "base_model.model.model.layers.0.self_attn.q_proj.hra_u": hostTensor("f32", [32, 3], new Float32Array(96)),
        },
        { format: "pt" },
      );
      const fresh = await loadTestModel("llama_basic");
      assert.throws(
        () => PeftModel.fromPretrained(fresh, dir),
        (e: Error) =>
          e instanceof PeftConfigError &&
          e.message.includes(`${key} [32, 2]`) &&
          /layers\.0\.self_attn\.q_proj\.hra_u: file \[32, 3\], expected \[32, 2\]/.test(e.message),
      );
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await model.release();
  });
});
