import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { valueAndGrad } from "../../engine/autodiff/grad.js";
import { compileGraph } from "../../engine/exec/backend.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { dctBasis, locaDelta, positionOf, positions } from "./dct.js";
import { type LocaForms, locaDeltaWeight } from "./graph.js";

const near = (got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) => {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++)
    assert.ok(Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
};

describe("LoCA's transform (host, float64)", () => {
  test("the DCT-II basis is orthonormal", () => {
    for (const n of [1, 2, 5, 8]) {
      const c = dctBasis(n);
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += c[i * n + k] * c[j * n + k];
          assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-12, `n=${n} (${i},${j}): ${s}`);
        }
    }
  });

  test("ΔW equals the naive 2-D inverse DCT-II of the scattered spectrum, repeats adding up", () => {
    const [m, n, b, alpha] = [6, 4, 7, 1.5];
    const rng = new Rng(3);
    const a = Float32Array.from({ length: b }, () => rng.normal());
    const loc = Float32Array.from({ length: 2 * b }, () => rng.uniform(0, 1));
    // Two entries at the same place.
    loc[1] = loc[0];
    loc[b + 1] = loc[b];
    const coef = hostTensor("f32", [b], a);
    const locT = hostTensor("f32", [2, b], loc);
    const got = locaDelta(coef, locT, m, n, alpha);
    const { u, v } = positions(locT, m, n);
    assert.equal(u[0], u[1]);
    const w = (k: number, d: number) => Math.sqrt((k === 0 ? 1 : 2) / d);
    for (let x = 0; x < m; x++)
      for (let y = 0; y < n; y++) {
        // x[m, n] = Σ_p Σ_q w_p w_q S[p, q] cos(π(2m+1)p/2M) cos(π(2n+1)q/2N)
        let s = 0;
        for (let i = 0; i < b; i++)
          s +=
            alpha *
            a[i] *
            w(u[i], m) *
            w(v[i], n) *
            Math.cos((Math.PI * (2 * x + 1) * u[i]) / (2 * m)) *
            Math.cos((Math.PI * (2 * y + 1) * v[i]) / (2 * n));
        assert.ok(Math.abs(got.data[x * n + y] - s) < 1e-12, `(${x},${y}): ${got.data[x * n + y]} vs ${s}`);
      }
  });

  test("positions: round half to even of f32(clip(ℓ, 0, 0.999)·(d − 1))", () => {
    assert.equal(positionOf(0.5, 4), 2); // 1.5 → 2
    assert.equal(positionOf(0.5, 6), 2); // 2.5 → 2
    assert.equal(positionOf(-0.3, 9), 0);
    assert.equal(positionOf(1, 9), 8); // 0.999·8 = 7.992
    assert.equal(positionOf(0.999, 2000), 1997); // 1997.001
    assert.equal(positionOf(Math.fround(0.25), 1), 0);
  });
});

/** Host float64 K = C_out·G·C_inᵀ. */
function dct2(g: Float64Array, m: number, n: number): Float64Array {
  const co = dctBasis(m);
  const ci = dctBasis(n);
  const t = new Float64Array(m * n);
  for (let p = 0; p < m; p++) for (let j = 0; j < n; j++) for (let x = 0; x < m; x++) t[p * n + j] += co[p * m + x] * g[x * n + j];
  const k = new Float64Array(m * n);
  for (let p = 0; p < m; p++) for (let q = 0; q < n; q++) for (let j = 0; j < n; j++) k[p * n + q] += t[p * n + j] * ci[q * n + j];
  return k;
}

/**
 * The authors' IdctWithIndexGrad backward written out on the host for L = Σ α·ΔW_raw ⊙ M, then
 * chained through lo_clip = clip(ℓ, 0, 0.999)·(d − 1) as torch's autograd does.
 */
function expectedGradients(a: Float32Array, loc: Float32Array, m: number, n: number, mat: Float64Array, alpha: number) {
  const b = a.length;
  const k = dct2(
    mat.map((x) => alpha * x),
    m,
    n,
  );
  const { u, v } = positions(hostTensor("f32", [2, b], loc), m, n);
  const at = (p: number, q: number) => k[p * n + q];
  const clamp = (x: number) => Math.min(1, Math.max(-1, x));
  const inClip = (l: number) => (l >= 0 && l <= Math.fround(0.999) ? 1 : 0);
  const ga = Float64Array.from({ length: b }, (_, i) => at(u[i], v[i]));
  const gl = new Float64Array(2 * b);
  for (let i = 0; i < b; i++) {
    const up = Math.min(u[i] + 1, m - 1);
    const down = Math.max(u[i] - 1, 0);
    const right = Math.min(v[i] + 1, n - 1);
    const left = Math.max(v[i] - 1, 0);
    gl[i] = (m - 1) * inClip(loc[i]) * clamp(0.5 * a[i] * (at(up, v[i]) - at(down, v[i])));
    gl[b + i] = (n - 1) * inClip(loc[b + i]) * clamp(0.5 * a[i] * (at(u[i], right) - at(u[i], left)));
  }
  return { ga, gl };
}

describe("LoCA's ΔW and backward in the graph (IdctWithIndexGrad)", () => {
  const [m, n, b, alpha] = [7, 5, 9, 2];
  const rng = new Rng(11);
  const a = Float32Array.from({ length: b }, () => rng.normal());
  // Row locations: interior, the first and last rows (gradient flowing), outside the clip range
  // (no gradient), and a repeat of entry 0.
  const loc = Float32Array.from({ length: 2 * b }, () => rng.uniform(0.05, 0.95));
  loc[1] = 1e-4;
  loc[2] = 0.9985;
  loc[3] = -0.2;
  loc[4] = 0.9995;
  loc[b + 5] = 1e-4;
  loc[b + 6] = 0.9985;
  loc[b + 7] = 1.3;
  loc[8] = loc[0];
  loc[b + 8] = loc[b];
  // Large enough that some location gradients hit the ±1 clamp.
  const mat = Float64Array.from({ length: m * n }, () => 3 * rng.normal());
  const want = expectedGradients(a, loc, m, n, mat, alpha);
  const wantDw = locaDelta(hostTensor("f32", [b], a), hostTensor("f32", [2, b], loc), m, n, 1).data;

  const graphOf = (forms: LocaForms) =>
    trace(
      (ai: Tensor, li: Tensor, mi: Tensor) => {
        const loss = (x: Tensor, y: Tensor, z: Tensor) => locaDeltaWeight(x, y, m, n, forms).mul(alpha).mul(z).sum();
        const [, [ga, gl]] = valueAndGrad(loss, [0, 1])(ai, li, mi);
        return [locaDeltaWeight(ai, li, m, n, forms), ga, gl];
      },
      [spec("f32", [b]), spec("f32", [2, b]), spec("f32", [m, n])],
    );
  const inputs: HostTensor[] = [
    hostTensor("f32", [b], a),
    hostTensor("f32", [2, b], loc),
    hostTensor("f32", [m, n], Float32Array.from(mat)),
  ];

  test("the expected gradients exercise borders, the clip and the clamp", () => {
    const gl = [...want.gl];
    assert.ok(
      gl.some((x) => Math.abs(x) === m - 1 || Math.abs(x) === n - 1),
      "no clamped location gradient",
    );
    assert.ok(
      gl.some((x) => x !== 0 && Math.abs(x) < n - 1),
      "no unclamped location gradient",
    );
    assert.equal(gl[3], 0);
    assert.equal(gl[4], 0);
    assert.equal(gl[b + 7], 0);
  });

  for (const forward of ["gather", "dense"] as const)
    for (const backward of ["gather", "dense"] as const)
      test(`forward ${forward}, backward ${backward}: ΔW = host iDCT2, ∂L/∂a = DCT2(∂L/∂ΔW)[u, v], ∂L/∂ℓ = the authors' clamped central difference`, async () => {
        const g = graphOf({ forward, backward });
        const exe = await compileGraph(g);
        const runs = { interpreter: interpret(g, inputs), ort: await exe.run(inputs) };
        await exe.release();
        for (const [name, [dw, ga, gl]] of Object.entries(runs)) {
          near(dw.data as Float32Array, wantDw, 2e-6, `${name} ΔW`);
          near(ga.data as Float32Array, want.ga, 2e-5, `${name} ∂L/∂a`);
          near(gl.data as Float32Array, want.gl, 2e-5, `${name} ∂L/∂ℓ`);
        }
      });
});

describe("LoCA adapter", () => {
  test("n_frequency larger than a layer is refused, naming the layer", async () => {
    const model = await loadTestModel("llama_basic");
    assert.throws(
      () => PeftModel.create(model, { peft_type: "LOCA", n_frequency: 1025, target_modules: ["q_proj"] }, { seed: 1 }),
      /LoCA: n_frequency = 1025 exceeds the 1024 entries of "model\.layers\.0\.self_attn\.q_proj" \[32x32\]/,
    );
    await model.release();
  });

  test("saves the documented keys and shapes; locations uniform in [0, 1), coefficients zero", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peft_type: "LOCA", n_frequency: 10 }, { seed: 1 });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].sort().slice(0, 2), [
      "model.layers.0.self_attn.q_proj.loca_coefficients",
      "model.layers.0.self_attn.q_proj.loca_locations",
    ]);
    assert.equal(t.size, 8);
    for (const [k, v] of t) {
      if (k.endsWith("loca_coefficients")) assert.deepEqual([...v.shape, ...new Set(Array.from(v.data as Float32Array))], [10, 0]);
      else {
        assert.deepEqual(v.shape, [2, 10]);
        assert.ok([...(v.data as Float32Array)].every((x) => x >= 0 && x <= 1));
      }
    }
    await model.release();
  });

  // The conformance suite's gradient check compares every trained tensor with finite differences
  // of the forward. The locations' gradient is the authors' estimate, not a derivative (the
  // rounding is flat almost everywhere): the suite runs with learn_location_iter 0, which makes
  // the locations fixed inputs, so the check covers the coefficients honestly; the location
  // gradient is checked against its formula above.
  const config = { peft_type: "LOCA", n_frequency: 24, target_modules: ["q_proj", "v_proj", "down_proj"], learn_location_iter: 0 };
  runConformance({ name: "LoCA", model: "llama_basic", identityConfig: config, config: { ...config, init_weights: false } });
  runConformance({
    name: "LoCA (GPT-2 Conv1D)",
    model: "gpt2",
    config: { peft_type: "LOCA", n_frequency: 16, target_modules: ["c_attn"], learn_location_iter: 0, init_weights: false },
  });
});
