import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { grad } from "../../engine/autodiff/grad.js";
import { gradCheck } from "../../engine/autodiff/gradcheck.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { writeSafetensors } from "../../io/safetensors.js";
import { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import {
  cayleyExact,
  cayleyNeumann,
  coftProject,
  hostCayleyExact,
  hostCayleyNeumann,
  hostCoftProject,
  hostMatmul,
  hostSkewFromPacked,
  packedIndex,
  skewFromPacked,
} from "./cayley.js";
import { parseOftConfig } from "./config.js";
import { OFT, oftBlocks, versionBefore } from "./index.js";
import { adjustOftParameter, oftLayers } from "./layers.js";

const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

function randomVec(rows: number, n: number, std: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from({ length: rows * n }, () => (rng.next() * 2 - 1) * std * Math.sqrt(3));
}

/** RᵀR − I, max |entry|. */
function orthError(r: Float64Array, b: number): number {
  const rt = new Float64Array(b * b);
  for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) rt[i * b + j] = r[j * b + i];
  const p = hostMatmul(rt, r, b);
  let m = 0;
  for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) m = Math.max(m, Math.abs(p[i * b + j] - (i === j ? 1 : 0)));
  return m;
}

/** Runs a graph over f64 inputs on the interpreter. */
function run1(f: (...xs: Tensor[]) => Tensor, inputs: HostTensor[]) {
  const g = trace(
    f,
    inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })),
  );
  return interpret(g, inputs)[0].data as Float64Array;
}

describe("OFT", () => {
  runConformance({
    name: "OFT on llama (Cayley–Neumann, block size 8, every linear layer)",
    model: "llama_basic",
    identityConfig: { peftType: "OFT", oftBlockSize: 8, targetModules: ALL },
    config: { peftType: "OFT", oftBlockSize: 8, targetModules: ALL, initWeights: false },
  });
  runConformance({
    name: "OFT on llama (exact Cayley, r=4, block_share)",
    model: "llama_gqa_tied",
    identityConfig: { peftType: "OFT", r: 4, oftBlockSize: 0, useCayleyNeumann: false, blockShare: true },
    config: { peftType: "OFT", r: 4, oftBlockSize: 0, useCayleyNeumann: false, blockShare: true, initWeights: false, targetModules: ALL },
  });
  runConformance({
    name: "OFT on BERT classification (biased layers) with modules_to_save",
    model: "bert_seq_cls",
    config: {
      peftType: "OFT",
      taskType: "SEQ_CLS",
      oftBlockSize: 4,
      initWeights: false,
      modulesToSave: ["classifier"],
      targetModules: ["query", "value", "dense"],
    },
    mixedBatch: false,
  });

  test("packed layout is torch.triu_indices(b, b, 1): row-major strict upper triangle, Q = U − Uᵀ", () => {
    const b = 4;
    const order: [number, number][] = [];
    for (let i = 0; i < b; i++) for (let j = i + 1; j < b; j++) order.push([i, j]);
    for (const [k, [i, j]] of order.entries()) assert.equal(packedIndex(i, j, b), k);
    const vec = Float64Array.from({ length: 6 }, (_, k) => k + 1);
    const q = run1((v) => skewFromPacked(v, b), [hostTensor("f64", [1, 6], vec)]);
    assert.deepEqual(Array.from(q), [0, 1, 2, 3, -1, 0, 4, 5, -2, -4, 0, 6, -3, -5, -6, 0]);
    assert.deepEqual(Array.from(hostSkewFromPacked(vec, 1, b)[0]), Array.from(q));
  });

  test("exact Cayley is orthogonal (RᵀR = I to 1e-12) and equals (I − Q)(I + Q)⁻¹; the graph's unrolled Gauss–Jordan matches the host", () => {
    for (const b of [2, 5, 8]) {
      const n = (b * (b - 1)) / 2;
      const vec = randomVec(3, n, 0.8, b);
      const qs = hostSkewFromPacked(vec, 3, b);
      const graph = run1((v) => cayleyExact(skewFromPacked(v, b)), [hostTensor("f64", [3, n], vec)]);
      qs.forEach((q, k) => {
        const r = hostCayleyExact(q, b);
        assert.ok(orthError(r, b) < 1e-12, `b=${b}: ${orthError(r, b)}`);
        // R·(I + Q) = I − Q
        const ipq = q.map((v, i) => v + (i % (b + 1) === 0 ? 1 : 0));
        const lhs = hostMatmul(r, ipq, b);
        lhs.forEach((v, i) => {
          assert.ok(Math.abs(v - ((i % (b + 1) === 0 ? 1 : 0) - q[i])) < 1e-12);
        });
        assert.ok(maxDiff(graph.subarray(k * b * b, (k + 1) * b * b), r) < 1e-12);
      });
    }
  });

  test("Neumann series as PEFT ≥ 0.18: I + 2Q + 2Q² + 2Q³ + Q⁴ for 5 terms, I + 2Q + 2Q² + Q³ for 3 and 4, I + 2Q for 2", () => {
    const b = 4;
    const q = hostSkewFromPacked(randomVec(1, 6, 0.3, 9), 1, b)[0];
    const q2 = hostMatmul(q, q, b);
    const q3 = hostMatmul(q2, q, b);
    const q4 = hostMatmul(q3, q, b);
    const eye = (i: number) => (i % (b + 1) === 0 ? 1 : 0);
    const want: Record<number, (i: number) => number> = {
      1: (i) => eye(i),
      2: (i) => eye(i) + 2 * q[i],
      3: (i) => eye(i) + 2 * q[i] + 2 * q2[i] + q3[i],
      4: (i) => eye(i) + 2 * q[i] + 2 * q2[i] + q3[i],
      5: (i) => eye(i) + 2 * q[i] + 2 * q2[i] + 2 * q3[i] + q4[i],
    };
    for (const [terms, f] of Object.entries(want)) {
      const host = hostCayleyNeumann(q, b, Number(terms));
      const graph = run1((v) => cayleyNeumann(v, Number(terms)), [hostTensor("f64", [1, b, b], q)]);
      for (let i = 0; i < b * b; i++) {
        assert.ok(Math.abs(host[i] - f(i)) < 1e-14, `terms ${terms}`);
        assert.ok(Math.abs(graph[i] - f(i)) < 1e-14, `graph terms ${terms}`);
      }
    }
    // It approximates (I + Q)(I − Q)⁻¹ = the exact transform of −Q, better with more terms for small Q.
    const small = q.map((v) => v * 0.1);
    const exactNeg = hostCayleyExact(
      small.map((v) => -v),
      b,
    );
    const err = (t: number) => maxDiff(hostCayleyNeumann(small, b, t), exactNeg);
    assert.ok(err(8) < err(5) && err(5) < err(3) && err(8) < 1e-7, `${err(3)} ${err(5)} ${err(8)}`);
  });

  test("a layer computes W·(x·R) + b with R block-diagonal; mixed batches leave base rows alone", async () => {
    const model = await loadTestModel("bert_seq_cls");
    const peft = PeftModel.create(
      model,
      { peftType: "OFT", taskType: "SEQ_CLS", oftBlockSize: 8, initWeights: false, targetModules: ["query"] },
      { seed: 3 },
    );
    const a = peft.adapter("default");
    const [l] = oftLayers(peft.info, a.config as never).filter((x) => x.path === "bert.encoder.layer.0.attention.self.query");
    const blocks = oftBlocks(l, a.config as never, f32(a.tensors.get(l.key)));
    assert.equal(blocks.length, l.r);
    const w = model.weights.get(`${l.path}.weight`) as HostTensor;
    const bias = model.weights.get(`${l.path}.bias`) as HostTensor;
    const x = randomTensor([2, l.inFeatures]);
    const xd = x.data as Float32Array;
    const xr = new Float32Array(xd.length);
    for (let row = 0; row < 2; row++)
      for (let p = 0; p < l.r; p++)
        for (let c = 0; c < 8; c++) {
          let s = 0;
          for (let k = 0; k < 8; k++) s += xd[row * l.inFeatures + p * 8 + k] * blocks[p][k * 8 + c];
          xr[row * l.inFeatures + p * 8 + c] = s;
        }
    const want = linearJs(xr, 2, w, bias, false);
    const got = probe(peft, "default", (ctx, xt) => ctx.linear(l.path, xt), x);
    assert.ok(maxDiff(got, want) < 1e-5, `${maxDiff(got, want)}`);
    const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(l.path, xt), x, [0, 1]);
    const base = linearJs(xd, 2, w, bias, false);
    assert.ok(maxDiff(mixed.subarray(0, l.outFeatures), base.subarray(0, l.outFeatures)) < 1e-5);
    assert.ok(maxDiff(mixed.subarray(l.outFeatures), want.subarray(l.outFeatures)) < 1e-5);
    await model.release();
  });

  test("keys and shapes: <module>.oft_R.weight [r, b(b−1)/2] ([1, …] with block_share), zeros at init", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "OFT" });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].sort(), [
      "model.layers.0.self_attn.q_proj.oft_R.weight",
      "model.layers.0.self_attn.v_proj.oft_R.weight",
      "model.layers.1.self_attn.q_proj.oft_R.weight",
      "model.layers.1.self_attn.v_proj.oft_R.weight",
    ]);
    // hidden 32, default oft_block_size 32: one block of 32·31/2 parameters.
    assert.deepEqual(t.get("model.layers.0.self_attn.q_proj.oft_R.weight")?.shape, [1, 496]);
    for (const v of t.values()) assert.ok(f32(v).every((x) => x === 0));
    const shared = peft.addAdapter("s", { peftType: "OFT", oftBlockSize: 0, r: 4, blockShare: true, targetModules: ["down_proj"] });
    assert.deepEqual(shared.tensors.get("model.layers.0.mlp.down_proj.oft_R.weight")?.shape, [1, 120]);
    const plain = peft.addAdapter("p", { peftType: "OFT", oftBlockSize: 0, r: 4, targetModules: ["down_proj"] });
    assert.deepEqual(plain.tensors.get("model.layers.0.mlp.down_proj.oft_R.weight")?.shape, [4, 120]);
    // oft_block_size 24 divides neither 32 nor 64: PEFT adjusts it to 16 (the tie 16/32 goes down).
    const adj = peft.addAdapter("a", { peftType: "OFT", oftBlockSize: 24, targetModules: ["q_proj", "down_proj"] });
    assert.deepEqual(adj.tensors.get("model.layers.0.self_attn.q_proj.oft_R.weight")?.shape, [2, 120]);
    assert.deepEqual(adj.tensors.get("model.layers.0.mlp.down_proj.oft_R.weight")?.shape, [4, 120]);
    assert.deepEqual(
      oftLayers(peft.info, adj.config as never).map((l) => l.adjusted),
      ["oft_block_size 24 → 16", "oft_block_size 24 → 16", "oft_block_size 24 → 16", "oft_block_size 24 → 16"],
    );
    await model.release();
  });

  test("r / oft_block_size that do not divide in_features are adjusted as PEFT's adjust_oft_parameters does", () => {
    // (in_features, requested) → PEFT's choice: nearest divisor, ties to the lower one, ≥ in → in.
    const table: [number, number, number][] = [
      [64, 24, 16],
      [64, 12, 8],
      [64, 20, 16],
      [64, 30, 32],
      [32, 33, 32],
      [48, 10, 8],
      [48, 7, 6],
      [37, 5, 1],
    ];
    for (const [n, p, want] of table) assert.equal(adjustOftParameter(n, p), want, `${n}, ${p}`);
  });

  test("COFT: the forward uses the projected Q (radius eps/√N), gradients pass straight through the projection", () => {
    const n = 6;
    const vec = randomVec(3, n, 0.5, 4);
    vec.fill(1e-6, 6, 12); // the middle block stays inside the ball
    const eps = 0.3;
    const proj = hostCoftProject(vec, 3, n, eps);
    const radius = eps / Math.sqrt(3);
    for (let r = 0; r < 3; r++) {
      const row = proj.subarray(r * n, (r + 1) * n);
      const norm = Math.sqrt(2 * row.reduce((s, v) => s + v * v, 0));
      if (r === 1) assert.deepEqual(Array.from(row), Array.from(vec.subarray(n, 2 * n)));
      else assert.ok(Math.abs(norm - radius) < 1e-12);
    }
    const graph = run1((v) => coftProject(v, eps), [hostTensor("f64", [3, n], vec)]);
    assert.ok(maxDiff(graph, proj) < 1e-12);
    // d/dvec Σ cayley(project(vec))·c equals d/dv Σ cayley(v)·c at v = project(vec).
    const cot = hostTensor("f64", [3, 4, 4], randomVec(1, 48, 1, 5));
    const f = (project: boolean) => (v: Tensor, c: Tensor) =>
      cayleyExact(skewFromPacked(project ? coftProject(v, eps) : v, 4))
        .mul(c)
        .sum();
    const gradAt = (project: boolean, at: Float64Array) => {
      const g = trace(
        (v, c) => grad(f(project), [0])(v, c)[0],
        [
          { dtype: "f64", shape: [3, n] },
          { dtype: "f64", shape: [3, 4, 4] },
        ],
      );
      return interpret(g, [hostTensor("f64", [3, n], at), cot])[0].data as Float64Array;
    };
    assert.ok(maxDiff(gradAt(true, vec), gradAt(false, proj)) < 1e-12);
    // and without projection the gradient is the true one (finite differences)
    const res = gradCheck(f(false), [hostTensor("f64", [3, n], proj), cot], { wrt: [0] });
    assert.ok(res.relErrors[0] < 1e-6, `${res.relErrors[0]}`);
  });

  test("merging gives W·Rᵀ; unmerging restores W exactly", async () => {
    const model = await loadTestModel("llama_basic");
    const orig = new Map([...model.weights].map(([k, v]) => [k, Float32Array.from(f32(v))]));
    const peft = PeftModel.create(
      model,
      { peftType: "OFT", oftBlockSize: 16, initWeights: false, useCayleyNeumann: false, targetModules: ["down_proj"] },
      { seed: 9 },
    );
    const a = peft.adapter("default");
    const [l] = oftLayers(peft.info, a.config as never);
    const blocks = oftBlocks(l, a.config as never, f32(a.tensors.get(l.key)));
    for (const r of blocks) assert.ok(orthError(r, 16) < 1e-12);
    peft.mergeAdapter();
    const w = orig.get(`${l.path}.weight`) as Float32Array;
    const merged = f32(model.weights.get(`${l.path}.weight`));
    for (let o = 0; o < l.outFeatures; o++)
      for (let i = 0; i < l.inFeatures; i++) {
        const p = Math.floor(i / 16);
        const a2 = i % 16;
        let s = 0;
        for (let k = 0; k < 16; k++) s += w[o * l.inFeatures + p * 16 + k] * blocks[p][a2 * 16 + k];
        assert.ok(Math.abs(merged[o * l.inFeatures + i] - s) < 1e-6);
      }
    // An orthogonal R keeps each row's norm.
    const rowNorm = (m: Float32Array, o: number) => Math.hypot(...m.subarray(o * l.inFeatures, (o + 1) * l.inFeatures));
    assert.ok(Math.abs(rowNorm(merged, 3) - rowNorm(w, 3)) < 1e-5);
    peft.unmergeAdapter();
    for (const [k, v] of model.weights) assert.deepEqual(f32(v), orig.get(k), k);
    await model.release();
  });

  test("config errors: r and oft_block_size both set or both zero, GPT-2 Conv1D, bias that PEFT would not save, embeddings", async () => {
    assert.throws(() => parseOftConfig({ peft_type: "OFT", r: 4 }, "cfg"), /give either "r" \(4\) or "oft_block_size" \(32\), not both/);
    assert.throws(
      () => parseOftConfig({ peft_type: "OFT", r: 0, oft_block_size: 0 }, "cfg"),
      /either "r" or "oft_block_size" must be non-zero/,
    );
    assert.throws(() => parseOftConfig({ peft_type: "OFT", module_dropout: 1 }, "cfg"), /module_dropout/);
    const gpt2 = await loadTestModel("gpt2");
    assert.throws(
      () => PeftModel.create(gpt2, { peftType: "OFT", oftBlockSize: 8 }),
      (e: Error) => e instanceof PeftConfigError && /Conv1D/.test(e.message) && !e.message.includes("\n"),
    );
    await gpt2.release();
    const llama = await loadTestModel("llama_basic");
    const peft = PeftModel.create(llama, { peftType: "OFT" });
    assert.throws(() => peft.addAdapter("b", { peftType: "OFT", bias: "all" }), /bias "all" is not supported/);
    assert.throws(
      () => peft.addAdapter("e", { peftType: "OFT", targetModules: ["embed_tokens", "q_proj"] }),
      /matches the embedding model\.embed_tokens; OFT on embeddings \(PEFT's oft_embedding_R\) is not supported yet/,
    );
    await llama.release();
  });

  test("versions: PEFT's comparison (pre-releases before the release)", () => {
    assert.equal(versionBefore("0.17.1", [0, 18, 0]), true);
    assert.equal(versionBefore("0.18.0rc0", [0, 18, 0]), true);
    assert.equal(versionBefore("0.18.0.dev0", [0, 18, 0]), true);
    assert.equal(versionBefore("0.18.0", [0, 18, 0]), false);
    assert.equal(versionBefore("0.18.1", [0, 18, 0]), false);
    assert.equal(versionBefore("0.20.1.dev0@5d602fd", [0, 18, 0]), false);
    assert.equal(versionBefore("0.18.0.post1", [0, 18, 0]), false);
  });
});

describe("OFT folders from older PEFT releases are refused in one line; bad tensors are named", () => {
  const write = (dir: string, cfg: Record<string, unknown>, tensors: Record<string, HostTensor>) => {
    writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(cfg));
    writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
  };
  const base = {
    peft_type: "OFT",
    r: 0,
    oft_block_size: 8,
    target_modules: ["q_proj"],
    use_cayley_neumann: true,
    num_cayley_neumann_terms: 5,
    peft_version: "0.18.0",
  };
  const good = () => ({
    "base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight": hostTensor("f32", [4, 28]),
    "base_model.model.model.layers.1.self_attn.q_proj.oft_R.weight": hostTensor("f32", [4, 28]),
  });
  const cases: [string, Record<string, unknown>, Record<string, HostTensor>, RegExp][] = [
    [
      "PEFT ≤ 0.15 full blocks",
      { ...base, peft_version: undefined, use_cayley_neumann: undefined },
      {
        "base_model.model.model.layers.0.self_attn.q_proj.oft_r": hostTensor("f32", [4, 8, 8]),
        "base_model.model.model.layers.0.self_attn.q_proj.oft_s": hostTensor("f32", [32, 1]),
      },
      /PEFT ≤ 0\.15 \(full-block tensor model\.layers\.0\.self_attn\.q_proj\.oft_r \[4, 8, 8\]\)/,
    ],
    ["PEFT ≤ 0.13 config", { ...base, oft_block_size: undefined, r: 4 }, good(), /PEFT ≤ 0\.13 \(no "oft_block_size"\)/],
    ["PEFT 0.17 Neumann", { ...base, peft_version: undefined }, good(), /use_cayley_neumann by PEFT < 0\.18 \(peft_version absent\)/],
    ["PEFT 0.18 rc", { ...base, peft_version: "0.18.0rc0" }, good(), /peft_version 0\.18\.0rc0/],
    [
      "mis-shaped",
      base,
      { ...good(), "base_model.model.model.layers.1.self_attn.q_proj.oft_R.weight": hostTensor("f32", [4, 36]) },
      /q_proj\.oft_R\.weight: file \[4, 36\], expected \[4, 28\]/,
    ],
    [
      "missing",
      base,
      { "base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight": hostTensor("f32", [4, 28]) },
      /missing tensors:\n {2}base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.oft_R\.weight \[4, 28\]/,
    ],
  ];
  for (const [name, cfg, tensors, want] of cases) {
    test(name, async () => {
      const dir = mkdtempSync(join(tmpdir(), "peftkit-oft-"));
      try {
        write(dir, cfg, tensors);
        const model = await loadTestModel("llama_basic");
        assert.throws(
          () => PeftModel.fromPretrained(model, dir),
          (e: Error) =>
            e instanceof PeftConfigError &&
            want.test(e.message) &&
            (name === "missing" || name === "mis-shaped" || !e.message.includes("\n")),
        );
        await model.release();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  test("PEFT 0.16–0.17 folders with the exact Cayley transform load (that math did not change)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-oft-"));
    try {
      write(dir, { ...base, peft_version: undefined, use_cayley_neumann: false }, good());
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.fromPretrained(model, dir);
      assert.equal(peft.adapter("default").tuner, OFT);
      await model.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
