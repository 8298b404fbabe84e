/**
 * Every primitive in ALL_OPS, run on ONNX Runtime and on the reference interpreter with fresh random
 * inputs; results must agree (rel 1e-5 in f32, 1e-12 in f64, exact for ints, bools and
 * random_uniform). Some cases use symbolic dims bound to random sizes per run.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { DType } from "../../ir/dtype.js";
import type { Graph } from "../../ir/graph.js";
import { hostTensor } from "../../ir/host.js";
import { ALL_OPS, BINARY_ARITH_OPS, COMPARE_OPS, type OpName, UNARY_FLOAT_OPS, UNARY_NUMERIC_OPS } from "../../ir/ops.js";
import { concat, constant, iota, randomNormal, randomUniform, type Tensor, zeros } from "../../trace/tensor.js";
import { customVjp, type InputSpec, spec, type TraceOutput, trace } from "../../trace/trace.js";
import { interpret } from "../reference/interpreter.js";
import { LOWERINGS } from "./lower.js";
import { OrtExecutor } from "./session.js";
import { type Gen, gens, mismatch, randomInputs, show, type Tolerance } from "./test-util.js";

interface Case {
  name: string;
  specs: InputSpec[];
  fn: (...xs: Tensor[]) => TraceOutput;
  gen?: Record<string, Gen>;
  tol?: Tolerance;
}

const cases: Case[] = [];
const add = (c: Case) => cases.push(c);
const sym = () => ({ batch: 1 + Math.floor(Math.random() * 3), seq: 1 + Math.floor(Math.random() * 4) });

for (const op of UNARY_FLOAT_OPS) {
  for (const dt of ["f32", "f64"] as DType[]) {
    const positive = op === "log" || op === "sqrt" || op === "rsqrt";
    add({
      name: `${op} ${dt}`,
      specs: [spec(dt, ["batch", "seq", 3], "x")],
      fn: (x) => (x as unknown as Record<string, () => Tensor>)[op].call(x),
      // erf over a wide range exercises both halves of the f64 series/continued-fraction split
      gen: { x: positive ? gens.positive : op === "erf" ? () => Math.random() * 12 - 6 : () => Math.random() * 8 - 4 },
    });
  }
}
for (const op of UNARY_NUMERIC_OPS) {
  for (const dt of ["f32", "f64", "i32", "i64"] as DType[]) {
    add({ name: `${op} ${dt}`, specs: [spec(dt, [2, 5], "x")], fn: (x) => (x as unknown as Record<string, () => Tensor>)[op].call(x) });
  }
}
for (const op of BINARY_ARITH_OPS) {
  for (const dt of ["f32", "f64", "i32", "i64"] as DType[]) {
    if (op === "pow" && (dt === "i32" || dt === "i64")) continue;
    add({
      name: `${op} ${dt} broadcast`,
      specs: [spec(dt, [2, 1, 3], "a"), spec(dt, ["seq", 3], "b")],
      fn: (a, b) => (a as unknown as Record<string, (o: Tensor) => Tensor>)[op].call(a, b),
      gen: op === "pow" ? { a: gens.positive } : op === "div" && (dt === "i32" || dt === "i64") ? { b: gens.nonzeroInt } : {},
    });
  }
}
for (const op of COMPARE_OPS) {
  for (const dt of ["f32", "i64", "bool", "f16"] as DType[]) {
    add({
      name: `${op} ${dt}`,
      specs: [spec(dt, [3, 4], "a"), spec(dt, [4], "b")],
      fn: (a, b) => (a as unknown as Record<string, (o: Tensor) => Tensor>)[op].call(a, b),
      gen: dt === "f32" || dt === "f16" ? { a: () => Math.round(Math.random() * 4), b: () => Math.round(Math.random() * 4) } : {},
    });
  }
}
add({ name: "and", specs: [spec("bool", [3, 4], "a"), spec("bool", [1, 4], "b")], fn: (a, b) => a.and(b) });
add({ name: "or", specs: [spec("bool", [3, 4], "a"), spec("bool", [4], "b")], fn: (a, b) => a.or(b) });
add({ name: "not", specs: [spec("bool", ["batch", 4], "a")], fn: (a) => a.not() });
for (const dt of ["f32", "i32", "bool", "f16"] as DType[]) {
  add({
    name: `where ${dt}`,
    specs: [spec("bool", [3, 1], "c"), spec(dt, [3, 4], "x"), spec(dt, [4], "y")],
    fn: (c, x, y) => c.where(x, y),
  });
}
add({ name: "matmul f32 batched", specs: [spec("f32", [2, "batch", 3, 5], "a"), spec("f32", [5, 4], "b")], fn: (a, b) => a.matmul(b) });
add({
  name: "matmul f32 transposed rhs",
  specs: [spec("f32", ["seq", 6], "a"), spec("f32", [3, 6], "w")],
  fn: (a, w) => a.matmul(w.transpose()),
});
add({ name: "matmul f64", specs: [spec("f64", [3, 7], "a"), spec("f64", [2, 7, 2], "b")], fn: (a, b) => a.matmul(b) });
for (const dt of ["f32", "i32", "i64", "f64"] as DType[]) {
  add({
    name: `reduce_sum ${dt}`,
    specs: [spec(dt, [2, "seq", 3], "x")],
    fn: (x) => [x.sum(1), x.sum([0, 2], true), x.sum()],
    // Halves are exact in f32, and so are their sums here: a random f32 total can cancel to near 0,
    // where a tolerance relative to the result is below the sum's own rounding (a flaky failure).
    gen: dt === "f32" ? { x: () => Math.round(Math.random() * 16 - 8) * 0.5 } : {},
  });
  add({ name: `reduce_max ${dt}`, specs: [spec(dt, [2, "seq", 3], "x")], fn: (x) => [x.max(-1), x.max([0, 1], true), x.max()] });
}
add({ name: "reduce over no axes is identity", specs: [spec("f32", [2, 3], "x")], fn: (x) => [x.sum([]), x.max([])] });
for (const dt of ["f32", "i32", "bool", "f16"] as DType[]) {
  add({
    name: `argmax ${dt}`,
    specs: [spec(dt, [3, 5], "x")],
    fn: (x) => [x.argmax(1), x.argmax(0, true)],
    gen: dt === "i32" ? { x: () => Math.random() * 1e6 } : {},
  });
}
add({
  name: "reshape symbolic",
  specs: [spec("f32", ["batch", "seq", 4], "x")],
  fn: (x) => [x.reshape([2, "seq", "batch", 2]), x.reshape([4, "batch", 1, "seq"])],
});
add({ name: "reshape static bool", specs: [spec("bool", [2, 3, 4], "x")], fn: (x) => x.reshape([4, 6]) });
add({ name: "transpose", specs: [spec("f32", ["batch", 3, 4], "x")], fn: (x) => [x.permute([2, 0, 1]), x.transpose()] });
add({ name: "concat", specs: [spec("f32", ["batch", 2], "a"), spec("f32", ["batch", 3], "b")], fn: (a, b) => concat([a, b, a], 1) });
add({ name: "concat i64", specs: [spec("i64", [2, 2], "a"), spec("i64", [1, 2], "b")], fn: (a, b) => concat([a, b], 0) });
add({ name: "slice", specs: [spec("f32", ["batch", 6], "x")], fn: (x) => [x.slice(1, 1, 4), x.slice(-1, -2)] });
add({ name: "slice bool", specs: [spec("bool", [5, 2], "x")], fn: (x) => x.slice(0, 2, 5) });
const idx5: Gen = () => Math.floor(Math.random() * 10) - 5; // negative indices count from the end
add({
  name: "gather i64 idx",
  specs: [spec("f32", [5, 3], "x"), spec("i64", [2, 4], "i")],
  fn: (x, i) => x.gather(i, 0),
  gen: { i: idx5 },
});
add({
  name: "gather i32 idx axis 1",
  specs: [spec("f32", ["batch", 5, 2], "x"), spec("i32", [3], "i")],
  fn: (x, i) => x.gather(i, 1),
  gen: { i: idx5 },
});
add({
  name: "scatter_add axis 0",
  specs: [spec("f32", [5, 3], "x"), spec("i64", [2, 4], "i"), spec("f32", [2, 4, 3], "u")],
  fn: (x, i, u) => x.scatterAdd(i, u, 0),
  gen: { i: idx5 },
});
add({
  name: "scatter_add axis 1 i32 idx",
  specs: [spec("f32", [2, 5, 3], "x"), spec("i32", [4, 2], "i"), spec("f32", [2, 4, 2, 3], "u")],
  fn: (x, i, u) => x.scatterAdd(i, u, 1),
  gen: { i: idx5 },
});
add({
  name: "scatter_add last axis i64",
  specs: [spec("i64", [2, 5], "x"), spec("i64", [3], "i"), spec("i64", [2, 3], "u")],
  fn: (x, i, u) => x.scatterAdd(i, u, 1),
  gen: { i: idx5 },
});
add({
  name: "scatter_add f16",
  specs: [spec("f16", [5, 3], "x"), spec("i64", [4], "i"), spec("f16", [4, 3], "u")],
  fn: (x, i, u) => x.scatterAdd(i, u, 0),
  gen: { i: idx5 },
});
add({
  name: "take_along_axis",
  specs: [spec("f32", [3, 5], "x"), spec("i64", [3, 7], "i")],
  fn: (x, i) => x.takeAlongAxis(i, 1),
  gen: { i: idx5 },
});
add({
  name: "take_along_axis axis 0 i32",
  specs: [spec("i32", [5, 2], "x"), spec("i32", [3, 2], "i")],
  fn: (x, i) => x.takeAlongAxis(i, 0),
  gen: { i: idx5 },
});
add({
  name: "put_along_axis_add",
  specs: [spec("f32", [3, 5], "x"), spec("i64", [3, 6], "i"), spec("f32", [3, 6], "u")],
  fn: (x, i, u) => x.putAlongAxisAdd(i, u, 1),
  gen: { i: idx5 },
});
add({
  name: "put_along_axis_add f16",
  specs: [spec("f16", [5, 2], "x"), spec("i32", [4, 2], "i"), spec("f16", [4, 2], "u")],
  fn: (x, i, u) => x.putAlongAxisAdd(i, u, 0),
  gen: { i: idx5 },
});
add({
  name: "expand symbolic",
  specs: [spec("f32", [1, 3], "x"), spec("f32", ["batch", "seq"], "y")],
  fn: (x, y) => [x.expand(["batch", 3]), zeros(["batch", "seq", 2]), y.reshape(["batch", "seq", 1]).expand(["batch", "seq", 4])],
});
add({ name: "expand static bool", specs: [spec("bool", [3, 1], "x")], fn: (x) => x.expand([2, 3, 4]) });
add({ name: "pad", specs: [spec("f32", ["batch", 3], "x")], fn: (x) => x.pad([0, 1, 0, 2], -1.5) });
add({
  name: "pad i64 bool",
  specs: [spec("i64", [2, 3], "x"), spec("bool", [2], "b")],
  fn: (x, b) => [x.pad([1, 0, 0, 2], 7), b.pad([1, 1], 1)],
});
for (const [from, to] of [
  ["f32", "i32"],
  ["f32", "i64"],
  ["i64", "f32"],
  ["f32", "bool"],
  ["bool", "f32"],
  ["f32", "f16"],
  ["f16", "f32"],
  ["i32", "f64"],
  ["f64", "f32"],
] as [DType, DType][]) {
  add({
    name: `cast ${from}->${to}`,
    specs: [spec(from, [4, 3], "x")],
    fn: (x) => x.cast(to),
    gen: from === "f32" || from === "f64" ? { x: () => Math.round(Math.random() * 6 - 3) * 1.25 } : {},
  });
}
for (const dt of ["f32", "f64", "i32", "bool", "f16"] as DType[]) {
  add({
    name: `topk ${dt}`,
    specs: [spec(dt, [3, 6], "x")],
    fn: (x) => [...x.topk(3, 1), ...x.topk(2, 0, false)],
    // distinct values, so the order does not depend on tie-breaking (bool ties are tested for index order)
    gen: dt === "bool" ? {} : { x: (i) => ((i * 7919) % 18) * 0.5 - 4 + (dt === "i32" ? 0 : Math.random() * 0.1) },
  });
}
for (const reverse of [false, true]) {
  for (const exclusive of [false, true]) {
    add({
      name: `cumsum rev=${reverse} excl=${exclusive}`,
      specs: [spec("f32", [3, "seq"], "x")],
      fn: (x) => [x.cumsum(1, { reverse, exclusive }), x.cumsum(0, { reverse, exclusive })],
    });
  }
}
add({
  name: "cumsum i64 bool",
  specs: [spec("i64", [4], "x"), spec("bool", [5], "b")],
  fn: (x, b) => [x.cumsum(0), b.cumsum(0, { exclusive: true })],
});
for (const k of [-1, 0, 2]) {
  add({ name: `trilu k=${k}`, specs: [spec("f32", [2, 3, 4], "x")], fn: (x) => [x.triu(k), x.tril(k)] });
}
add({ name: "trilu i64 symbolic rows", specs: [spec("i64", ["seq", 3], "x")], fn: (x) => x.tril(0) });
add({
  name: "iota symbolic",
  specs: [spec("f32", ["batch", "seq"], "x")],
  fn: (x) => [
    iota(["batch", "seq"], 1, "i64"),
    iota(["seq", 2, "batch"], 0, "f32").add(1),
    iota([3, "seq"], 0, "i32"),
    iota([4], 0, "bool"),
    x.mul(0),
  ],
});
add({
  name: "random_uniform",
  specs: [spec("i64", [], "seed"), spec("f32", ["batch", "seq"], "x")],
  fn: (s, x) => [randomUniform(s, ["batch", 3, "seq"]), randomUniform(s, [7], "f64"), x],
  tol: { rtol: 0, scaleTol: 0 },
});
add({
  name: "random_normal",
  specs: [spec("i64", [], "seed")],
  fn: (s) => [randomNormal(s, [4, 5]), randomNormal(s, [9], "f64")],
  tol: { rtol: 1e-5, scaleTol: 1e-6 },
});
add({
  name: "random_normal, a batch of seeds",
  specs: [spec("i64", ["batch", 2], "seed")],
  fn: (s) => [randomNormal(s, [5]), randomUniform(s, [3, 2], "f64")],
  tol: { rtol: 1e-5, scaleTol: 1e-6 },
});
add({ name: "stop_gradient", specs: [spec("f32", [3], "x")], fn: (x) => x.stopGradient().mul(2) });
add({
  name: "custom_vjp",
  specs: [spec("f32", [3], "x"), spec("f32", [3], "y")],
  fn: (x, y) => {
    const f = customVjp(
      "test",
      (a, b) => [a.mul(b), a.add(b)],
      (_p, _o, ct) => ct,
    );
    const [m, s] = f(x, y);
    return [m.exp(), s];
  },
});
add({
  name: "constant",
  specs: [spec("f32", [2, 3], "x")],
  fn: (x) => [
    x.add(constant(hostTensor("f32", [3], [1, -2, 3]))),
    constant(hostTensor("i64", [2], [5, -6])),
    constant(hostTensor("bool", [2], [1, 0])),
  ],
});

const executors: OrtExecutor[] = [];
after(async () => {
  for (const e of executors) await e.release();
});

function opsOf(g: Graph): OpName[] {
  return g.nodes.map((n) => n.op);
}

const covered = new Set<OpName>();

test("every primitive has an ONNX lowering", () => {
  for (const op of ALL_OPS) assert.ok(typeof LOWERINGS[op] === "function", `no lowering for ${op}`);
});

for (const c of cases) {
  test(`ORT matches interpreter: ${c.name}`, async () => {
    const g = trace(c.fn, c.specs);
    for (const op of opsOf(g)) covered.add(op);
    const ex = await OrtExecutor.create(g, { threads: 1 });
    executors.push(ex);
    for (let rep = 0; rep < 2; rep++) {
      const binds = sym();
      const gen: Record<string, Gen> = { seed: () => Math.floor(Math.random() * 2 ** 40) - 2 ** 39, ...c.gen };
      const inputs = randomInputs(g, binds, gen);
      const want = interpret(g, inputs);
      const got = await ex.run(inputs);
      assert.equal(got.length, want.length);
      got.forEach((t, k) => {
        const m = mismatch(t, want[k], c.tol);
        if (m) {
          assert.fail(
            `${c.name}, output ${g.outputs[k].name} (binds ${JSON.stringify(binds)}): ${m}\n` +
              `inputs:\n${inputs.map(show).join("\n")}\nort: ${show(t)}\nref: ${show(want[k])}\n${g.toString()}`,
          );
        }
      });
    }
  });
}

test("the cases above cover every primitive", () => {
  const missing = ALL_OPS.filter((op) => !covered.has(op));
  assert.deepEqual(missing, [], `primitives without an ORT test: ${missing.join(", ")}`);
});
