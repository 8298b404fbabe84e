/** Stacking weights of layers that share an input: views when adjacent, packing otherwise. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { canStack, stackedShape, WeightStacks } from "./stacked.js";

const dataOf = (w: Map<string, HostTensor>, n: string) => {
  const t = w.get(n);
  assert.ok(t, n);
  return t.data as Float32Array;
};

const f32 = (shape: number[], start: number) =>
  hostTensor(
    "f32",
    shape,
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => start + i),
  );

test("members adjacent in one buffer are stacked as a view, without a copy", () => {
  const buf = new Float32Array(5 * 2);
  buf.forEach((_, i) => {
    buf[i] = i;
  });
  const w = new Map<string, HostTensor>([
    ["q", hostTensor("f32", [2, 2], buf.subarray(0, 4))],
    ["k", hostTensor("f32", [3, 2], buf.subarray(4, 10))],
  ]);
  const s = new WeightStacks(w).get(["q", "k"]);
  assert.deepEqual(s.shape, [5, 2]);
  assert.equal((s.data as Float32Array).buffer, buf.buffer);
  assert.deepEqual(Array.from(s.data as Float32Array), Array.from(buf));
});

test("scattered members are packed once, their entries become views of the stack, and replacing one repacks", () => {
  const q = f32([2, 3], 0);
  const k = f32([1, 3], 100);
  const v = f32([1, 3], 200);
  const w = new Map<string, HostTensor>([
    ["q", q],
    ["k", k],
    ["v", v],
  ]);
  const stacks = new WeightStacks(w);
  const s = stacks.get(["q", "k", "v"]);
  assert.deepEqual(s.shape, [4, 3]);
  assert.deepEqual(Array.from(s.data as Float32Array), [0, 1, 2, 3, 4, 5, 100, 101, 102, 200, 201, 202]);
  for (const n of ["q", "k", "v"]) assert.equal(dataOf(w, n).buffer, (s.data as Float32Array).buffer, n);
  assert.deepEqual(Array.from(dataOf(w, "k")), [100, 101, 102]);
  assert.equal(stacks.get(["q", "k", "v"]), s, "unchanged members reuse the stack");
  // A merge replaces a member: the next stack holds the new values.
  w.set("k", f32([1, 3], 500));
  assert.deepEqual(Array.from(stacks.get(["q", "k", "v"]).data as Float32Array), [0, 1, 2, 3, 4, 5, 500, 501, 502, 200, 201, 202]);
});

test("a member shared under another name (tied) is copied into the stack but not re-pointed", () => {
  const shared = f32([2, 2], 7);
  const w = new Map<string, HostTensor>([
    ["a", f32([1, 2], 0)],
    ["b", shared],
    ["tie", shared],
  ]);
  const s = new WeightStacks(w).get(["a", "b"]);
  assert.deepEqual(Array.from(s.data as Float32Array), [0, 1, 7, 8, 9, 10]);
  assert.equal(w.get("b"), shared);
  assert.equal(w.get("tie"), shared);
  assert.notEqual(dataOf(w, "a").buffer, (shared.data as Float32Array).buffer);
});

test("only f32 tensors with equal trailing shapes stack; errors name the layers", () => {
  const w = new Map<string, HostTensor>([
    ["a", f32([2, 3], 0)],
    ["b", f32([2, 4], 0)],
    ["c", hostTensor("f64", [1, 3], new Float64Array(3))],
    ["d", f32([5, 3], 0)],
  ]);
  assert.equal(canStack(w, ["a", "d"]), true);
  assert.deepEqual(stackedShape(w, ["a", "d"]), [7, 3]);
  assert.equal(canStack(w, ["a", "b"]), false);
  assert.equal(canStack(w, ["a", "c"]), false);
  assert.equal(canStack(w, ["a", "missing"]), false);
  assert.throws(() => new WeightStacks(w).get(["a", "b"]), /a\+b cannot be stacked/);
  assert.throws(() => new WeightStacks(w).get(["a", "zz"]), /no weight "zz"/);
});
