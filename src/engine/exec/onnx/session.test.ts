/** Session cache, input validation, error wrapping and float64 graphs. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BackendError, EngineUsageError } from "../../errors.js";
import { hostTensor } from "../../ir/host.js";
import { concat, iota, type Tensor } from "../../trace/tensor.js";
import { spec, trace } from "../../trace/trace.js";
import { interpret } from "../reference/interpreter.js";
import { cachedSessionCount, OrtExecutor } from "./session.js";
import { mismatch, randomTensor, show } from "./test-util.js";

const mlp = (x: Tensor, w: Tensor, v: Tensor) => {
  const h = x.matmul(w.transpose()).erf().mul(x.matmul(w.transpose()).tanh());
  return [h.matmul(v).sum(-1), h.max(0).sqrt()];
};

test("the same graph twice reuses one session; releasing the last user frees it", async () => {
  const before = cachedSessionCount();
  const specs = [spec("f32", ["batch", 6], "x"), spec("f32", [5, 6], "w"), spec("f32", [5, 2], "v")];
  const g = trace(mlp, specs);
  const a = await OrtExecutor.create(g);
  const b = await OrtExecutor.create(g);
  // an identical trace (a different Graph object) hashes to the same model bytes
  const c = await OrtExecutor.create(trace(mlp, specs));
  assert.equal(a.session, b.session);
  assert.equal(a.session, c.session);
  assert.ok(b.compileMs < 5, `second compile took ${b.compileMs} ms`);
  assert.ok(b.compileMs < a.compileMs);
  assert.equal(cachedSessionCount(), before + 1);
  const d = await OrtExecutor.create(g, { threads: 1 });
  assert.notEqual(d.session, a.session, "different options need a different session");
  await d.release();
  await a.release();
  await b.release();
  assert.equal(cachedSessionCount(), before + 1);
  const x = [randomTensor("f32", [3, 6]), randomTensor("f32", [5, 6]), randomTensor("f32", [5, 2])];
  const got = await c.run(x);
  await c.release();
  assert.equal(cachedSessionCount(), before);
  await assert.rejects(c.run(x), EngineUsageError);
  const want = interpret(g, x);
  got.forEach((t, k) => {
    assert.equal(mismatch(t, want[k]), null);
  });
});

test("float64 graphs run on ORT and match the f64 interpreter", async () => {
  const g = trace(mlp, [spec("f64", ["batch", 6], "x"), spec("f64", [5, 6], "w"), spec("f64", [5, 2], "v")]);
  const ex = await OrtExecutor.create(g);
  try {
    const x = [randomTensor("f64", [4, 6]), randomTensor("f64", [5, 6]), randomTensor("f64", [5, 2])];
    const got = await ex.run(x);
    const want = interpret(g, x, { precision: "f64" });
    got.forEach((t, k) => {
      assert.equal(t.dtype, "f64");
      const m = mismatch(t, want[k], { rtol: 1e-12 });
      assert.equal(m, null, `${m}\n${show(t)}\n${show(want[k])}`);
    });
  } finally {
    await ex.release();
  }
});

test("inputs are validated by name, dtype, shape and symbol binding", async () => {
  const g = trace((x, y) => x.add(y), [spec("f32", ["batch", 3], "x"), spec("f32", ["batch", 3], "y")]);
  const ex = await OrtExecutor.create(g);
  try {
    const ok = randomTensor("f32", [2, 3]);
    await assert.rejects(
      ex.run([ok, randomTensor("f64", [2, 3])]),
      (e: Error) =>
        e instanceof EngineUsageError && /"y"/.test(e.message) && /f32\[batch, 3\]/.test(e.message) && /f64\[2, 3\]/.test(e.message),
    );
    await assert.rejects(
      ex.run([ok, randomTensor("f32", [2, 4])]),
      (e: Error) => e instanceof EngineUsageError && /"y"/.test(e.message) && /\[2, 4\]/.test(e.message),
    );
    await assert.rejects(
      ex.run([ok, randomTensor("f32", [5, 3])]),
      (e: Error) => e instanceof EngineUsageError && /batch=5/.test(e.message) && /batch=2/.test(e.message),
    );
    await assert.rejects(ex.run({ x: ok }), (e: Error) => e instanceof EngineUsageError && /missing input "y"/.test(e.message));
    await assert.rejects(ex.run([ok]), EngineUsageError);
    const [z] = await ex.run({ y: ok, x: ok });
    assert.deepEqual(
      Array.from(z.data as Float32Array),
      Array.from(ok.data as Float32Array, (v) => Math.fround(2 * v)),
    );
  } finally {
    await ex.release();
  }
});

test("ORT run-time failures become BackendErrors naming the IR node", async () => {
  const g = trace((x, i) => x.gather(i, 0).exp(), [spec("f32", [4, 2], "x"), spec("i64", [3], "i")]);
  const ex = await OrtExecutor.create(g);
  try {
    await assert.rejects(
      ex.run([randomTensor("f32", [4, 2]), hostTensor("i64", [3], [0, 9, 1])]),
      (e: Error) => e instanceof BackendError && /gather/.test(e.message) && /node #0/.test(e.message),
    );
  } finally {
    await ex.release();
  }
});

test("inputs are passed without copying (a subarray view works as a feed)", async () => {
  const g = trace((x) => x.mul(2), [spec("f32", [4], "x")]);
  const ex = await OrtExecutor.create(g);
  try {
    const backing = new Float32Array([9, 1, 2, 3, 4, 9]);
    const [y] = await ex.run([hostTensor("f32", [4], backing.subarray(1, 5))]);
    assert.deepEqual(Array.from(y.data as Float32Array), [2, 4, 6, 8]);
  } finally {
    await ex.release();
  }
});

describe("sum dims (KV-cache concatenation)", () => {
  test("concat along symbolic axes gives past+seq; ORT and the interpreter agree, with an empty past", async () => {
    const g = trace(
      (past, cur) => {
        const kv = concat([past, cur], 1);
        const pos = iota([2, "past+seq"], 1, "f32");
        return kv.sum(-1).add(pos).reshape([2, -1, 1]);
      },
      [
        { dtype: "f32", shape: [2, "past", 3] },
        { dtype: "f32", shape: [2, "seq", 3] },
      ],
    );
    assert.deepEqual(g.values[g.outputs[0].id].shape, [2, "past+seq", 1]);
    const exec = await OrtExecutor.create(g);
    for (const [p, s] of [
      [0, 3],
      [4, 1],
    ]) {
      const past = hostTensor(
        "f32",
        [2, p, 3],
        Float32Array.from({ length: 6 * p }, () => Math.random()),
      );
      const cur = hostTensor(
        "f32",
        [2, s, 3],
        Float32Array.from({ length: 6 * s }, () => Math.random()),
      );
      const [a] = await exec.run([past, cur]);
      const [b] = interpret(g, [past, cur]);
      assert.deepEqual(a.shape, [2, p + s, 1]);
      assert.deepEqual(b.shape, [2, p + s, 1]);
      Array.from(a.data as Float32Array).forEach((v, i) => {
        assert.ok(Math.abs(v - (b.data as Float32Array)[i]) < 1e-5);
      });
    }
    await exec.release();
  });
});
