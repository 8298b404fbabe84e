import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DTypeError, EngineUsageError, PeftkitError, ShapeError } from "../errors.js";
import { checkDType } from "../ir/dtype.js";
import { trace } from "./trace.js";

const f32 = (shape: (number | string)[]) => ({ dtype: "f32" as const, shape });

describe("trace-time errors", () => {
  test("matmul shape mismatch names the op and both shapes", () => {
    assert.throws(
      () => trace((a, b) => a.matmul(b), [f32([2, 3]), f32([4, 5])]),
      (e: unknown) => e instanceof ShapeError && /matmul/.test(e.message) && /\[2, 3\]/.test(e.message) && /\[4, 5\]/.test(e.message),
    );
  });

  test("broadcast mismatch names the op and both shapes", () => {
    assert.throws(
      () => trace((a, b) => a.add(b), [f32([2, 3]), f32([4])]),
      (e: unknown) => e instanceof ShapeError && /add/.test(e.message) && /\[2, 3\]/.test(e.message) && /\[4\]/.test(e.message),
    );
  });

  test("reshape to a different element count names both shapes", () => {
    assert.throws(
      () => trace((a) => a.reshape([4, 2]), [f32([3, 3])]),
      (e: unknown) => e instanceof ShapeError && /reshape/.test(e.message) && /\[3, 3\]/.test(e.message) && /\[4, 2\]/.test(e.message),
    );
  });

  test("symbolic dims must agree", () => {
    assert.throws(() => trace((a, b) => a.add(b), [f32(["batch", 3]), f32(["seq", 3])]), ShapeError);
    const g = trace((a, b) => a.add(b).reshape(["batch", 3, 1]), [f32(["batch", 3]), f32([1, 3])]);
    assert.deepEqual(g.values[g.outputs[0].id].shape, ["batch", 3, 1]);
  });

  test("reshape with -1 infers a (product) symbolic dim", () => {
    const g = trace((a) => a.reshape([-1, 4]).reshape(["batch", "seq", 2, 2]).reshape([-1]), [f32(["batch", "seq", 4])]);
    assert.deepEqual(g.values[g.nodes[0].outputs[0]].shape, ["batch*seq", 4]);
    assert.deepEqual(g.values[g.outputs[0].id].shape, ["4*batch*seq"]);
    assert.throws(() => trace((a) => a.reshape([-1, 2]), [f32(["batch", 3])]), ShapeError);
    assert.throws(() => trace((a) => a.reshape(["seq", -1]), [f32(["batch", 3])]), ShapeError);
  });

  test("an unsupported dtype gives a clear error", () => {
    assert.throws(
      () => checkDType("bf16", "input x"),
      (e: unknown) => e instanceof DTypeError && /bf16/.test(e.message) && /f32/.test(e.message),
    );
    assert.throws(
      () => trace((a) => a.exp(), [{ dtype: "i64", shape: [3] }]),
      (e: unknown) => e instanceof ShapeError && /exp/.test(e.message) && /i64/.test(e.message),
    );
    assert.throws(
      () => trace((a) => a.exp(), [{ dtype: "f16", shape: [3] }]),
      (e: unknown) => e instanceof ShapeError && /f16/.test(e.message),
    );
    assert.throws(
      () => trace((a, b) => a.add(b), [f32([3]), { dtype: "f64", shape: [3] }]),
      (e: unknown) => e instanceof ShapeError && /f32/.test(e.message) && /f64/.test(e.message),
    );
  });

  test("tensor ops outside a trace are a usage error", () => {
    let leaked: import("./tensor.js").Tensor | undefined;
    trace(
      (a) => {
        leaked = a;
        return a;
      },
      [f32([2])],
    );
    assert.throws(() => leaked?.exp(), EngineUsageError);
  });

  test("all engine errors share the PeftkitError base", () => {
    assert.ok(new ShapeError("x") instanceof PeftkitError);
    assert.equal(new ShapeError("x").name, "ShapeError");
  });

  test("slice, concat, gather and topk validate their arguments", () => {
    assert.throws(() => trace((a) => a.topk(5, 1)[0], [f32([2, 3])]), /topk/);
    assert.throws(() => trace((a, i) => a.gather(i), [f32([2, 3]), f32([2])]), /indices must be i64/);
    assert.throws(() => trace((a) => a.transpose(0, 3), [f32([2, 3])]), /axis 3 is out of range/);
  });
});
