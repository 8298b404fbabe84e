/** add_weighted_adapter and PEFT's merge rules, against hand computations. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { type Matrix, matmul, matrix, svd } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import type { LoraConfig } from "./config.js";
import { LORA } from "./index.js";
import {
  dareLinear,
  dareTies,
  magnitudePrune,
  magnitudePruneMerge,
  majoritySignMask,
  quantile,
  randomPrune,
  taskArithmetic,
  ties,
} from "./merge-utils.js";

const Q = "model.layers.0.self_attn.q_proj";
const f32 = (t: HostTensor | undefined) => {
  assert.ok(t, "missing tensor");
  return t.data as Float32Array;
};
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-6) => assert.ok(maxDiff(a, b) < tol, `max diff ${maxDiff(a, b)}`);

/** The adapter's ΔW on q_proj, read back through LoRA's merge. */
function deltaOf(peft: PeftModel, name: string): Float64Array {
  const a = peft.adapter(name);
  const merged = f32(LORA.merge?.(peft.info, a.config as unknown as LoraConfig, a.tensors).get(`${Q}.weight`));
  const w = f32(peft.info.weight(`${Q}.weight`));
  return Float64Array.from(merged, (v, i) => v - w[i]);
}
function factors(peft: PeftModel, name: string): { a: Matrix; b: Matrix } {
  const t = peft.adapter(name).tensors;
  const A = t.get(`${Q}.lora_A.weight`) as HostTensor;
  const B = t.get(`${Q}.lora_B.weight`) as HostTensor;
  return { a: matrix(A.shape[0], A.shape[1], A.data as Float32Array), b: matrix(B.shape[0], B.shape[1], B.data as Float32Array) };
}
const scale = (m: Matrix, f: number) =>
  matrix(
    m.rows,
    m.cols,
    Array.from(m.data, (v) => v * f),
  );
const plus = (x: Matrix, y: Matrix) =>
  matrix(
    x.rows,
    x.cols,
    Array.from(x.data, (v, i) => v + y.data[i]),
  );

async function setup() {
  const m = await loadTestModel("llama_basic");
  const peft = PeftModel.create(m, { peftType: "LORA", r: 4, loraAlpha: 8, initLoraWeights: false }, { seed: 1 });
  peft.addAdapter("b", { peftType: "LORA", r: 4, loraAlpha: 2, initLoraWeights: false }, { seed: 2 });
  peft.addAdapter("c", { peftType: "LORA", r: 2, loraAlpha: 6, initLoraWeights: false }, { seed: 3 });
  return { m, peft };
}

describe("add_weighted_adapter", () => {
  test("cat: ΔW = Σ w_i·s_i·B_i·A_i exactly, r = α = Σ r_i", async () => {
    const { m, peft } = await setup();
    const a = peft.addWeightedAdapter(["default", "c"], [0.7, -1.3], "cat", { combinationType: "cat" });
    const cfg = a.config as unknown as LoraConfig;
    assert.equal(cfg.r, 6);
    assert.equal(cfg.loraAlpha, 6);
    assert.deepEqual(a.tensors.get(`${Q}.lora_A.weight`)?.shape, [6, 32]);
    const f1 = factors(peft, "default");
    const f2 = factors(peft, "c");
    const want = plus(scale(matmul(f1.b, f1.a), 0.7 * 2), scale(matmul(f2.b, f2.a), -1.3 * 3));
    close(deltaOf(peft, "cat"), want.data, 1e-5);
    assert.ok(!peft.isTrainable("cat"), "PEFT freezes the combined adapter");
    await m.release();
  });

  test("linear: one adapter gives w·s·B·A; two give PEFT's (Σ√(w·s)·B_i)(Σ sign·√|w·s|·A_i)", async () => {
    const { m, peft } = await setup();
    peft.addWeightedAdapter(["default"], [0.5], "one", { combinationType: "svd" });
    const f1 = factors(peft, "default");
    close(deltaOf(peft, "one"), scale(matmul(f1.b, f1.a), 0.5 * 2).data, 1e-5);
    peft.addWeightedAdapter(["default", "b"], [0.6, -0.4], "lin", { combinationType: "linear" });
    const f2 = factors(peft, "b");
    const w1 = 0.6 * 2;
    const w2 = -0.4 * 0.5;
    const A = plus(scale(f1.a, Math.sqrt(w1)), scale(f2.a, -Math.sqrt(-w2)));
    const B = plus(scale(f1.b, Math.sqrt(w1)), scale(f2.b, Math.sqrt(-w2)));
    close(deltaOf(peft, "lin"), matmul(B, A).data, 1e-5);
    assert.throws(() => peft.addWeightedAdapter(["default", "c"], [1, 1], "bad", { combinationType: "linear" }), /same r/);
    await m.release();
  });

  test("svd: full rank reproduces Σ w_i·s_i·ΔW_i (ΔW_i = s_i·B_i·A_i, PEFT's double scaling); lower rank is the best approximation", async () => {
    const { m, peft } = await setup();
    const f1 = factors(peft, "default");
    const f2 = factors(peft, "c");
    const want = plus(scale(matmul(f1.b, f1.a), 0.7 * 2 * 2), scale(matmul(f2.b, f2.a), -1.3 * 3 * 3));
    const full = peft.addWeightedAdapter(["default", "c"], [0.7, -1.3], "svd6", { combinationType: "svd", svdRank: 6 });
    assert.equal((full.config as unknown as LoraConfig).r, 6);
    close(deltaOf(peft, "svd6"), want.data, 1e-5);
    // Default rank: the largest source rank (4): σ of the result are the top 4 of the exact ΔW.
    peft.addWeightedAdapter(["default", "c"], [0.7, -1.3], "svd4");
    const got = svd(matrix(32, 32, deltaOf(peft, "svd4"))).s;
    const exact = svd(want).s;
    close(got.subarray(0, 4), exact.subarray(0, 4), 1e-4);
    close(got.subarray(4), new Float64Array(28), 1e-4);
    // With s = 1 on both sides, the svd and cat deltas agree.
    peft.addWeightedAdapter(["svd4", "svd6"], [1, 2], "catS", { combinationType: "cat" });
    peft.addWeightedAdapter(["svd4", "svd6"], [1, 2], "svdS", { combinationType: "svd", svdRank: 10 });
    close(deltaOf(peft, "svdS"), deltaOf(peft, "catS"), 1e-4);
    await m.release();
  });

  test("the new config: copy of the first with r = α, union of targets, no patterns, rsLoRA off; DoRA magnitude = ‖W‖", async () => {
    const m = await loadTestModel("llama_basic");
    const peft = PeftModel.create(m, {
      peftType: "LORA",
      r: 4,
      targetModules: ["q_proj"],
      useRslora: true,
      useDora: true,
      rankPattern: { q_proj: 4 },
    });
    peft.addAdapter("k", { peftType: "LORA", r: 4, targetModules: ["k_proj", "q_proj"], useDora: true });
    const a = peft.addWeightedAdapter(["default", "k"], [1, 1], "mix", { combinationType: "ties", density: 0.5 });
    const c = a.config as unknown as LoraConfig;
    assert.deepEqual(c.targetModules, ["q_proj", "k_proj"]);
    assert.equal(c.useRslora, false);
    assert.deepEqual(c.rankPattern, {});
    assert.ok(a.tensors.has("model.layers.1.self_attn.k_proj.lora_A.weight"));
    const w = f32(m.weights.get(`${Q}.weight`));
    const norms = Array.from({ length: 32 }, (_, o) => Math.hypot(...w.subarray(o * 32, o * 32 + 32)));
    close(f32(a.tensors.get(`${Q}.lora_magnitude_vector`)), norms, 1e-5);
    assert.throws(() => peft.addWeightedAdapter(["default", "k"], [1, 1], "nodensity", { combinationType: "dare_ties" }), /density/);
    await m.release();
  });

  test("dare types are reproducible from the seed", async () => {
    const { m, peft } = await setup();
    for (const [n, seed] of [
      ["d1", 5],
      ["d2", 5],
      ["d3", 6],
    ] as const)
      peft.addWeightedAdapter(["default", "b"], [1, 1], n, { combinationType: "dare_linear_svd", density: 0.5, seed });
    assert.deepEqual(deltaOf(peft, "d1"), deltaOf(peft, "d2"));
    assert.ok(maxDiff(deltaOf(peft, "d1"), deltaOf(peft, "d3")) > 0);
    await m.release();
  });
});

describe("svd_clamp", () => {
  test("quantile: torch's linear interpolation on the signed values, by hand", () => {
    const v = [3, -1, 4, 1, -5]; // sorted −5, −1, 1, 3, 4
    assert.equal(quantile(v, 0), -5);
    assert.ok(Math.abs(quantile(v, 0.3) - -0.6) < 1e-15); // p = 1.2: −1 + 0.2·(1 − (−1))
    assert.equal(quantile(v, 0.5), 1);
    assert.ok(Math.abs(quantile(v, 0.9) - 3.6) < 1e-15); // p = 3.6: 3 + 0.6·(4 − 3)
    assert.equal(quantile(v, 1), 4);
    assert.throws(() => quantile(v, 1.5), /\[0, 1\]/);
  });

  test("the svd factors clamped to ±h, h = the q-quantile of B and A together (torch.clamp: all h when −h > h)", async () => {
    const { m, peft } = await setup();
    const free = peft.addWeightedAdapter(["default", "c"], [0.7, -1.3], "free", { combinationType: "svd" });
    const tensors = (n: string) => {
      const t = peft.adapter(n).tensors;
      return { a: f32(t.get(`${Q}.lora_A.weight`)), b: f32(t.get(`${Q}.lora_B.weight`)) };
    };
    const u = tensors("free");
    assert.equal((free.config as unknown as LoraConfig).r, 4);
    // h by hand: sort B's and A's entries together, p = q·(n − 1), interpolate.
    const sorted = [...u.b, ...u.a].sort((x, y) => x - y);
    for (const q of [0.8, 0.97, 0.1]) {
      const p = q * (sorted.length - 1);
      const lo = Math.floor(p);
      const h = sorted[lo] + (p - lo) * (sorted[Math.min(lo + 1, sorted.length - 1)] - sorted[lo]);
      peft.addWeightedAdapter(["default", "c"], [0.7, -1.3], `clamp${q}`, { combinationType: "svd", svdClamp: q });
      const c = tensors(`clamp${q}`);
      const clamp = (x: number) => Math.min(Math.max(x, -h), h);
      close(c.b, Array.from(u.b, clamp), 1e-6);
      close(c.a, Array.from(u.a, clamp), 1e-6);
      if (q === 0.1) assert.ok(h < 0 && c.a.every((x) => Math.abs(x - h) < 1e-6), "−h > h: every entry becomes h");
      else assert.ok(c.a.some((x, i) => x !== u.a[i]) || c.b.some((x, i) => x !== u.b[i]), "something was clamped");
    }
    assert.throws(() => peft.addWeightedAdapter(["default", "c"], [1, 1], "bad", { combinationType: "svd", svdClamp: 1.2 }), /svdClamp/);
    await m.release();
  });
});

describe("merge rules (PEFT merge_utils) on hand-made task vectors", () => {
  const t1 = Float64Array.of(0.5, -2, 0.1, 3, -0.2, 0);
  const t2 = Float64Array.of(-1, 1, 0.3, -0.5, 0.4, 2);
  const t3 = Float64Array.of(0.2, -0.1, -4, 1, 0, -1);

  test("task arithmetic and magnitude pruning", () => {
    close(taskArithmetic([t1, t2], [2, -1]), [2, -5, -0.1, 6.5, -0.8, -2]);
    // density 0.5 of 6 → keep 3 largest |·|.
    close(magnitudePrune(t1, 0.5), [0.5, -2, 0, 3, 0, 0]);
    close(magnitudePrune(t2, 0.34), [-1, 0, 0, 0, 0, 2]); // ⌊2.04⌋ = 2: |2|, then |−1| and |1| tie → the first
    close(magnitudePrune(t2, 0.2), [0, 0, 0, 0, 0, 2]);
    close(magnitudePrune(t1, 1), t1);
    close(magnitudePruneMerge([t1, t2], [1, 0.5], 0.5), [0.5 - 0.5, -2 + 0.5, 0, 3, 0, 1]);
  });

  test("majority sign (total and frequency) and TIES", () => {
    // total: sums 0.5-1+0.2=-0.3 → −; -2+1-0.1 → −; 0.1+0.3-4 → −; 3-0.5+1 → +; -0.2+0.4+0 → +; 0+2-1 → +.
    const total = majoritySignMask([t1, t2, t3], "total").map((m) => Array.from(m));
    assert.deepEqual(total, [
      [0, 1, 0, 1, 0, 0],
      [1, 0, 0, 0, 1, 1],
      [0, 1, 1, 1, 0, 0],
    ]);
    // frequency: sign counts +1−1+1=+1 → +; −1+1−1 → −; +1+1−1 → +; +1−1+1 → +; −1+1+0=0 → + (ties go +); 0+1−1=0 → +.
    const freq = majoritySignMask([t1, t2, t3], "frequency").map((m) => Array.from(m));
    assert.deepEqual(freq, [
      [1, 1, 1, 1, 0, 0],
      [0, 0, 1, 0, 1, 1],
      [1, 1, 0, 1, 0, 0],
    ]);
    // TIES, density 1 (no trimming), weights 1, 2, 1: weighted = t1, 2·t2, t3; disjoint mean over electors.
    const w2 = Array.from(t2, (v) => 2 * v);
    const want = [
      w2[0] / 1, // only t2 is −
      (t1[1] + t3[1]) / 2,
      t3[2],
      (t1[3] + t3[3]) / 2,
      w2[4],
      w2[5],
    ];
    close(ties([t1, t2, t3], [1, 2, 1], 1, "total"), want);
    // Trimming to density 0.5 first (3 of 6 kept per task): [0.5,−2,0,3,0,0], [−1,1,0,0,0,2],
    // [0,0,−4,1,0,−1]; sums −0.5, −1, −4, 4, 0, 1 elect − − − + + +.
    close(ties([t1, t2, t3], [1, 1, 1], 0.5, "total"), [-1, -2, -4, 2, 0, 2]);
  });

  test("DARE: Bernoulli(density) keep with rescale 1/density, from the seeded stream", () => {
    const keep = (seed: number, n: number, d: number) => {
      const r = new Rng(seed);
      return Array.from({ length: n }, () => r.next() < d);
    };
    const k = keep(9, 6, 0.5);
    close(
      randomPrune(t1, 0.5, true, new Rng(9)),
      Array.from(t1, (v, i) => (k[i] ? v / 0.5 : 0)),
    );
    const k12 = keep(4, 12, 0.25);
    const p1 = Array.from(t1, (v, i) => (k12[i] ? v / 0.25 : 0));
    const p2 = Array.from(t2, (v, i) => (k12[6 + i] ? v / 0.25 : 0));
    close(
      dareLinear([t1, t2], [1, -2], 0.25, new Rng(4)),
      p1.map((v, i) => v - 2 * p2[i]),
    );
    const tiesOfPruned = ties([Float64Array.from(p1), Float64Array.from(p2)], [1, -2], 1, "frequency");
    close(dareTies([t1, t2], [1, -2], 0.25, "frequency", new Rng(4)), tiesOfPruned);
  });
});
