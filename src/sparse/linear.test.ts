import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { valueAndGrad } from "../engine/autodiff/grad.js";
import { gradCheck } from "../engine/autodiff/gradcheck.js";
import { compileGraph } from "../engine/exec/backend.js";
import { interpret } from "../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { constant, type Tensor } from "../engine/trace/tensor.js";
import { trace } from "../engine/trace/trace.js";
import { sparseLinear } from "./linear.js";

function rand(shape: number[], seed: number, dtype: "f32" | "f64" = "f64"): HostTensor {
  let s = seed >>> 0 || 1;
  const n = shape.reduce((a, b) => a * b, 1);
  const data = dtype === "f64" ? new Float64Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32 - 0.5;
  }
  return hostTensor(dtype, shape, data);
}

const OUT = 5;
const IN = 7;
/** Unsorted on purpose, with entries in the first and last positions. */
const IDX = [0, 34, 3, 17, 12, 29, 8];

/** x·(W + S)ᵀ (or x·(W + S) for fan-in-fan-out) on the host in f64: the closed form. */
function dense(x: HostTensor, w: HostTensor, v: HostTensor, fanInFanOut: boolean): Float64Array {
  const wd = Float64Array.from(w.data as Float64Array);
  IDX.forEach((p, j) => {
    wd[p] += (v.data as Float64Array)[j];
  });
  const tokens = x.data.length / IN;
  const y = new Float64Array(tokens * OUT);
  for (let t = 0; t < tokens; t++)
    for (let o = 0; o < OUT; o++) {
      let s = 0;
      for (let i = 0; i < IN; i++) s += (x.data as Float64Array)[t * IN + i] * wd[fanInFanOut ? i * OUT + o : o * IN + i];
      y[t * OUT + o] = s;
    }
  return y;
}

for (const fanInFanOut of [false, true]) {
  describe(`sparseLinear (${fanInFanOut ? "[in, out]" : "[out, in]"} weight)`, () => {
    const wShape = fanInFanOut ? [IN, OUT] : [OUT, IN];
    const x = rand([2, 3, IN], 1);
    const w = rand(wShape, 2);
    const v = rand([IDX.length], 3);
    const f = (xx: Tensor, vv: Tensor) =>
      sparseLinear(xx, constant(w), constant(hostTensor("i64", [IDX.length], IDX)), vv, { fanInFanOut });

    test("equals x·(W + S)ᵀ with S scattered at the indices", () => {
      const g = trace(f, [
        { dtype: "f64", shape: [2, 3, IN] },
        { dtype: "f64", shape: [IDX.length] },
      ]);
      const [y] = interpret(g, [x, v], { precision: "f64" });
      const want = dense(x, w, v, fanInFanOut);
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs((y.data as Float64Array)[i] - want[i]) < 1e-12, `element ${i}`);
    });

    test("its hand-written backward matches finite differences (x, values and W)", () => {
      const withW = (xx: Tensor, vv: Tensor, ww: Tensor) =>
        sparseLinear(xx, ww, constant(hostTensor("i64", [IDX.length], IDX)), vv, { fanInFanOut });
      const r = gradCheck(withW, [x, v, w]);
      assert.ok(r.maxRelError < 1e-7, `relative error ${r.maxRelError}`);
    });

    test("ONNX Runtime gives the interpreter's value and gradients (f32)", async () => {
      const x32 = rand([2, 3, IN], 1, "f32");
      const v32 = rand([IDX.length], 3, "f32");
      const w32 = hostTensor("f32", wShape, Float32Array.from(w.data as Float64Array));
      const g = trace(
        (xx, vv) => {
          const [y, [gx, gv]] = valueAndGrad(
            (a: Tensor, b: Tensor) =>
              sparseLinear(a, constant(w32), constant(hostTensor("i32", [IDX.length], IDX)), b, { fanInFanOut })
                .square()
                .sum(),
            [0, 1],
          )(xx, vv);
          return [y, gx, gv];
        },
        [
          { dtype: "f32", shape: [2, 3, IN] },
          { dtype: "f32", shape: [IDX.length] },
        ],
      );
      const want = interpret(g, [x32, v32], { precision: "f64" });
      const ex = await compileGraph(g);
      const got = await ex.run([x32, v32]);
      await ex.release();
      want.forEach((t, i) => {
        for (let j = 0; j < t.data.length; j++)
          assert.ok(Math.abs(Number(got[i].data[j]) - Number(t.data[j])) < 1e-5, `output ${i} element ${j}`);
      });
    });
  });
}

test("taps read the dense ∂L/∂W at given positions and its largest entries", () => {
  const x = rand([2, 3, IN], 4);
  const w = rand([OUT, IN], 5);
  const v = rand([IDX.length], 6);
  const r = rand([2, 3, OUT], 7);
  const at = [1, 33, 20];
  const m = 4;
  const g = trace(
    (xx, vv, rr, s1, s2) => {
      const [, [ga, gl]] = valueAndGrad(
        (a: Tensor, b: Tensor) =>
          sparseLinear(xx, constant(w), constant(hostTensor("i64", [IDX.length], IDX)), vv, {
            taps: { gradientAt: { slot: a, indices: constant(hostTensor("i64", [at.length], at)) }, largest: { slot: b, m } },
          })
            .mul(rr)
            .sum(),
        [0, 1],
      )(s1, s2);
      return [ga, gl];
    },
    [
      { dtype: "f64", shape: [2, 3, IN] },
      { dtype: "f64", shape: [IDX.length] },
      { dtype: "f64", shape: [2, 3, OUT] },
      { dtype: "f64", shape: [at.length] },
      { dtype: "f64", shape: [3, m] },
    ],
  );
  const [ga, gl] = interpret(g, [x, v, r, hostTensor("f64", [at.length]), hostTensor("f64", [3, m])], { precision: "f64" });
  // ∂L/∂W = Σ_tokens rᵀ·x for L = Σ y ⊙ r.
  const dense = new Float64Array(OUT * IN);
  for (let t = 0; t < 6; t++)
    for (let o = 0; o < OUT; o++)
      for (let i = 0; i < IN; i++) dense[o * IN + i] += (r.data as Float64Array)[t * OUT + o] * (x.data as Float64Array)[t * IN + i];
  at.forEach((p, j) => {
    assert.ok(Math.abs((ga.data as Float64Array)[j] - dense[p]) < 1e-12, `at ${p}`);
  });
  const order = Array.from(dense.keys()).sort((p, q) => Math.abs(dense[q]) - Math.abs(dense[p]));
  const got = gl.data as Float64Array;
  for (let j = 0; j < m; j++) {
    const pos = got[j] * 4096 + got[m + j];
    assert.equal(pos, order[j], `largest #${j}`);
    assert.ok(Math.abs(got[2 * m + j] - dense[pos]) < 1e-12);
  }
});

test("the topScores tap: the m largest |∂L/∂W| / (ε + |W + S|)^μ, leaving out positions flagged as chosen", () => {
  const x = rand([2, 3, IN], 14);
  const w = rand([OUT, IN], 15);
  const v = rand([IDX.length], 16);
  const r = rand([2, 3, OUT], 17);
  const m = 5;
  const [eps, exp] = [0.05, 1.5];
  const dense = new Float64Array(OUT * IN);
  for (let t = 0; t < 6; t++)
    for (let o = 0; o < OUT; o++)
      for (let i = 0; i < IN; i++) dense[o * IN + i] += (r.data as Float64Array)[t * OUT + o] * (x.data as Float64Array)[t * IN + i];
  const theta = Float64Array.from(w.data as Float64Array);
  IDX.forEach((p, j) => {
    theta[p] += (v.data as Float64Array)[j];
  });
  const score = (p: number) => Math.abs(dense[p]) / (eps + Math.abs(theta[p])) ** exp;
  // The two slots with the highest scores are chosen entries (flag 1), the others free (flag 0).
  const best = [...IDX.keys()].sort((a, b) => score(IDX[b]) - score(IDX[a])).slice(0, 2);
  const flags = hostTensor(
    "f64",
    [IDX.length],
    Float64Array.from(IDX, (_, j) => (best.includes(j) ? 1 : 0)),
  );
  const chosen = new Set(best.map((j) => IDX[j]));
  const g = trace(
    (xx, vv, rr, fl, s) => {
      const [, [gs]] = valueAndGrad(
        (a: Tensor) =>
          sparseLinear(xx, constant(w), constant(hostTensor("i64", [IDX.length], IDX)), vv, {
            taps: {
              topScores: { slot: a, m, eps, exp, exclude: { indices: constant(hostTensor("i64", [IDX.length], IDX)), weight: fl } },
            },
          })
            .mul(rr)
            .sum(),
        [0],
      )(s);
      return [gs];
    },
    [
      { dtype: "f64", shape: [2, 3, IN] },
      { dtype: "f64", shape: [IDX.length] },
      { dtype: "f64", shape: [2, 3, OUT] },
      { dtype: "f64", shape: [IDX.length] },
      { dtype: "f64", shape: [3, m] },
    ],
  );
  const [gs] = interpret(g, [x, v, r, flags, hostTensor("f64", [3, m])], { precision: "f64" });
  const order = Array.from(dense.keys())
    .filter((p) => !chosen.has(p))
    .sort((p, q) => score(q) - score(p));
  const got = gs.data as Float64Array;
  for (let j = 0; j < m; j++) {
    const pos = got[j] * 4096 + got[m + j];
    assert.equal(pos, order[j], `top score #${j}`);
    assert.ok(Math.abs(got[2 * m + j] - score(pos)) < 1e-9 * score(pos));
  }
});
