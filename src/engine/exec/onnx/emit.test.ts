/** Protobuf writer bytes, model structure, hoisting, output aliasing, dead code and product dims. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { backward } from "../../autodiff/grad.js";
import { onesLike } from "../../autodiff/rules.js";
import { type HostTensor, hostTensor } from "../../ir/host.js";
import { reduceSeed, uniformAt } from "../../ir/random.js";
import { crossEntropy } from "../../trace/composites.js";
import { constant, iota, randomUniform } from "../../trace/tensor.js";
import { spec, trace } from "../../trace/trace.js";
import { interpret } from "../reference/interpreter.js";
import { emitOnnx } from "./emit.js";
import { HOIST_BYTES } from "./lower.js";
import { encodeModel } from "./onnx-proto.js";
import { ProtoWriter } from "./protobuf.js";
import { OrtExecutor } from "./session.js";
import { mismatch, randomTensor } from "./test-util.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("protobuf writer produces the wire format byte for byte", () => {
  // The protobuf encoding guide's examples: field 1 = 150, field 2 = "testing".
  assert.equal(hex(new ProtoWriter().int(1, 150).finish()), "089601");
  assert.equal(hex(new ProtoWriter().string(2, "testing").finish()), "120774657374696e67");
  // a negative int64 is ten bytes of two's complement
  assert.equal(hex(new ProtoWriter().int(3, -1).finish()), "18ffffffffffffffffff01");
  assert.equal(hex(new ProtoWriter().int(1, 2n ** 40n).finish()), "08808080808020");
  // nested message: field 3 { field 1 = 150 }
  const inner = new ProtoWriter().int(1, 150);
  assert.equal(hex(new ProtoWriter().message(3, inner).finish()), "1a03089601");
  // packed varints [3, 270, 86942] in field 4
  assert.equal(hex(new ProtoWriter().packedVarints(4, [3, 270, 86942]).finish()), "2206038e029ea705");
  assert.equal(hex(new ProtoWriter().fixed32Float(2, 1).finish()), "150000803f");
  assert.equal(hex(new ProtoWriter().fixed64Double(1, -2).finish()), "0900000000000000c0");
});

test("protobuf writer: large payloads are referenced, and many fields assemble correctly", () => {
  const big = new Uint8Array(100000).map((_, i) => (i * 31) & 255);
  const w = new ProtoWriter();
  for (let i = 0; i < 2000; i++) w.int(1, i);
  w.bytes(2, big);
  w.int(3, 7);
  const out = w.finish();
  // 2000 varint fields (tag + 1..2 bytes), then tag + 3-byte length + payload, then 2 bytes
  let expect = 0;
  for (let i = 0; i < 2000; i++) expect += 1 + (i < 128 ? 1 : 2);
  expect += 1 + 3 + big.length + 2;
  assert.equal(out.length, expect);
  const at = expect - 2 - big.length;
  assert.deepEqual(out.subarray(at, at + big.length), big);
  assert.equal(hex(out.subarray(out.length - 2)), "1807");
});

test("model header: ir_version 8, producer peftkit, opset 18", () => {
  const m = encodeModel({ name: "g", nodes: [], initializers: [], inputs: [], outputs: [] });
  // field 1 varint 8, field 2 "peftkit"
  assert.equal(hex(m.subarray(0, 11)), `0808120770656674${"6b6974"}`);
  // opset import (field 8) = { domain "" (field 1), version 18 (field 2) }
  assert.ok(hex(m).endsWith("42040a001012"));
});

async function runOnce(g: ReturnType<typeof trace>, inputs: HostTensor[]): Promise<HostTensor[]> {
  const ex = await OrtExecutor.create(g, { threads: 1 });
  try {
    return await ex.run(inputs);
  } finally {
    await ex.release();
  }
}

test("constants over 1 MiB are hoisted to inputs and fed at run time", async () => {
  const n = (HOIST_BYTES >> 2) + 1000;
  const c = randomTensor("f32", [n]);
  const small = hostTensor("f32", [1], [0.5]);
  const g = trace((x) => x.add(constant(c)).mul(constant(small)), [spec("f32", [n], "x")]);
  const em = emitOnnx(g);
  assert.equal(em.hoisted.length, 1);
  assert.equal(em.hoisted[0].tensor, c);
  assert.ok(em.model.length < 4096, `model is ${em.model.length} bytes; the big constant should not be inside`);
  const x = randomTensor("f32", [n]);
  const [y] = await runOnce(g, [x]);
  const X = x.data as Float32Array;
  const C = c.data as Float32Array;
  for (let i = 0; i < n; i += 997) assert.equal((y.data as Float32Array)[i], Math.fround(Math.fround(X[i] + C[i]) * 0.5));
});

test("outputs that are inputs, constants, repeated values or aliases all come out", async () => {
  const k = hostTensor("i64", [2], [3, -4]);
  const g = trace(
    (x) => {
      const e = x.exp();
      return { same: x, e, e2: e, k: constant(k), sg: x.stopGradient(), sg2: e.stopGradient() };
    },
    [spec("f32", ["batch"], "same")],
  );
  const x = randomTensor("f32", [3]);
  const out = await runOnce(g, [x]);
  const ex = Float32Array.from(x.data as Float32Array, (v) => Math.exp(v));
  assert.deepEqual(Array.from(out[0].data as Float32Array), Array.from(x.data as Float32Array));
  for (const j of [1, 2, 5]) {
    (out[j].data as Float32Array).forEach((v, i) => {
      assert.ok(Math.abs(v - ex[i]) <= 1e-6 * Math.abs(ex[i]));
    });
  }
  assert.deepEqual(Array.from(out[3].data as BigInt64Array), [3n, -4n]);
  assert.deepEqual(Array.from(out[4].data as Float32Array), Array.from(x.data as Float32Array));
});

test("dead nodes are not emitted", () => {
  const g = trace(
    (x) => {
      x.log()
        .sin()
        .matmul(x.reshape([1, 4]));
      return x.neg();
    },
    [spec("f32", [4, 1], "x")],
  );
  const em = emitOnnx(g);
  assert.equal(em.liveNodes, 1);
  assert.ok(g.nodes.length > 3);
});

test("product dims (batch*seq) from flattening, and symbolic iota/expand/random shapes", async () => {
  const g = trace(
    (x, s) => {
      const flat = x.reshape([-1]);
      const rows = x.reshape(["batch", -1]);
      return [flat, rows, iota(["batch", "seq"], 1, "i64"), randomUniform(s, ["batch", "seq"]), rows.expand([2, "batch", rows.shape[1]])];
    },
    [spec("f32", ["batch", "seq", 3], "x"), spec("i64", [], "seed")],
  );
  assert.equal(typeof g.type(g.outputs[0].id).shape[0], "string", "flatten of symbolic dims gives a product dim");
  for (const [b, q] of [
    [2, 3],
    [1, 5],
  ]) {
    const x = randomTensor("f32", [b, q, 3]);
    const seed = BigInt(Math.floor(Math.random() * 1e12));
    const [flat, rows, io, ru, ex] = await runOnce(g, [x, hostTensor("i64", [], new BigInt64Array([seed]))]);
    assert.deepEqual(flat.shape, [b * q * 3]);
    assert.deepEqual(Array.from(flat.data as Float32Array), Array.from(x.data as Float32Array));
    assert.deepEqual(rows.shape, [b, q * 3]);
    assert.deepEqual(io.shape, [b, q]);
    assert.deepEqual(
      Array.from(io.data as BigInt64Array, Number),
      Array.from({ length: b * q }, (_, i) => i % q),
    );
    const s32 = reduceSeed(seed);
    assert.deepEqual(
      Array.from(ru.data as Float32Array),
      Array.from({ length: b * q }, (_, i) => uniformAt(s32, i)),
    );
    assert.deepEqual(ex.shape, [2, b, q * 3]);
    assert.deepEqual(Array.from(ex.data as Float32Array), [...Array.from(x.data as Float32Array), ...Array.from(x.data as Float32Array)]);
  }
});

test("input and output names are kept, and sanitized when they clash", () => {
  const g = trace((a, b) => ({ a: a.add(b), out: a }), [spec("f32", [2], "a"), spec("f32", [2], "_pk_x")]);
  const em = emitOnnx(g);
  assert.deepEqual(em.inputNames, ["a", "u_pk_x"]);
  assert.deepEqual(em.outputNames, ["a__1", "out"]);
});

test("slices that tile an axis become one Split node; other slices stay Slices", async () => {
  const opTypes = (m: Uint8Array) => ({ split: Buffer.from(m).includes("Split"), slice: Buffer.from(m).includes("Slice") });
  // Pieces listed out of order, one of them also a graph output: the Split must still match each.
  const tiled = trace(
    (x) => {
      const c = x.slice(1, 7, 10);
      const a = x.slice(1, 0, 3);
      const b = x.slice(1, 3, 7);
      return { a: a.mul(2), b: b.sum(1), c };
    },
    [spec("f32", ["batch", 10], "x")],
  );
  assert.deepEqual(opTypes(emitOnnx(tiled).model), { split: true, slice: false });
  const x = randomTensor("f32", [2, 10]);
  const X = x.data as Float32Array;
  const [a, b, c] = await runOnce(tiled, [x]);
  assert.deepEqual(a.shape, [2, 3]);
  for (let r = 0; r < 2; r++) {
    for (let j = 0; j < 3; j++) assert.equal((a.data as Float32Array)[r * 3 + j], X[r * 10 + j] * 2);
    let s = 0;
    for (let j = 3; j < 7; j++) s = Math.fround(s + X[r * 10 + j]);
    assert.ok(Math.abs((b.data as Float32Array)[r] - s) <= 1e-6);
    for (let j = 0; j < 3; j++) assert.equal((c.data as Float32Array)[r * 3 + j], X[r * 10 + 7 + j]);
  }
  // A gap (columns 3..4 unused) or an overlap is not a split.
  const gap = trace((x) => [x.slice(1, 0, 3), x.slice(1, 5, 10)], [spec("f32", [2, 10], "x")]);
  assert.deepEqual(opTypes(emitOnnx(gap).model), { split: false, slice: true });
  const overlap = trace((x) => [x.slice(1, 0, 6), x.slice(1, 5, 10)], [spec("f32", [2, 10], "x")]);
  assert.deepEqual(opTypes(emitOnnx(overlap).model), { split: false, slice: true });
  const [g0, g1] = await runOnce(gap, [x]);
  assert.deepEqual(
    Array.from(g0.data as Float32Array),
    [0, 1, 2, 10, 11, 12].map((i) => X[i]),
  );
  assert.deepEqual(
    Array.from(g1.data as Float32Array),
    [5, 6, 7, 8, 9, 15, 16, 17, 18, 19].map((i) => X[i]),
  );
});

test("in graphs of small tensors, a + (b + c) with the inner sum used once is one Sum node; shared, broadcast or integer sums stay Adds", async () => {
  const has = (m: Uint8Array, op: string) => Buffer.from(m).includes(op);
  const f = [spec("f32", ["batch", 4], "a"), spec("f32", ["batch", 4], "b"), spec("f32", ["batch", 4], "c")];
  const chain = trace((a, b, c) => a.add(b.add(c)).mul(2), f);
  assert.ok(!has(emitOnnx(chain).model, "Sum"), "only graphs of small tensors fuse sums");
  chain.smallTensors = true;
  assert.ok(has(emitOnnx(chain).model, "Sum"));
  const [x, y, z] = [randomTensor("f32", [3, 4]), randomTensor("f32", [3, 4]), randomTensor("f32", [3, 4])];
  const [out] = await runOnce(chain, [x, y, z]);
  (out.data as Float32Array).forEach((v, i) => {
    const want = 2 * ((x.data as Float32Array)[i] + (y.data as Float32Array)[i] + (z.data as Float32Array)[i]);
    assert.ok(Math.abs(v - want) <= 1e-5, `${v} vs ${want}`);
  });
  const shared = trace((a, b, c) => {
    const s = b.add(c);
    return [a.add(s), s.mul(3)];
  }, f);
  shared.smallTensors = true;
  assert.ok(!has(emitOnnx(shared).model, "Sum"));
  const broadcast = trace((a, b, c) => a.add(b.add(c)), [f[0], f[1], spec("f32", [4], "c")]);
  broadcast.smallTensors = true;
  assert.ok(!has(emitOnnx(broadcast).model, "Sum"));
  const ints = trace((a, b, c) => a.add(b.add(c)), [spec("i64", [4], "a"), spec("i64", [4], "b"), spec("i64", [4], "c")]);
  ints.smallTensors = true;
  assert.ok(!has(emitOnnx(ints).model, "Sum"));
  const [s0, s1] = await runOnce(shared, [x, y, z]);
  (s1.data as Float32Array).forEach((v, i) => {
    assert.ok(Math.abs(v - 3 * ((y.data as Float32Array)[i] + (z.data as Float32Array)[i])) <= 1e-5);
  });
  assert.equal(s0.shape[0], 3);
});

test("inputs the graph never reads are left out of the model and not fed, unless a shape is read off them", async () => {
  // "unused" and "shapeOnly" are never read; in "sized", "n" is read only for its length.
  const g = trace(
    (x, _unused, _shapeOnly) => x.mul(2),
    [spec("f32", [3], "x"), spec("f32", [4, 4], "unused"), spec("f32", ["n"], "shapeOnly")],
  );
  const em = emitOnnx(g);
  assert.deepEqual(em.inputNames, ["x", null, null]);
  assert.ok(!Buffer.from(em.model).includes("unused"));
  const sized = trace((_x, n) => iota([n.shape[0]], 0, "f32"), [spec("f32", [3], "x"), spec("f32", ["n"], "n")]);
  assert.deepEqual(emitOnnx(sized).inputNames, [null, "n"]);
  // Run with values for every graph input: the executor drops the unread ones.
  const [y] = await runOnce(g, [hostTensor("f32", [3], [1, 2, 3]), randomTensor("f32", [4, 4]), randomTensor("f32", [5])]);
  assert.deepEqual(Array.from(y.data as Float32Array), [2, 4, 6]);
  const [r] = await runOnce(sized, [randomTensor("f32", [3]), randomTensor("f32", [5])]);
  assert.deepEqual(Array.from(r.data as Float32Array), [0, 1, 2, 3, 4]);
});

test("a graph that outputs the cross-entropy gradient but not the loss exports and matches the interpreter", async () => {
  // crossEntropy is a custom_vjp whose backward reads its second forward output (the log-sum-exp)
  // while the first (the loss) is dead: the export must not read the dead forward output.
  const g = trace(
    (z, labels) => {
      const start = z.graph.nodes.length;
      const loss = crossEntropy(z, labels);
      const [dz] = backward([loss], [onesLike(loss)], [z], start);
      return { dz };
    },
    [spec("f32", [3, 5], "z"), spec("i64", [3], "labels")],
  );
  const z = randomTensor("f32", [3, 5]);
  const labels = hostTensor("i64", [3], new BigInt64Array([1n, -100n, 4n]));
  const [got] = await runOnce(g, [z, labels]);
  const [want] = interpret(g, [z, labels]);
  assert.equal(mismatch(got, want), null);
  // Closed form: (softmax(z) − onehot(label)) / #valid rows; the ignored row has no gradient.
  const Z = z.data as Float32Array;
  const G = got.data as Float32Array;
  [1, -100, 4].forEach((lab, r) => {
    const row = Array.from(Z.subarray(r * 5, r * 5 + 5));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    for (let c = 0; c < 5; c++) {
      const want = lab < 0 ? 0 : (e[c] / s - (c === lab ? 1 : 0)) / 2;
      assert.ok(Math.abs(G[r * 5 + c] - want) < 1e-6, `row ${r} class ${c}: ${G[r * 5 + c]} vs ${want}`);
    }
  });
});
