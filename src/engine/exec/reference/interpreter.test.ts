import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BackendError, DTypeError, EngineUsageError, ShapeError } from "../../errors.js";
import { Graph } from "../../ir/graph.js";
import { hostTensor } from "../../ir/host.js";
import { ALL_OPS } from "../../ir/ops.js";
import { normalAt, reduceSeed, uniformAt } from "../../ir/random.js";
import { constant, iota, randomNormal, randomUniform, type Tensor } from "../../trace/tensor.js";
import { spec, trace } from "../../trace/trace.js";
import { interpret } from "./interpreter.js";
import { KERNELS } from "./kernels.js";
import { kernelInputs, planExecution } from "./plan.js";
import { assertClose, ht, i64, nums, randVals, run } from "./testing.js";

describe("API and input checking", () => {
  test("every primitive has a kernel; an unknown op is a BackendError naming it", () => {
    for (const op of ALL_OPS) assert.equal(typeof KERNELS[op], "function", op);
    const g = trace((x) => x.neg(), [spec("f32", [2])]);
    (g.nodes[0] as { op: string }).op = "frobnicate";
    assert.throws(
      () => interpret(g, [ht("f32", [2], [1, 2])]),
      (e: Error) => e instanceof BackendError && e.message.includes("frobnicate"),
    );
  });

  test("inputs by position or by name; outputs in graph order", () => {
    const g = trace((a, b) => ({ diff: a.sub(b), sum: a.add(b) }), [spec("f32", [2], "a"), spec("f32", [2], "b")]);
    const a = ht("f32", [2], [5, 7]);
    const b = ht("f32", [2], [1, 2]);
    const byPos = interpret(g, [a, b]);
    const byName = interpret(g, { b, a });
    assert.deepEqual(byPos.map(nums), [
      [4, 5],
      [6, 9],
    ]);
    assert.deepEqual(byName.map(nums), byPos.map(nums));
    assert.throws(() => interpret(g, [a]), EngineUsageError);
    assert.throws(
      () => interpret(g, { a }),
      (e: Error) => e instanceof EngineUsageError && e.message.includes('"b"'),
    );
    assert.throws(
      () => interpret(g, { a, b, c: a }),
      (e: Error) => e instanceof EngineUsageError && e.message.includes('"c"'),
    );
  });

  test("dtype and shape mismatches name the input, the expected and the actual type", () => {
    const g = trace((x) => x.mul(2), [spec("f32", ["batch", 4], "x")]);
    assert.throws(
      () => interpret(g, [ht("f64", [2, 4], new Array(8).fill(0))]),
      (e: Error) =>
        e instanceof DTypeError && /"x"/.test(e.message) && e.message.includes("f32[batch, 4]") && e.message.includes("f64[2, 4]"),
    );
    assert.throws(
      () => interpret(g, [ht("i32", [2, 4], new Array(8).fill(0))]),
      (e: Error) => e instanceof DTypeError && e.message.includes("i32[2, 4]"),
    );
    assert.throws(
      () => interpret(g, [ht("f32", [2, 5], new Array(10).fill(0))]),
      (e: Error) => e instanceof ShapeError && /"x"/.test(e.message) && e.message.includes("f32[batch, 4]") && e.message.includes("[2, 5]"),
    );
    assert.throws(
      () => interpret(g, [ht("f32", [8], new Array(8).fill(0))]),
      (e: Error) => e instanceof ShapeError && e.message.includes("rank"),
    );
    // storage that contradicts the declared dtype
    assert.throws(() => interpret(g, [{ dtype: "f32", shape: [1, 4], data: new Float64Array(4) }]), DTypeError);
    assert.throws(() => interpret(g, [{ dtype: "f32", shape: [1, 4], data: new Float32Array(3) }]), ShapeError);
  });

  test("symbolic dims are bound from inputs; conflicts name the input and the symbol", () => {
    const g = trace(
      (x, m) => {
        const y = x.mul(m.unsqueeze(1)).reshape(["batch", 2, 2]);
        return [y, iota(["batch", 4], 0, "f32").add(x)];
      },
      [spec("f32", ["batch", 4], "x"), spec("f32", ["batch"], "m")],
    );
    for (const b of [1, 3, 5]) {
      const x = randVals(b * 4);
      const m = randVals(b);
      const [y, r] = interpret(g, { x: ht("f32", [b, 4], x), m: ht("f32", [b], m) });
      assert.deepEqual(y.shape, [b, 2, 2]);
      assertClose(
        nums(y),
        x.map((v, i) => Math.fround(v * m[Math.floor(i / 4)])),
      );
      assert.deepEqual(r.shape, [b, 4]);
      assertClose(
        nums(r),
        x.map((v, i) => Math.fround(v + Math.floor(i / 4))),
      );
    }
    assert.throws(
      () => interpret(g, [ht("f32", [3, 4], new Array(12).fill(0)), ht("f32", [2], [0, 0])]),
      (e: Error) => e instanceof ShapeError && /"m"/.test(e.message) && /"batch"/.test(e.message) && /"x"/.test(e.message),
    );
  });

  test("a symbol no input binds is a ShapeError", () => {
    const g = trace(() => iota(["seq"], 0), []);
    assert.throws(
      () => interpret(g, []),
      (e: Error) => e instanceof ShapeError && /"seq"/.test(e.message),
    );
  });

  test("outputs never alias inputs or constants", () => {
    const x = ht("f64", [3], [1, 2, 3]);
    const k = hostTensor("f64", [1], [4]);
    const g = trace((t) => [t, t.stopGradient(), constant(k)], [spec("f64", [3])]);
    const [a, b, c] = interpret(g, [x]);
    assert.notEqual(a.data, x.data);
    assert.notEqual(a.data, b.data);
    (a.data as Float64Array)[0] = 99;
    (c.data as Float64Array)[0] = 99;
    assert.deepEqual(nums(x), [1, 2, 3]);
    assert.deepEqual(nums(b), [1, 2, 3]);
    assert.deepEqual(nums(interpret(g, [x])[2]), [4]);
  });

  test("i64 values pass through exactly, even above 2^53", () => {
    const big = 2n ** 60n + 3n;
    const [y] = run((t) => t.reshape([2]).stopGradient(), [spec("i64", [1, 2])], [hostTensor("i64", [1, 2], BigInt64Array.of(big, -big))]);
    assert.deepEqual(Array.from(y.data as BigInt64Array), [big, -big]);
  });
});

describe("precision", () => {
  test("f32 rounds every f32 result; f64 keeps doubles and returns f64", () => {
    const fn = (a: Tensor, b: Tensor) => a.add(b).sub(a);
    const specs = [spec("f32", [1]), spec("f32", [1])];
    const ins = [ht("f32", [1], [1]), ht("f32", [1], [1e-8])];
    const [y32] = run(fn, specs, ins);
    assert.ok(y32.data instanceof Float32Array);
    assert.equal(y32.dtype, "f32");
    assert.equal(nums(y32)[0], 0); // 1 + 1e-8 rounds to 1 in f32
    const [y64] = run(fn, specs, ins, { precision: "f64" });
    assert.ok(y64.data instanceof Float64Array);
    assert.equal(y64.dtype, "f64");
    // exact up to the f64 rounding of 1 + 1e-8 (half an ulp of 1)
    assert.ok(Math.abs(nums(y64)[0] - Math.fround(1e-8)) < 1.2e-16, `${nums(y64)[0]}`);
  });

  test("f64 inputs are accepted for f32 graph inputs only in f64 precision", () => {
    const g = trace((x) => x.mul(3), [spec("f32", [1])]);
    const x = ht("f64", [1], [0.1]);
    assert.equal(nums(interpret(g, [x], { precision: "f64" })[0])[0], 0.1 * 3);
    assert.throws(() => interpret(g, [x]), DTypeError);
    assert.throws(() => interpret(g, [x], { precision: "f16" as "f32" }), EngineUsageError);
  });

  test("non-f32 dtypes are unaffected by precision", () => {
    const fn = (a: Tensor, b: Tensor, c: Tensor) => [a.add(b), c.cast("i64"), a.cast("f64")];
    const specs = [spec("f64", [1]), spec("f64", [1]), spec("i32", [1])];
    const ins = [ht("f64", [1], [1]), ht("f64", [1], [1e-12]), ht("i32", [1], [7])];
    const a = run(fn, specs, ins);
    const b = run(fn, specs, ins, { precision: "f64" });
    assert.deepEqual(
      a.map((t) => [t.dtype, nums(t)]),
      b.map((t) => [t.dtype, nums(t)]),
    );
    assert.equal(nums(a[0])[0], 1 + 1e-12);
  });
});

describe("random", () => {
  const seedOf = (s: bigint) => hostTensor("i64", [], BigInt64Array.of(s));
  const draw = () => BigInt(Math.floor(Math.random() * 2 ** 40)) * (Math.random() < 0.5 ? -1n : 1n);

  test("element i is uniformAt/normalAt(reduceSeed(seed), i) with the row-major counter", () => {
    const seed = 2n ** 62n + draw();
    const [u, n, n64] = run(
      (s) => [randomUniform(s, [3, 4]), randomNormal(s, [2, 3]), randomNormal(s, [5], "f64")],
      [spec("i64", [])],
      [seedOf(seed)],
    );
    const s32 = reduceSeed(seed);
    assert.deepEqual(u.shape, [3, 4]);
    assertClose(
      nums(u),
      Array.from({ length: 12 }, (_, i) => uniformAt(s32, i)),
      0,
      `seed ${seed}`,
    );
    assertClose(
      nums(n),
      Array.from({ length: 6 }, (_, i) => Math.fround(normalAt(s32, i))),
      0,
      `seed ${seed}`,
    );
    assert.equal(n64.dtype, "f64");
    assertClose(
      nums(n64),
      Array.from({ length: 5 }, (_, i) => normalAt(s32, i)),
      0,
      `seed ${seed}`,
    );
  });

  test("same seed, same numbers; different seeds, different numbers; shape symbolic", () => {
    const g = trace((s, x) => randomUniform(s, ["batch", 8]).add(x.mul(0)), [spec("i64", []), spec("f32", ["batch", 1])]);
    const seed = draw();
    const x = ht("f32", [3, 1], [0, 0, 0]);
    const a = nums(interpret(g, [seedOf(seed), x])[0]);
    const b = nums(interpret(g, [seedOf(seed), x])[0]);
    const c = nums(interpret(g, [seedOf(seed + 1n), x])[0]);
    assert.equal(a.length, 24);
    assert.deepEqual(a, b);
    assert.ok(a.filter((v, i) => v === c[i]).length < 3, `seeds ${seed} and ${seed + 1n} collide`);
  });

  const stats = (v: number[]) => {
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    return [m, v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length];
  };

  test("uniform moments over 100k samples: mean 1/2, var 1/12, all in [0, 1)", () => {
    const seed = draw();
    const [u] = run((s) => randomUniform(s, [100000], "f64"), [spec("i64", [])], [seedOf(seed)]);
    const uv = nums(u);
    const [um, uvar] = stats(uv);
    assert.ok(uv.every((v) => v >= 0 && v < 1));
    // tolerances are ~5 standard errors
    assert.ok(Math.abs(um - 0.5) < 0.005, `uniform mean ${um}, seed ${seed}`);
    assert.ok(Math.abs(uvar - 1 / 12) < 0.0015, `uniform var ${uvar}, seed ${seed}`);
  });

  test("normal moments over 100k samples: mean 0, var 1", () => {
    const seed = draw();
    const [n] = run((s) => randomNormal(s, [100000], "f64"), [spec("i64", [])], [seedOf(seed)]);
    const [nm, nvar] = stats(nums(n));
    assert.ok(Math.abs(nm) < 0.02, `normal mean ${nm}, seed ${seed}`);
    assert.ok(Math.abs(nvar - 1) < 0.025, `normal var ${nvar}, seed ${seed}`);
  });

  test("neighbouring uniforms are uncorrelated", () => {
    const seed = draw();
    const [u] = run((s) => randomUniform(s, [100256], "f64"), [spec("i64", [])], [seedOf(seed)]);
    const v = nums(u);
    for (const lag of [1, 2, 256]) {
      let c = 0;
      for (let i = 0; i < 100000; i++) c += (v[i] - 0.5) * (v[i + lag] - 0.5);
      const corr = (c / 100000) * 12;
      // standard error of the correlation estimate is ~0.003
      assert.ok(Math.abs(corr) < 0.02, `lag ${lag} correlation ${corr}, seed ${seed}`);
    }
  });
});

describe("execution plan", () => {
  test("a long chain keeps only a couple of values alive", () => {
    const g = trace(
      (x) => {
        let y = x;
        for (let i = 0; i < 50; i++) y = y.mul(1.01).add(x);
        return y;
      },
      [spec("f32", [4])],
    );
    const plan = planExecution(g);
    const alive = new Set<number>(g.inputs.map((i) => i.id));
    let peak = 0;
    g.nodes.forEach((node, i) => {
      if (!plan.run[i]) return;
      for (const v of kernelInputs(node)) assert.ok(alive.has(v), `node ${i} reads a freed value`);
      for (const o of node.outputs) if (plan.needed[o]) alive.add(o);
      peak = Math.max(peak, alive.size);
      for (const v of plan.frees[i]) alive.delete(v);
    });
    // x, the running value, and one fresh constant/product at a time
    assert.ok(peak <= 4, `peak ${peak}`);
    assert.deepEqual([...alive], [g.outputs[0].id]);
  });

  test("nodes that feed no output are not run", () => {
    const g = trace(
      (x) => {
        x.gather(constant(i64([1], [99])), 0); // would fail if executed
        return x.add(1);
      },
      [spec("f32", [2])],
    );
    assert.deepEqual(nums(interpret(g, [ht("f32", [2], [1, 2])])[0]), [2, 3]);
  });

  test("custom_vjp primals are not kept alive for the region", () => {
    const g = new Graph();
    const x = g.addInput("x", { dtype: "f32", shape: [2] });
    const [y] = g.addNode("neg", [x], {});
    const [z] = g.addNode("custom_vjp", [x, y], { nPrimals: 1, name: "t", bwd: () => [null] });
    g.addOutput("z", z);
    assert.deepEqual(kernelInputs(g.nodes[1]), [y]);
    assert.deepEqual(nums(interpret(g, [ht("f32", [2], [1, -2])])[0]), [-1, 2]);
  });
});

describe("product dims", () => {
  test("flattening symbolic dims gives batch*seq and runs with the product of the bindings", () => {
    const g = trace(
      (x) =>
        x
          .reshape([-1, 4])
          .sum(-1)
          .reshape(["batch", "seq"])
          .add(iota(["batch*seq"], 0, "f32").reshape(["batch", "seq"])),
      [spec("f32", ["batch", "seq", 4])],
    );
    const b = 2 + Math.floor(Math.random() * 3);
    const t = 1 + Math.floor(Math.random() * 4);
    const x = randVals(b * t * 4);
    const [y] = interpret(g, [hostTensor("f32", [b, t, 4], Float32Array.from(x))]);
    assert.deepEqual(y.shape, [b, t]);
    const want = Array.from({ length: b * t }, (_, i) => x[4 * i] + x[4 * i + 1] + x[4 * i + 2] + x[4 * i + 3] + i);
    assertClose(nums(y), want, 1e-5);
  });
});
