import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BackendError } from "../../errors.js";
import { f16ToF32, f32ToF16, hostTensor } from "../../ir/host.js";
import type { BinaryArithOp, CompareOp, UnaryFloatOp } from "../../ir/ops.js";
import { concat, constant, iota, type Tensor } from "../../trace/tensor.js";
import { customVjp, spec } from "../../trace/trace.js";
import { assertClose, ht, i64, numelOf, nums, randVals, ravelBroadcast, run, unravel } from "./testing.js";

const f32 = (shape: number[], v: ArrayLike<number>) => ht("f32", shape, v);
const f64 = (shape: number[], v: ArrayLike<number>) => ht("f64", shape, v);

describe("elementwise", () => {
  const refs: Record<UnaryFloatOp, [(x: number) => number, number, number]> = {
    exp: [Math.exp, -3, 3],
    log: [Math.log, 0.01, 5],
    sqrt: [Math.sqrt, 0, 5],
    rsqrt: [(x) => 1 / Math.sqrt(x), 0.01, 5],
    tanh: [Math.tanh, -4, 4],
    erf: [() => Number.NaN, 0, 0], // checked against a table in math.test.ts
    sigmoid: [(x) => 1 / (1 + Math.exp(-x)), -8, 8],
    sin: [Math.sin, -4, 4],
    cos: [Math.cos, -4, 4],
    reciprocal: [(x) => 1 / x, 0.1, 4],
    floor: [Math.floor, -5, 5],
    round: [() => Number.NaN, 0, 0],
  };
  for (const [op, [ref, lo, hi]] of Object.entries(refs) as [UnaryFloatOp, [(x: number) => number, number, number]][]) {
    if (op === "erf" || op === "round") continue;
    test(`${op} in f64 and f32`, () => {
      const x = randVals(50, lo, hi);
      const fn = (t: Tensor) => (t as unknown as Record<string, () => Tensor>)[op]();
      const [y64] = run(fn, [spec("f64", [50])], [f64([50], x)]);
      assert.equal(y64.dtype, "f64");
      assertClose(nums(y64), x.map(ref), 1e-15, `${op} f64`);
      const [y32] = run(fn, [spec("f32", [50])], [f32([50], x)]);
      assert.ok(y32.data instanceof Float32Array);
      // f32 result = the f64 value rounded once to f32
      assertClose(nums(y32), nums(y64).map(Math.fround), 0, `${op} f32`);
    });
  }

  test("round is half-to-even and keeps -0; floor", () => {
    const x = [0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 2.4, 2.6, -2.6, -0.2, 0, 1e20, Number.POSITIVE_INFINITY, Number.NaN];
    const [y] = run((t) => t.round(), [spec("f64", [x.length])], [f64([x.length], x)]);
    const want = [0, 2, 2, 4, -0, -2, -2, 2, 3, -3, -0, 0, 1e20, Number.POSITIVE_INFINITY, Number.NaN];
    assertClose(nums(y), want, 0, "round");
    assert.ok(Object.is(nums(y)[4], -0));
    const [f] = run((t) => t.floor(), [spec("f32", [4])], [f32([4], [-1.5, -0.5, 0.5, 2])]);
    assertClose(nums(f), [-2, -1, 0, 2]);
  });

  test("neg/abs/sign on floats and ints; sign(0) = 0", () => {
    const x = [-3, -0.5, 0, 2.5, Number.NaN];
    const [n, a, s] = run((t) => [t.neg(), t.abs(), t.sign()], [spec("f32", [5])], [f32([5], x)]);
    assertClose(nums(n), [3, 0.5, -0, -2.5, Number.NaN]);
    assertClose(nums(a), [3, 0.5, 0, 2.5, Number.NaN]);
    assertClose(nums(s), [-1, -1, 0, 1, Number.NaN]);
    for (const dt of ["i32", "i64"] as const) {
      const xi = dt === "i64" ? i64([4], [-7, 0, 5, -1]) : ht("i32", [4], [-7, 0, 5, -1]);
      const outs = run((t) => [t.neg(), t.abs(), t.sign()], [spec(dt, [4])], [xi]);
      assert.deepEqual(
        outs.map((o) => [o.dtype, nums(o)]),
        [
          [dt, [7, 0, -5, 1]],
          [dt, [7, 0, 5, 1]],
          [dt, [-1, 0, 1, -1]],
        ],
      );
    }
  });

  const binRefs: Record<BinaryArithOp, (x: number, y: number) => number> = {
    add: (x, y) => x + y,
    sub: (x, y) => x - y,
    mul: (x, y) => x * y,
    div: (x, y) => x / y,
    pow: (x, y) => x ** y,
    maximum: Math.max,
    minimum: Math.min,
  };
  const cmpRefs: Record<CompareOp, (x: number, y: number) => boolean> = {
    lt: (x, y) => x < y,
    le: (x, y) => x <= y,
    gt: (x, y) => x > y,
    ge: (x, y) => x >= y,
    eq: (x, y) => x === y,
    ne: (x, y) => x !== y,
  };
  const sa = [2, 1, 3];
  const sb = [4, 1];
  const so = [2, 4, 3];
  /** out[i] = f(a[bcast], b[bcast]) by explicit multi-indexing, independent of the kernel's broadcasting. */
  const naive = (a: number[], b: number[], f: (x: number, y: number) => number) =>
    Array.from({ length: numelOf(so) }, (_, i) => {
      const idx = unravel(i, so);
      return f(a[ravelBroadcast(idx, sa)], b[ravelBroadcast(idx, sb)]);
    });

  for (const [op, ref] of Object.entries(binRefs) as [BinaryArithOp, (x: number, y: number) => number][]) {
    test(`${op} broadcasts [2,1,3] with [4,1]`, () => {
      const a = randVals(6, op === "pow" ? 0.1 : -2, 2);
      const b = randVals(4, -2, 2);
      // binary ops are methods of the same names on Tensor
      const fn = (x: Tensor, y: Tensor) => (x as unknown as Record<string, (o: Tensor) => Tensor>)[op](y);
      const [y64] = run(fn, [spec("f64", sa), spec("f64", sb)], [f64(sa, a), f64(sb, b)]);
      assert.deepEqual(y64.shape, so);
      assertClose(nums(y64), naive(a, b, ref), 1e-15, op);
      const [y32] = run(fn, [spec("f32", sa), spec("f32", sb)], [f32(sa, a), f32(sb, b)]);
      assertClose(nums(y32), nums(y64).map(Math.fround), 0, `${op} f32`);
    });
  }

  test("compare ops broadcast and return bool", () => {
    const a = [1, 2, 3, 2, 2, 0];
    const b = [2, 1, 2, 3];
    for (const [op, ref] of Object.entries(cmpRefs) as [CompareOp, (x: number, y: number) => boolean][]) {
      const fn = (x: Tensor, y: Tensor) => (x as unknown as Record<string, (o: Tensor) => Tensor>)[op](y);
      const [y] = run(fn, [spec("f32", sa), spec("f32", sb)], [f32(sa, a), f32(sb, b)]);
      assert.equal(y.dtype, "bool");
      assert.ok(y.data instanceof Uint8Array);
      assert.deepEqual(
        nums(y),
        naive(a, b, (p, q) => (ref(p, q) ? 1 : 0)),
        op,
      );
    }
  });

  test("maximum/minimum propagate NaN; pow follows C for base 1", () => {
    const [mx, mn, pw] = run(
      (x, y) => [x.maximum(y), x.minimum(y), x.pow(y)],
      [spec("f64", [3]), spec("f64", [3])],
      [f64([3], [Number.NaN, 1, 1]), f64([3], [1, Number.NaN, 2])],
    );
    assertClose(nums(mx), [Number.NaN, Number.NaN, 2]);
    assertClose(nums(mn), [Number.NaN, Number.NaN, 1]);
    assertClose(nums(pw), [Number.NaN, 1, 1]);
  });

  test("integer div truncates toward zero; i32 wraps", () => {
    const a = [7, -7, 7, -7, 0, 9, 1];
    const b = [2, 2, -2, -2, 5, 3, 3];
    const want = [3, -3, -3, 3, 0, 3, 0];
    for (const dt of ["i32", "i64"] as const) {
      const mk = (v: number[]) => (dt === "i64" ? i64([7], v) : ht("i32", [7], v));
      const [q] = run((x, y) => x.div(y), [spec(dt, [7]), spec(dt, [7])], [mk(a), mk(b)]);
      assert.deepEqual(nums(q), want, dt);
    }
    const [s, p] = run(
      (x, y) => [x.add(y), x.mul(y)],
      [spec("i32", [2]), spec("i32", [2])],
      [ht("i32", [2], [2147483647, 65536]), ht("i32", [2], [1, 65536])],
    );
    assert.deepEqual(nums(s), [-2147483648, 65536 + 65536]);
    assert.deepEqual(nums(p), [2147483647, 0]);
    assert.throws(
      () => run((x, y) => x.div(y), [spec("i64", [1]), spec("i64", [1])], [i64([1], [1]), i64([1], [0])]),
      (e: Error) => e instanceof BackendError && /div/.test(e.message),
    );
  });

  test("where, and, or, not with broadcasting", () => {
    const c = [1, 0, 1];
    const [w, an, o, n] = run(
      (cond, a, b, d) => [cond.where(a, b), cond.and(d), cond.or(d), cond.not()],
      [spec("bool", [3]), spec("f32", [2, 1]), spec("f32", []), spec("bool", [2, 1])],
      [ht("bool", [3], c), f32([2, 1], [10, 20]), f32([], [-1]), ht("bool", [2, 1], [0, 1])],
    );
    assert.deepEqual(w.shape, [2, 3]);
    assert.deepEqual(nums(w), [10, -1, 10, 20, -1, 20]);
    assert.deepEqual(nums(an), [0, 0, 0, 1, 0, 1]);
    assert.deepEqual(nums(o), [1, 0, 1, 1, 1, 1]);
    assert.deepEqual(nums(n), [0, 1, 0]);
  });
});

describe("matmul", () => {
  function naiveMatmul(a: number[], sa: number[], b: number[], sb: number[]): { out: number[]; shape: number[] } {
    const m = sa[sa.length - 2];
    const k = sa[sa.length - 1];
    const n = sb[sb.length - 1];
    const ba = sa.slice(0, -2);
    const bb = sb.slice(0, -2);
    const r = Math.max(ba.length, bb.length);
    const batch: number[] = [];
    for (let i = 0; i < r; i++) {
      const da = ba[i - (r - ba.length)] ?? 1;
      const db = bb[i - (r - bb.length)] ?? 1;
      batch.push(Math.max(da, db));
    }
    const out: number[] = [];
    for (let t = 0; t < numelOf(batch); t++) {
      const idx = unravel(t, batch);
      const ia = ravelBroadcast(idx, ba);
      const ib = ravelBroadcast(idx, bb);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += a[ia * m * k + i * k + p] * b[ib * k * n + p * n + j];
          out.push(s);
        }
    }
    return { out, shape: [...batch, m, n] };
  }

  const cases: [number[], number[]][] = [
    [
      [3, 4],
      [4, 5],
    ],
    [
      [2, 1, 3, 4],
      [5, 4, 6],
    ],
    [
      [3, 4],
      [2, 4, 5],
    ],
    [
      [2, 3, 1, 2],
      [3, 2, 1],
    ],
  ];
  for (const [sa, sb] of cases) {
    test(`[${sa}] @ [${sb}] against a triple loop`, () => {
      const a = randVals(numelOf(sa));
      const b = randVals(numelOf(sb));
      const want = naiveMatmul(a, sa, b, sb);
      const [y] = run((x, w) => x.matmul(w), [spec("f64", sa), spec("f64", sb)], [f64(sa, a), f64(sb, b)]);
      assert.deepEqual(y.shape, want.shape);
      assertClose(nums(y), want.out, 1e-14, "matmul");
      const [y32] = run((x, w) => x.matmul(w), [spec("f32", sa), spec("f32", sb)], [f32(sa, a), f32(sb, b)]);
      assertClose(nums(y32), want.out.map(Math.fround), 1e-6, "matmul f32");
    });
  }
});

describe("reductions", () => {
  const shape = [2, 3, 4];
  test("reduce_sum / reduce_max over axes with and without keepdims", () => {
    const x = randVals(24);
    for (const axes of [[0], [1], [2], [0, 2], [0, 1, 2]]) {
      for (const keep of [false, true]) {
        const [s, m] = run((t) => [t.sum(axes, keep), t.max(axes, keep)], [spec("f64", shape)], [f64(shape, x)]);
        const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
        const sum = new Array(numelOf(outShape)).fill(0);
        const max = new Array(numelOf(outShape)).fill(Number.NEGATIVE_INFINITY);
        x.forEach((v, i) => {
          const idx = unravel(i, shape).map((d, k) => (axes.includes(k) ? 0 : d));
          const o = ravelBroadcast(idx, outShape);
          sum[o] += v;
          max[o] = Math.max(max[o], v);
        });
        const want = keep ? outShape : shape.filter((_, i) => !axes.includes(i));
        assert.deepEqual(s.shape, want);
        assert.deepEqual(m.shape, want);
        assertClose(nums(s), sum, 1e-14, `sum ${axes} ${keep}`);
        assertClose(nums(m), max, 0, `max ${axes} ${keep}`);
      }
    }
  });

  test("empty axes is the identity (IR shape rule); int sums; max propagates NaN", () => {
    const [y] = run((t) => t.sum([]), [spec("f32", [2])], [f32([2], [1, 2])]);
    assert.deepEqual([y.shape, nums(y)], [[2], [1, 2]]);
    const [si] = run((t) => t.sum(0), [spec("i64", [3])], [i64([3], [5, -2, 10])]);
    assert.deepEqual([si.dtype, nums(si)], ["i64", [13]]);
    const [m] = run((t) => t.max(1), [spec("f32", [2, 3])], [f32([2, 3], [1, Number.NaN, 3, 4, 5, 6])]);
    assertClose(nums(m), [Number.NaN, 6]);
  });

  test("argmax takes the first index of the max", () => {
    const [a, k] = run((t) => [t.argmax(1), t.argmax(0, true)], [spec("f32", [2, 3])], [f32([2, 3], [1, 3, 3, 2, 2, 1])]);
    assert.equal(a.dtype, "i64");
    assert.ok(a.data instanceof BigInt64Array);
    assert.deepEqual(nums(a), [1, 0]);
    assert.deepEqual(k.shape, [1, 3]);
    assert.deepEqual(nums(k), [1, 0, 0]);
  });
});

describe("shape ops", () => {
  test("reshape and transpose (permute) against index arithmetic", () => {
    const x = randVals(24);
    const [r, p] = run((t) => [t.reshape([4, -1]), t.permute([2, 0, 1])], [spec("f32", [2, 3, 4])], [f32([2, 3, 4], x)]);
    assert.deepEqual(r.shape, [4, 6]);
    assertClose(nums(r), x.map(Math.fround));
    assert.deepEqual(p.shape, [4, 2, 3]);
    const want = Array.from({ length: 24 }, (_, i) => {
      const [c, a, b] = unravel(i, [4, 2, 3]);
      return x[(a * 3 + b) * 4 + c];
    });
    assertClose(nums(p), want);
  });

  test("concat along a middle axis, slice and split", () => {
    const a = randVals(6);
    const b = randVals(12);
    const [c, s, parts0, parts1] = run(
      (x, y) => {
        const cat = concat([x, y, x], 1);
        const [p0, p1] = cat.split([3, 5], 1);
        return [cat, cat.slice(1, 2, 6), p0, p1];
      },
      [spec("f64", [2, 1, 3]), spec("f64", [2, 2, 3])],
      [f64([2, 1, 3], a), f64([2, 2, 3], b)],
    );
    assert.deepEqual(c.shape, [2, 4, 3]);
    const want = [...a.slice(0, 3), ...b.slice(0, 6), ...a.slice(0, 3), ...a.slice(3), ...b.slice(6), ...a.slice(3)];
    assertClose(nums(c), want);
    assert.deepEqual(s.shape, [2, 2, 3]);
    assertClose(nums(s), [...want.slice(6, 12), ...want.slice(18, 24)]);
    assert.deepEqual(
      [parts0.shape, parts1.shape],
      [
        [2, 3, 3],
        [2, 1, 3],
      ],
    );
    assertClose(nums(parts1), [...want.slice(9, 12), ...want.slice(21, 24)]);
  });

  test("expand and pad", () => {
    const [e, p] = run((t) => [t.expand([2, 3, 4]), t.pad([1, 0, 2, 1], 9)], [spec("f32", [3, 1])], [f32([3, 1], [1, 2, 3])]);
    assert.deepEqual(e.shape, [2, 3, 4]);
    assertClose(
      nums(e),
      Array.from({ length: 24 }, (_, i) => unravel(i, [2, 3, 4])[1] + 1),
    );
    // [3,1] padded by 1 row before, 2 rows after, 1 column after
    assert.deepEqual(p.shape, [6, 2]);
    assertClose(nums(p), [9, 9, 1, 9, 2, 9, 3, 9, 9, 9, 9, 9]);
    const [p3] = run((t) => t.pad([0, 1, 1, 0, 0, 1]), [spec("i64", [1, 2, 2])], [i64([1, 2, 2], [1, 2, 3, 4])]);
    assert.deepEqual(p3.shape, [1, 3, 4]);
    assert.deepEqual(nums(p3), [0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0]);
  });

  test("gather with negative indices along axis 0 and 1; out-of-range index errors", () => {
    const x = randVals(12);
    const [g0, g1] = run(
      (t, i, j) => [t.gather(i, 0), t.gather(j, 1)],
      [spec("f64", [4, 3]), spec("i64", [2, 2]), spec("i32", [2])],
      [f64([4, 3], x), i64([2, 2], [-1, 0, 2, -4]), ht("i32", [2], [-1, 1])],
    );
    assert.deepEqual(g0.shape, [2, 2, 3]);
    const row = (r: number) => x.slice(r * 3, r * 3 + 3);
    assertClose(nums(g0), [...row(3), ...row(0), ...row(2), ...row(0)]);
    assert.deepEqual(g1.shape, [4, 2]);
    assertClose(
      nums(g1),
      [0, 1, 2, 3].flatMap((r) => [x[r * 3 + 2], x[r * 3 + 1]]),
    );
    assert.throws(
      () => run((t, i) => t.gather(i, 0), [spec("f32", [4, 3]), spec("i64", [1])], [f32([4, 3], x), i64([1], [4])]),
      (e: Error) => e instanceof BackendError && /gather/.test(e.message),
    );
  });

  test("scatter_add accumulates duplicates and is the adjoint of gather", () => {
    const u = randVals(8);
    const [s] = run(
      (b, i, up) => b.scatterAdd(i, up, 0),
      [spec("f64", [4, 2]), spec("i64", [4]), spec("f64", [4, 2])],
      [f64([4, 2], [1, 1, 1, 1, 1, 1, 1, 1]), i64([4], [1, 1, 3, -1]), f64([4, 2], u)],
    );
    assertClose(nums(s), [1, 1, 1 + u[0] + u[2], 1 + u[1] + u[3], 1, 1, 1 + u[4] + u[6], 1 + u[5] + u[7]], 1e-15);
    // <gather(x, idx), w> = <x, scatter_add(0, idx, w)> along axis 1 of a [2,5,3] tensor
    const x = randVals(30);
    const idx = [4, -1, 0, 2, 2, -5];
    const w = randVals(2 * 6 * 3);
    const [g, sc] = run(
      (t, i, ww, z) => [t.gather(i, 1), z.scatterAdd(i, ww, 1)],
      [spec("f64", [2, 5, 3]), spec("i64", [2, 3]), spec("f64", [2, 2, 3, 3]), spec("f64", [2, 5, 3])],
      [f64([2, 5, 3], x), i64([2, 3], idx), f64([2, 2, 3, 3], w), f64([2, 5, 3], new Array(30).fill(0))],
    );
    const lhs = nums(g).reduce((acc, v, k) => acc + v * w[k], 0);
    const rhs = nums(sc).reduce((acc, v, k) => acc + v * x[k], 0);
    assert.ok(Math.abs(lhs - rhs) < 1e-12, `${lhs} vs ${rhs}`);
  });

  test("take_along_axis and put_along_axis_add (duplicates accumulate)", () => {
    const x = [10, 11, 12, 20, 21, 22];
    const [t, p] = run(
      (a, i, u) => [a.takeAlongAxis(i, 1), a.putAlongAxisAdd(i, u, 1)],
      [spec("f32", [2, 3]), spec("i64", [2, 4]), spec("f32", [2, 4])],
      [f32([2, 3], x), i64([2, 4], [2, 0, -1, 1, 1, 1, 0, -3]), f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8])],
    );
    assert.deepEqual(t.shape, [2, 4]);
    assert.deepEqual(nums(t), [12, 10, 12, 11, 21, 21, 20, 20]);
    assert.deepEqual(nums(p), [12, 15, 16, 35, 32, 22]);
    const [t0] = run(
      (a, i) => a.takeAlongAxis(i, 0),
      [spec("f32", [2, 3]), spec("i64", [1, 3])],
      [f32([2, 3], x), i64([1, 3], [1, 0, -1])],
    );
    assert.deepEqual(nums(t0), [20, 11, 22]);
  });
});

describe("cast", () => {
  test("float → int truncates toward zero; → bool is x != 0; bool → float", () => {
    const x = [1.7, -1.7, 2.5, -0.5, 0, 1e3];
    const [a, b, c] = run((t) => [t.cast("i64"), t.cast("i32"), t.cast("bool")], [spec("f32", [6])], [f32([6], x)]);
    assert.deepEqual(nums(a), [1, -1, 2, 0, 0, 1000]);
    assert.ok(b.data instanceof Int32Array);
    assert.deepEqual(nums(b), [1, -1, 2, 0, 0, 1000]);
    assert.deepEqual(nums(c), [1, 1, 1, 1, 0, 1]);
    const [nb] = run((t) => t.cast("bool"), [spec("f64", [3])], [f64([3], [Number.NaN, -0, 1e-300])]);
    assert.deepEqual(nums(nb), [1, 0, 1]);
    const [bf] = run((t) => t.cast("f32"), [spec("bool", [2])], [ht("bool", [2], [1, 0])]);
    assert.deepEqual([bf.dtype, nums(bf)], ["f32", [1, 0]]);
  });

  test("i64 → i32 wraps; f64 → f32 rounds", () => {
    const big = hostTensor("i64", [2], BigInt64Array.of(2n ** 32n + 5n, -(2n ** 31n) - 1n));
    const [w] = run((t) => t.cast("i32"), [spec("i64", [2])], [big]);
    assert.deepEqual(nums(w), [5, 2147483647]);
    const [r] = run((t) => t.cast("f32"), [spec("f64", [1])], [f64([1], [0.1])]);
    assert.equal(nums(r)[0], Math.fround(0.1));
  });

  test("f16 round trips through f16ToF32/f32ToF16", () => {
    const x = [1, 0.1, 1 / 3, 65504, 70000, 1e-8, 6e-8, -2.5, 1e-5, Math.random() * 100];
    const [h, back] = run(
      (t) => {
        const half = t.cast("f16");
        return [half, half.cast("f32")];
      },
      [spec("f32", [x.length])],
      [f32([x.length], x)],
    );
    assert.equal(h.dtype, "f16");
    assert.ok(h.data instanceof Uint16Array);
    assert.deepEqual(
      Array.from(h.data as Uint16Array),
      x.map((v) => f32ToF16(v)),
    );
    assertClose(
      nums(back),
      x.map((v) => f16ToF32(f32ToF16(v))),
    );
    assert.equal(nums(back)[4], Number.POSITIVE_INFINITY);
    assert.equal(nums(back)[5], 0);
    // f16 inputs are decoded: 0x3c00 = 1, 0xc000 = -2, 0x0001 = 2^-24
    const [d] = run((t) => t.cast("f64"), [spec("f16", [3])], [hostTensor("f16", [3], Uint16Array.of(0x3c00, 0xc000, 0x0001))]);
    assert.deepEqual(nums(d), [1, -2, 2 ** -24]);
  });
});

describe("topk, cumsum, trilu, iota", () => {
  function refTopk(x: number[], rows: number, cols: number, k: number, largest: boolean) {
    const vals: number[] = [];
    const idxs: number[] = [];
    for (let r = 0; r < rows; r++) {
      const order = [...Array(cols).keys()].sort((i, j) => {
        const a = x[r * cols + i];
        const b = x[r * cols + j];
        return a === b ? i - j : largest ? b - a : a - b;
      });
      for (let t = 0; t < k; t++) {
        vals.push(x[r * cols + order[t]]);
        idxs.push(order[t]);
      }
    }
    return { vals, idxs };
  }

  test("topk (largest and smallest, ties lower index first) against a sort", () => {
    // small integers so ties are common
    const x = Array.from({ length: 21 }, () => Math.floor(Math.random() * 4));
    for (const largest of [true, false]) {
      const [v, i] = run((t) => t.topk(4, 1, largest), [spec("f32", [3, 7])], [f32([3, 7], x)]);
      const want = refTopk(x, 3, 7, 4, largest);
      assert.deepEqual(v.shape, [3, 4]);
      assert.equal(i.dtype, "i64");
      assert.deepEqual(nums(v), want.vals, `x=${x}`);
      assert.deepEqual(nums(i), want.idxs, `x=${x}`);
    }
    // along axis 0 = topk of the transpose
    const [v0, i0] = run(
      (t) => t.topk(2, 0),
      [spec("f32", [7, 3])],
      [
        f32(
          [7, 3],
          Array.from({ length: 21 }, (_, n) => x[(n % 3) * 7 + Math.floor(n / 3)]),
        ),
      ],
    );
    const want = refTopk(x, 3, 7, 2, true);
    const tr = (a: number[]) => [0, 1].flatMap((t) => [0, 1, 2].map((r) => a[r * 2 + t]));
    assert.deepEqual(nums(v0), tr(want.vals));
    assert.deepEqual(nums(i0), tr(want.idxs));
  });

  test("cumsum inclusive/exclusive, forward/reverse, on axis 0 and 1", () => {
    const x = randVals(10);
    for (const axis of [0, 1]) {
      for (const reverse of [false, true]) {
        for (const exclusive of [false, true]) {
          const [y] = run((t) => t.cumsum(axis, { reverse, exclusive }), [spec("f64", [2, 5])], [f64([2, 5], x)]);
          const want = x.map((_, n) => {
            const [r, c] = unravel(n, [2, 5]);
            const pos = axis === 0 ? r : c;
            const len = axis === 0 ? 2 : 5;
            let s = 0;
            for (let j = 0; j < len; j++) {
              const inRange = reverse ? (exclusive ? j > pos : j >= pos) : exclusive ? j < pos : j <= pos;
              if (inRange) s += axis === 0 ? x[j * 5 + c] : x[r * 5 + j];
            }
            return s;
          });
          assertClose(nums(y), want, 1e-14, `axis=${axis} reverse=${reverse} exclusive=${exclusive}`);
        }
      }
    }
  });

  test("trilu upper/lower with k = -1, 0, 1", () => {
    const x = randVals(24);
    for (const k of [-1, 0, 1]) {
      const [u, l] = run((t) => [t.triu(k), t.tril(k)], [spec("f64", [2, 3, 4])], [f64([2, 3, 4], x)]);
      const wantU = x.map((v, n) => {
        const [, i, j] = unravel(n, [2, 3, 4]);
        return j - i >= k ? v : 0;
      });
      const wantL = x.map((v, n) => {
        const [, i, j] = unravel(n, [2, 3, 4]);
        return j - i <= k ? v : 0;
      });
      assertClose(nums(u), wantU, 0, `triu ${k}`);
      assertClose(nums(l), wantL, 0, `tril ${k}`);
    }
    // hand-checked case: 3x3 upper, k = 1
    const [u] = run((t) => t.triu(1), [spec("f32", [3, 3])], [f32([3, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9])]);
    assert.deepEqual(nums(u), [0, 2, 3, 0, 0, 6, 0, 0, 0]);
  });

  test("iota in several dtypes", () => {
    const [a, b, c] = run(() => [iota([2, 3], 1, "f32"), iota([3, 2], 0), iota([2], 0, "bool")], [], []);
    assert.deepEqual([a.dtype, nums(a)], ["f32", [0, 1, 2, 0, 1, 2]]);
    assert.deepEqual([b.dtype, nums(b)], ["i64", [0, 0, 1, 1, 2, 2]]);
    assert.deepEqual([c.dtype, nums(c)], ["bool", [0, 1]]);
  });
});

describe("identities and constants", () => {
  test("stop_gradient and custom_vjp pass values through", () => {
    const f = customVjp(
      "twice",
      (x) => [x.mul(2), x.add(1)],
      (_p, _o, ct) => [ct[0]],
    );
    const x = randVals(5);
    const [a, b, s] = run(
      (t) => {
        const [y, r] = f(t);
        return [y, r, t.stopGradient()];
      },
      [spec("f64", [5])],
      [f64([5], x)],
    );
    assertClose(
      nums(a),
      x.map((v) => 2 * v),
    );
    assertClose(
      nums(b),
      x.map((v) => v + 1),
    );
    assertClose(nums(s), x);
  });

  test("constants: f32 promoted (not re-read as decimal) in f64 precision, i64 exact", () => {
    const big = 2n ** 60n + 1n;
    const g = () => [constant(hostTensor("f32", [1], [0.1])), constant(hostTensor("i64", [1], BigInt64Array.of(big)))];
    const [c64, i] = run(g, [], [], { precision: "f64" });
    assert.equal(c64.dtype, "f64");
    assert.equal(nums(c64)[0], Math.fround(0.1));
    assert.equal((i.data as BigInt64Array)[0], big);
    const [c32] = run(g, [], []);
    assert.equal(c32.dtype, "f32");
  });
});
