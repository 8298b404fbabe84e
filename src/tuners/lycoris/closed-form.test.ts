/**
 * The properties that define LoHa and LoKr, against closed forms computed here independently of
 * the tuners' code: the merged update is the Hadamard product of two rank-r products (LoHa,
 * reaching rank > r) or the Kronecker product of factors with factorization()'s shapes (LoKr,
 * rank(w1)·rank(w2)); the graph forms (LoHa's factored and dense paths, LoKr's reshaped product)
 * equal x·ΔWᵀ; init makes exactly PEFT's factor zero.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertClose, run } from "../../engine/exec/reference/testing.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { spec } from "../../engine/trace/trace.js";
import { matrix, svd } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel } from "../conformance.js";
import type { LohaConfig } from "../loha/config.js";
import { lohaLayers, lohaUpdate } from "../loha/index.js";
import type { LokrConfig } from "../lokr/config.js";
import { factorization, lokrLayers, lokrUpdate } from "../lokr/index.js";
import { PeftModel } from "../peft-model.js";

const f64 = (shape: number[], rng: Rng) =>
  hostTensor(
    "f64",
    shape,
    Float64Array.from({ length: shape[0] * shape[1] }, () => rng.uniform(-1, 1)),
  );
const at = (t: HostTensor, i: number, j: number) => (t.data as ArrayLike<number>)[i * t.shape[1] + j];

function rankOf(data: ArrayLike<number>, rows: number, cols: number): number {
  const { s } = svd(matrix(rows, cols, data));
  return s.filter((v) => v > 1e-6 * s[0]).length;
}

/** W' − W per merged weight, in float64. */
async function mergedDeltas(model: "llama_basic" | "llama_gqa_tied", config: Record<string, unknown>) {
  const m = await loadTestModel(model);
  const peft = PeftModel.create(m, config, { seed: 11 });
  const a = peft.adapter("default");
  const merged = a.tuner.merge?.(peft.info, a.config, a.tensors) ?? new Map();
  const deltas = new Map<string, Float64Array>();
  for (const [name, w] of merged) {
    const base = peft.info.weight(name).data as Float32Array;
    deltas.set(
      name,
      Float64Array.from(w.data as Float32Array, (v, i) => v - base[i]),
    );
  }
  return { peft, tensors: a.tensors, deltas, release: () => m.release() };
}

describe("LoHa closed form", () => {
  test("merged ΔW = ((w1a·w1b) ⊙ (w2a·w2b))·α/r, rank above r (up to r²)", async () => {
    const cfg = { peftType: "LOHA", r: 2, alpha: 3, targetModules: ["q_proj", "down_proj"], initWeights: false };
    const { peft, tensors, deltas, release } = await mergedDeltas("llama_basic", cfg);
    const layers = lohaLayers(peft.info, peft.adapter("default").config as LohaConfig);
    assert.equal(layers.length, 4);
    for (const l of layers) {
      const t = (s: string) => tensors.get(`${l.key}.hada_${s}`) as HostTensor;
      const d = deltas.get(`${l.path}.weight`) as Float64Array;
      const want = new Float64Array(l.outFeatures * l.inFeatures);
      for (let o = 0; o < l.outFeatures; o++)
        for (let i = 0; i < l.inFeatures; i++) {
          let p1 = 0;
          let p2 = 0;
          for (let j = 0; j < l.r; j++) {
            p1 += at(t("w1_a"), o, j) * at(t("w1_b"), j, i);
            p2 += at(t("w2_a"), o, j) * at(t("w2_b"), j, i);
          }
          want[o * l.inFeatures + i] = p1 * p2 * (3 / 2);
        }
      assertClose(d, want, 1e-5, l.key);
      const rank = rankOf(want, l.outFeatures, l.inFeatures);
      assert.ok(rank > l.r && rank <= l.r * l.r, `${l.key}: rank ${rank}`);
    }
    await release();
  });

  test("the factored (face-splitting, rank r²) and dense graph forms both equal x·ΔWᵀ", () => {
    const rng = new Rng(3);
    const [out, r, inF] = [5, 3, 7];
    const ins = [f64([4, inF], rng), f64([out, r], rng), f64([r, inF], rng), f64([out, r], rng), f64([r, inF], rng)];
    const [x, w1a, w1b, w2a, w2b] = ins;
    const want: number[] = [];
    for (let n = 0; n < 4; n++)
      for (let o = 0; o < out; o++) {
        let y = 0;
        for (let i = 0; i < inF; i++) {
          let p1 = 0;
          let p2 = 0;
          for (let j = 0; j < r; j++) {
            p1 += at(w1a, o, j) * at(w1b, j, i);
            p2 += at(w2a, o, j) * at(w2b, j, i);
          }
          y += p1 * p2 * 0.7 * at(x, n, i);
        }
        want.push(y);
      }
    const specs = ins.map((t) => spec("f64", t.shape));
    for (const mode of ["factored", "dense"] as const) {
      const [got] = run((...a) => lohaUpdate(a[0], a[1], a[2], a[3], a[4], 0.7, mode), specs, ins);
      assertClose(got.data as Float64Array, want, 1e-12, mode);
    }
  });

  test("init: hada_w2_b is zero, the rest Kaiming-uniform(a=√5) with bound 1/√fan_in; init_weights false: none zero", async () => {
    const m = await loadTestModel("llama_basic");
    const peft = PeftModel.create(m, { peftType: "LOHA", r: 4 }, { seed: 1 });
    peft.addAdapter("random", { peftType: "LOHA", r: 4, initWeights: false }, { seed: 2 });
    for (const [name, zero] of [
      ["default", "hada_w2_b"],
      ["random", null],
    ] as const) {
      for (const [k, t] of peft.adapter(name).tensors) {
        const v = t.data as Float32Array;
        const max = Math.max(...v.map(Math.abs));
        if (k.endsWith(zero ?? "\u0000")) assert.equal(max, 0, k);
        else {
          const bound = 1 / Math.sqrt(t.shape[1]);
          assert.ok(max <= bound && max > 0.7 * bound, `${name} ${k}: max ${max}, bound ${bound}`);
        }
      }
    }
    await m.release();
  });
});

describe("LoKr closed form", () => {
  test("merged ΔW = (w1 ⊗ w2)·α/r block by block, with factorization()'s shapes and rank(w1)·rank(w2)", async () => {
    const cfg = {
      peftType: "LOKR",
      r: 1,
      alpha: 3,
      targetModules: "all-linear",
      decomposeBoth: true,
      decomposeFactor: 8,
      rankPattern: { o_proj: 4 },
      initWeights: false,
    };
    const { peft, tensors, deltas, release } = await mergedDeltas("llama_gqa_tied", cfg);
    const layers = lokrLayers(peft.info, peft.adapter("default").config as LokrConfig);
    const seen = new Set<string>();
    for (const l of layers) {
      const [inM, inN] = factorization(l.inFeatures, 8);
      const [outL, outK] = factorization(l.outFeatures, 8);
      const factor = (n: 1 | 2, rows: number, cols: number) => {
        const full = tensors.get(`${l.key}.lokr_w${n}`);
        if (full) {
          assert.deepEqual(full.shape, [rows, cols]);
          return (i: number, j: number) => at(full, i, j);
        }
        const a = tensors.get(`${l.key}.lokr_w${n}_a`) as HostTensor;
        const b = tensors.get(`${l.key}.lokr_w${n}_b`) as HostTensor;
        assert.deepEqual(
          [a.shape, b.shape],
          [
            [rows, l.r],
            [l.r, cols],
          ],
        );
        return (i: number, j: number) => {
          let s = 0;
          for (let k = 0; k < l.r; k++) s += at(a, i, k) * at(b, k, j);
          return s;
        };
      };
      const w1 = factor(1, outL, inM);
      const w2 = factor(2, outK, inN);
      seen.add(`${tensors.has(`${l.key}.lokr_w1`)}/${tensors.has(`${l.key}.lokr_w2`)}`);
      const d = deltas.get(`${l.path}.weight`) as Float64Array;
      const want = new Float64Array(d.length);
      // Block (i, k) of the Kronecker product is w1[i, k]·w2.
      for (let i = 0; i < outL; i++)
        for (let k = 0; k < inM; k++)
          for (let j = 0; j < outK; j++)
            for (let c = 0; c < inN; c++) want[(i * outK + j) * l.inFeatures + k * inN + c] = w1(i, k) * w2(j, c) * (3 / l.r);
      assertClose(d, want, 1e-5, l.key);
      const r1 = rankOf(
        Float64Array.from({ length: outL * inM }, (_, q) => w1(Math.floor(q / inM), q % inM)),
        outL,
        inM,
      );
      const r2 = rankOf(
        Float64Array.from({ length: outK * inN }, (_, q) => w2(Math.floor(q / inN), q % inN)),
        outK,
        inN,
      );
      assert.equal(rankOf(want, l.outFeatures, l.inFeatures), r1 * r2, l.key);
    }
    // r=1 layers have both factors decomposed; o_proj (r=4 = max/2) both full.
    assert.deepEqual([...seen].sort(), ["false/false", "true/true"]);
    await release();
  });

  test("the reshaped graph form equals x·(w1 ⊗ w2)ᵀ·s over leading batch dims", () => {
    const rng = new Rng(5);
    const [a, c, b, d] = [3, 2, 4, 5];
    const x = hostTensor(
      "f64",
      [2, 3, c * d],
      Float64Array.from({ length: 6 * c * d }, () => rng.uniform(-1, 1)),
    );
    const w1 = f64([a, c], rng);
    const w2 = f64([b, d], rng);
    const want: number[] = [];
    for (let n = 0; n < 6; n++)
      for (let i = 0; i < a; i++)
        for (let j = 0; j < b; j++) {
          let y = 0;
          for (let k = 0; k < c; k++)
            for (let l = 0; l < d; l++) y += at(w1, i, k) * at(w2, j, l) * (x.data as Float64Array)[n * c * d + k * d + l];
          want.push(y * 1.5);
        }
    const [got] = run(
      (xx, p, q) => lokrUpdate(xx, p, q, 1.5),
      [spec("f64", x.shape), spec("f64", w1.shape), spec("f64", w2.shape)],
      [x, w1, w2],
    );
    assert.deepEqual(got.shape, [2, 3, a * b]);
    assertClose(got.data as Float64Array, want, 1e-12);
  });

  test('init: true zeroes w1 (or w1_a), "lycoris" zeroes w2 (or w2_b), false none (no-op inits: lokr.test.ts)', async () => {
    const m = await loadTestModel("llama_gqa_tied");
    const base = { peftType: "LOKR", targetModules: ["q_proj", "o_proj"], decomposeBoth: true, rankPattern: { o_proj: 8 }, r: 1 };
    const peft = PeftModel.create(m, base, { seed: 1 });
    peft.addAdapter("lyc", { ...base, initWeights: "lycoris" }, { seed: 2 });
    peft.addAdapter("random", { ...base, initWeights: false }, { seed: 3 });
    const zeros = (name: string) =>
      [...peft.adapter(name).tensors]
        .filter(([, t]) => (t.data as Float32Array).every((v) => v === 0))
        .map(([k]) => k.replace(/^.*\.(lokr_)/, "$1") + (k.includes("q_proj") ? "@q" : "@o"))
        .sort();
    // Two layers each: q_proj r=1 has both factors decomposed, o_proj r=8 both full.
    assert.deepEqual(zeros("default"), ["lokr_w1@o", "lokr_w1@o", "lokr_w1_a@q", "lokr_w1_a@q"]);
    assert.deepEqual(zeros("lyc"), ["lokr_w2@o", "lokr_w2@o", "lokr_w2_b@q", "lokr_w2_b@q"]);
    assert.deepEqual(zeros("random"), []);
    await m.release();
  });
});
