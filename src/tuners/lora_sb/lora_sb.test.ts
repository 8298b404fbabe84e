import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { runCalibration } from "../../calibration/index.js";
import { ParamCounter } from "../../compare/param-count.js";
import { gradCheck } from "../../engine/autodiff/gradcheck.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { WeightContext } from "../../nn/context.js";
import { GOLDEN_MODELS } from "../../testing/paths.js";
import { matrix } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { calibrationRequest, PeftModel } from "../peft-model.js";
import { parseLoraSbConfig } from "./config.js";
import { LORA_SB, loraSbLayers, signUpdateFactors } from "./index.js";
import { randomGradients, statsFor, withLoraSb } from "./testing.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/** s·B·R·A as a logical [out, in] f64 array. */
function product(t: ReadonlyMap<string, HostTensor>, key: string, out: number, inF: number, r: number, s: number): Float64Array {
  const a = f32(t.get(`${key}.lora_sb_A.weight`));
  const b = f32(t.get(`${key}.lora_sb_B.weight`));
  const rr = f32(t.get(`${key}.lora_sb_R.weight`));
  const res = new Float64Array(out * inF);
  for (let o = 0; o < out; o++)
    for (let i = 0; i < inF; i++) {
      let v = 0;
      for (let j = 0; j < r; j++) for (let k = 0; k < r; k++) v += b[o * r + j] * rr[j * r + k] * a[k * inF + i];
      res[o * inF + i] = s * v;
    }
  return res;
}

/**
 * Gradient sums whose signs form M = (σ; 0)·1ᵀ + (0; τ)·wᵀ: the first 3/4 of the rows follow the
 * all-ones pattern with row signs σ, the rest the alternating pattern w = (1, −1, …) with row signs
 * τ; magnitudes are random. 1 ⊥ w, so M's singular values are √(3·out/4·in) and √(out/4·in), and
 * its best rank-1 approximation is (σ; 0)·1ᵀ, rank 2 and more M itself.
 */
function twoPatternGradients(seed: number) {
  const rng = new Rng(seed);
  const signs = new Map<string, Int8Array>();
  const g = (path: string, out: number, inF: number) => {
    const rowSign = Int8Array.from({ length: out }, () => (rng.next() < 0.5 ? -1 : 1));
    signs.set(path, rowSign);
    const top = (3 * out) / 4;
    return matrix(
      out,
      inF,
      Array.from({ length: out * inF }, (_, k) => {
        const o = Math.floor(k / inF);
        const i = k % inF;
        const pattern = o < top ? 1 : i % 2 === 0 ? 1 : -1;
        return rowSign[o] * pattern * (0.01 + rng.next());
      }),
    );
  };
  const rankOne = (path: string, out: number, inF: number) =>
    Float64Array.from({ length: out * inF }, (_, k) =>
      Math.floor(k / inF) < (3 * out) / 4 ? (signs.get(path) as Int8Array)[Math.floor(k / inF)] : 0,
    );
  const full = (path: string, out: number, inF: number) =>
    Float64Array.from({ length: out * inF }, (_, k) => {
      const o = Math.floor(k / inF);
      return (signs.get(path) as Int8Array)[o] * (o < (3 * out) / 4 ? 1 : (k % inF) % 2 === 0 ? 1 : -1);
    });
  return { g, rankOne, full };
}

// Calibration statistics (prescribed gradient sums) for the conformance suite, made once per model.
async function conformanceStats(name: "llama_basic" | "gpt2", config: Record<string, unknown>) {
  const model = await loadTestModel(name);
  try {
    return statsFor(model, config, randomGradients(11));
  } finally {
    await model.release();
  }
}
const LLAMA_CFG = { peftType: "LORA_SB", r: 4, eta: 0.05 };
const GPT2_CFG = { peftType: "LORA_SB", r: 3, loraAlpha: 6, eta: 0.05, targetModules: "all-linear" };
const llamaStats = await conformanceStats("llama_basic", LLAMA_CFG);
const gpt2Stats = await conformanceStats("gpt2", GPT2_CFG);

describe("LoRA-SB", () => {
  // Not a no-op at init (it starts one approximate full fine-tuning step away): no identity config.
  runConformance({ name: "LoRA-SB on llama (q_proj, v_proj; r = 4)", model: "llama_basic", config: LLAMA_CFG, calibration: llamaStats });
  runConformance({ name: "LoRA-SB on GPT-2 Conv1D (all-linear, r = 3, α = 6)", model: "gpt2", config: GPT2_CFG, calibration: gpt2Stats });

  test("initial s·B·R·A = the rank-r truncation of −η·sign(G), in closed form (llama and GPT-2's [in, out] gradients; s = 1 and 2)", async () => {
    for (const name of ["llama_basic", "gpt2"] as const)
      for (const [r, alpha, eta] of [
        [1, 1, 1e-3],
        [2, 4, 0.5],
        [5, 5, 2e-4],
      ] as const) {
        const model = await loadTestModel(name);
        const cfg = { peftType: "LORA_SB", r, loraAlpha: alpha, eta, targetModules: name === "gpt2" ? ["c_attn", "c_fc"] : null };
        const pat = twoPatternGradients(r);
        const peft = withLoraSb(model, cfg, pat.g);
        const a = peft.adapter("default");
        for (const l of loraSbLayers(peft.info, parseLoraSbConfig({ r, lora_alpha: alpha, eta, target_modules: cfg.targetModules }, "t"))) {
          const want = (r === 1 ? pat.rankOne : pat.full)(l.path, l.outFeatures, l.inFeatures).map((x) => -eta * x);
          const got = product(a.tensors, l.key, l.outFeatures, l.inFeatures, r, alpha / r);
          assert.ok(maxDiff(got, want) < 1e-6 * eta * 10, `${name} r=${r} ${l.key}: ${maxDiff(got, want)}`);
          // B and A have orthonormal columns / rows; R is diagonal with the singular values / s.
          const rr = f32(a.tensors.get(`${l.key}.lora_sb_R.weight`));
          const sv = [Math.sqrt((3 * l.outFeatures * l.inFeatures) / 4), Math.sqrt((l.outFeatures * l.inFeatures) / 4)];
          for (let j = 0; j < r; j++)
            assert.ok(Math.abs(rr[j * r + j] - (eta * (sv[j] ?? 0)) / (alpha / r)) < 1e-5 * eta * sv[0], `R[${j}]`);
        }
        await model.release();
      }
  });

  test("svd_niter: the randomized SVD is exact on the two-pattern signs (rank 2 ≤ r + 10) and within 1e-3 of the exact truncation on random 32×32 signs", async () => {
    const model = await loadTestModel("llama_basic");
    const pat = twoPatternGradients(9);
    const peft = withLoraSb(model, { peftType: "LORA_SB", r: 1, eta: 0.1, svdNiter: 10 }, pat.g);
    const l = loraSbLayers(peft.info, parseLoraSbConfig({ r: 1, eta: 0.1 }, "t"))[0];
    const got = product(peft.adapter("default").tensors, l.key, 32, 32, 1, 1);
    assert.ok(
      maxDiff(
        got,
        pat.rankOne(l.path, 32, 32).map((x) => -0.1 * x),
      ) < 1e-6,
    );
    await model.release();
    // Random signs (a flat spectrum): measured 4.3e-5 relative (Frobenius) for r = 4.
    const rng = new Rng(3);
    const g = matrix(
      32,
      32,
      Array.from({ length: 1024 }, () => rng.next() * 2 - 1),
    );
    const exact = signUpdateFactors(g, 1, 4);
    const fast = signUpdateFactors(g, 1, 4, 10);
    const prod = (f: typeof exact) =>
      Float64Array.from({ length: 1024 }, (_, k) => {
        let v = 0;
        for (let j = 0; j < 4; j++) v += f.b.data[Math.floor(k / 32) * 4 + j] * f.s[j] * f.a.data[j * 32 + (k % 32)];
        return v;
      });
    const e = prod(exact);
    const d = prod(fast).map((x, i) => x - e[i]);
    assert.ok(Math.hypot(...d) < 1e-3 * Math.hypot(...e), `${Math.hypot(...d) / Math.hypot(...e)}`);
  });

  test("a layer computes x·(W + s·B·R·A)ᵀ; rows of a mixed batch; merge = unmerged, unmerge restores W", async () => {
    const model = await loadTestModel("gpt2");
    const path = "transformer.h.1.attn.c_attn";
    const cfg = { peftType: "LORA_SB", r: 3, loraAlpha: 6, eta: 0.05, targetModules: ["c_attn"] };
    const peft = withLoraSb(model, cfg, randomGradients(3));
    // Train-like R: move it off the diagonal so the test sees R's orientation.
    const key = `${path}.lora_sb_R.weight`;
    peft.setAdapterTensors(
      "default",
      new Map([
        [
          key,
          hostTensor(
            "f32",
            [3, 3],
            Float32Array.from({ length: 9 }, (_, i) => 5 * Math.sin(i + 1)),
          ),
        ],
      ]),
    );
    const t = peft.adapter("default").tensors;
    const w = model.weights.get(`${path}.weight`) as HostTensor;
    const [inF, out] = w.shape;
    const delta = product(t, path, out, inF, 3, 2);
    const x = randomTensor([2, inF]);
    const want = new Float64Array(2 * out);
    for (let r = 0; r < 2; r++)
      for (let o = 0; o < out; o++) {
        let s = f32(model.weights.get(`${path}.bias`))[o];
        for (let i = 0; i < inF; i++) s += f32(x)[r * inF + i] * (f32(w)[i * out + o] + delta[o * inF + i]);
        want[r * out + o] = s;
      }
    const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x);
    assert.ok(maxDiff(got, want) < 1e-5, `${maxDiff(got, want)}`);
    const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x, [0, 1]);
    assert.ok(maxDiff(mixed.subarray(out), want.subarray(out)) < 1e-5);
    const ids = randomIds(2, 6, 256);
    const base = await peft.disableAdapter(async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array);
    const unmerged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(unmerged, base) > 1e-4, "the adapter changes nothing");
    const w0 = Float32Array.from(f32(w));
    peft.mergeAdapter();
    const merged = f32(model.weights.get(`${path}.weight`));
    let worst = 0;
    for (let o = 0; o < out; o++)
      for (let i = 0; i < inF; i++) worst = Math.max(worst, Math.abs(merged[i * out + o] - (w0[i * out + o] + delta[o * inF + i])));
    assert.ok(worst < 1e-6, `merged W ${worst}`);
    assert.ok(maxAbsDiff((await peft.forward({ inputIds: ids })).logits?.data as Float32Array, unmerged) < 1e-4);
    peft.unmergeAdapter();
    assert.deepEqual(f32(model.weights.get(`${path}.weight`)), w0);
    await model.release();
  });

  test("save → load (no calibration needed to load) round-trips every tensor and the outputs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-lora-sb-"));
    try {
      const model = await loadTestModel("llama_basic");
      const peft = withLoraSb(model, { peftType: "LORA_SB", r: 4 }, randomGradients(5));
      // Only R trains: r² on each of q_proj, v_proj in 2 blocks.
      assert.equal(peft.parameterCounts().trainable, 4 * 16);
      const ids = randomIds(2, 5, 256);
      const before = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      peft.savePretrained(dir);
      const fresh = await loadTestModel("llama_basic");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      const want = peft.adapter("default").tensors;
      const got = loaded.adapter("default").tensors;
      assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
      for (const [k, v] of want) assert.deepEqual(got.get(k)?.data, v.data, k);
      assert.ok(maxAbsDiff((await loaded.forward({ inputIds: ids })).logits?.data as Float32Array, before) < 1e-6);
      await model.release();
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("gradients of R, B and A through a layer match f64 finite differences", async () => {
    const model = await loadTestModel("llama_basic");
    const path = "model.layers.0.self_attn.v_proj";
    const peft = withLoraSb(model, { peftType: "LORA_SB", r: 3, loraAlpha: 6, eta: 0.1 }, randomGradients(6));
    const a = peft.adapter("default");
    const keys = [...a.tensors.keys()].filter((k) => k.startsWith(path));
    const f64 = (t: HostTensor) => hostTensor("f64", t.shape, Float64Array.from(t.data as Float32Array));
    const w = model.weights.get(`${path}.weight`) as HostTensor;
    const x = randomTensor([3, 32]);
    const res = gradCheck(
      (xt: Tensor, wt: Tensor, ...ts: Tensor[]) => {
        const ctx = a.tuner.wrap(
          new WeightContext((n) => (n === `${path}.weight` ? wt : undefined), new Set([`${path}.weight`])),
          peft.info,
          a.config,
          {
            adapterName: "default",
            tensor: (k) => ts[keys.indexOf(k)],
            rowMask: null,
            training: true,
            seed: null,
          },
        );
        return ctx.linear(path, xt).tanh();
      },
      [f64(x), f64(w), ...keys.map((k) => f64(a.tensors.get(k) as HostTensor))],
      { wrt: keys.map((_, i) => i + 2), h: 1e-6 },
    );
    assert.ok(res.maxRelError < 1e-7, `${res.relErrors.map((e) => e.toExponential(2)).join(", ")}`);
    await model.release();
  });

  test("calibration request, trainable keys, JSON, and one-line errors (no calibration, missing layer, r too large)", async () => {
    const model = await loadTestModel("llama_basic");
    const stats = statsFor(model, { peftType: "LORA_SB", r: 4 }, randomGradients(1));
    // PeftModel refuses to create it without statistics, in one line.
    assert.throws(
      () => PeftModel.create(model, { peftType: "LORA_SB", r: 4 }),
      /^PeftConfigError: LORA_SB: this initialisation needs calibration data \(library: addAdapter\(\.\.\., \{ calibration \}\) from runCalibration; CLI: --calibration-data FILE\)$/,
    );
    const peft = new PeftModel(model);
    const c = LORA_SB.parseConfig({ peft_type: "LORA_SB", r: 4 }, "cfg");
    const req = LORA_SB.calibration?.(peft.info, c);
    assert.deepEqual(req, {
      layers: [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
      ],
      gradientSum: true,
    });
    assert.equal(LORA_SB.trainable?.("model.layers.0.self_attn.q_proj.lora_sb_R.weight", c), true);
    assert.equal(LORA_SB.trainable?.("model.layers.0.self_attn.q_proj.lora_sb_A.weight", c), false);
    assert.equal(LORA_SB.trainable?.("model.layers.0.self_attn.q_proj.lora_sb_B.weight", c), false);
    assert.equal(LORA_SB.trainable?.("score.weight", c), true, "modules_to_save copies train");
    const dflt = LORA_SB.toJson(LORA_SB.parseConfig({ peft_type: "LORA_SB" }, "cfg"));
    assert.deepEqual([dflt.peft_type, dflt.r, dflt.lora_alpha, dflt.eta, dflt.svd_niter], ["LORA_SB", 24, 24, 1e-3, null]);
    assert.throws(
      () => LORA_SB.create(peft.info, c, new Rng(0)),
      /^PeftConfigError: LoRA-SB initialises from gradients of your data: pass --calibration-data FILE/,
    );
    (stats.gradientSum as Map<string, unknown>).delete("model.layers.1.self_attn.v_proj.weight");
    assert.throws(
      () => LORA_SB.create(peft.info, c, new Rng(0), { calibration: stats }),
      /no gradient sum for "model.layers.1.self_attn.v_proj.weight"/,
    );
    assert.throws(
      () => LORA_SB.calibration?.(peft.info, LORA_SB.parseConfig({ r: 33 }, "cfg")),
      /^PeftConfigError: LoRA-SB config: r = 33 exceeds min\(in, out\) = 32 of "model.layers.0.self_attn.q_proj"$/,
    );
    assert.throws(() => LORA_SB.parseConfig({ eta: 0 }, "cfg"), /"eta" must be > 0/);
    await model.release();
  });
});

describe("LoRA-SB from a real calibration pass", () => {
  test("GPT-2: runCalibration's Σ∇W (stored [in, out]) gives s·B·R·A = the best rank-r part of −η·sign(G): ⟨ΔW₁, P⟩ = ‖P‖², ‖ΔW₁ − P‖² = ‖ΔW₁‖² − ‖P‖²", async () => {
    const model = await loadTestModel("gpt2");
    try {
      const config = { peftType: "LORA_SB", r: 3, loraAlpha: 6, eta: 0.01, targetModules: ["c_attn", "c_fc"] };
      const request = calibrationRequest(model, config);
      assert.ok(request);
      const ids = randomIds(2, 6, 256);
      const stats = await runCalibration(
        model,
        [
          { inputIds: ids, labels: ids },
          { inputIds: randomIds(2, 6, 256), labels: ids },
        ],
        request,
      );
      const peft = PeftModel.create(model, config, { calibration: stats });
      const t = peft.adapter("default").tensors;
      for (const l of loraSbLayers(
        peft.info,
        parseLoraSbConfig({ r: 3, lora_alpha: 6, eta: 0.01, target_modules: ["c_attn", "c_fc"] }, "t"),
      )) {
        const g = stats.gradientSum.get(`${l.path}.weight`);
        assert.ok(g && g.rows === l.inFeatures && g.cols === l.outFeatures, "Conv1D gradients are [in, out]");
        const p = product(t, l.key, l.outFeatures, l.inFeatures, 3, 2);
        let inner = 0;
        let pp = 0;
        let dd = 0;
        let res = 0;
        for (let o = 0; o < l.outFeatures; o++)
          for (let i = 0; i < l.inFeatures; i++) {
            const d = -0.01 * Math.sign(g.data[i * l.outFeatures + o]);
            const v = p[o * l.inFeatures + i];
            inner += d * v;
            pp += v * v;
            dd += d * d;
            res += (d - v) ** 2;
          }
        // P is an orthogonal projection of ΔW₁ (onto its top singular directions), not of its transpose.
        assert.ok(Math.abs(inner - pp) < 1e-5 * pp, `${l.key}: ⟨ΔW₁, P⟩ ${inner} vs ‖P‖² ${pp}`);
        assert.ok(Math.abs(res - (dd - pp)) < 1e-5 * dd, `${l.key}: residual ${res} vs ${dd - pp}`);
        assert.ok(pp > 0.05 * dd, `${l.key}: the top-3 part holds ${pp / dd} of ΔW₁`);
      }
    } finally {
      await model.release();
    }
  });
});

describe("LoRA-SB and SoKA in compare's parameter counts", () => {
  test("counted from expected shapes: r² per layer for LoRA-SB (no calibration needed), U and V but not U⁰, V⁰ for SoKA; ranks stop where the layers do", async () => {
    const dir = join(GOLDEN_MODELS, "llama_basic");
    const counter = new ParamCounter();
    try {
      // methodConfig's default targets: all-linear, 7 layers × 2 blocks, smallest side 32.
      const sb = await counter.candidates(dir, "lora_sb");
      assert.deepEqual(
        sb.map((c) => [c.value, c.params]),
        [1, 2, 4, 8, 16, 32].map((r) => [r, 14 * r * r]),
      );
      const soka = await counter.candidates(dir, "soka");
      // q/k/v/o 32×32: factors 4×4 and 8×8 (16 terms); gate/up 64×32: 8×4, 8×8; down 32×64: 4×8, 8×8 (32 terms).
      const perTerm = 2 * (4 * (16 + 64) + 2 * (32 + 64) + (32 + 64));
      assert.deepEqual(
        soka.map((c) => [c.value, c.params]),
        [1, 2, 4, 8, 16].map((r) => [r, r * perTerm]),
      );
    } finally {
      await counter.release();
    }
  });
});
