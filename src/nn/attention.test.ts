/** Rotary embeddings: the gather-based form against transformers' rotate_half, and its gradient. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { rand } from "../engine/autodiff/cases.js";
import { gradCheck } from "../engine/autodiff/gradcheck.js";
import { interpret } from "../engine/exec/reference/interpreter.js";
import { concat, iota } from "../engine/trace/tensor.js";
import { spec, trace } from "../engine/trace/trace.js";
import { applyRotary, rotaryTables, slidingWindow } from "./attention.js";

const invFreq = (d: number) => Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d));

test("applyRotary equals x·cos + rotate_half(x)·sin written as transformers does", () => {
  const d = 8;
  const g = trace(
    (x, pos, inv) => {
      const rot = rotaryTables(pos, inv);
      // transformers: emb = cat(freqs, freqs); x·cos(emb) + rotate_half(x)·sin(emb).
      const freqs = pos.cast("f32").unsqueeze(-1).mul(inv);
      const emb = concat([freqs, freqs], -1).unsqueeze(1);
      const [x1, x2] = x.split([d / 2, d / 2], -1);
      const reference = x.mul(emb.cos()).add(concat([x2.neg(), x1], -1).mul(emb.sin()));
      return [applyRotary(x, rot), reference];
    },
    [spec("f32", [2, 3, 5, d], "x"), spec("i64", [2, 5], "pos"), spec("f32", [d / 2], "inv")],
  );
  const pos = { dtype: "i64" as const, shape: [2, 5], data: BigInt64Array.from({ length: 10 }, (_, i) => BigInt((i * 7) % 11)) };
  const inv = { dtype: "f32" as const, shape: [d / 2], data: Float32Array.from(invFreq(d)) };
  const x = rand([2, 3, 5, d]);
  const x32 = { dtype: "f32" as const, shape: x.shape, data: Float32Array.from(x.data as Float64Array) };
  const [got, want] = interpret(g, [x32, pos, inv], { precision: "f64" });
  (got.data as Float64Array).forEach((v, i) => {
    assert.ok(Math.abs(v - (want.data as Float64Array)[i]) <= 1e-6, `${v} vs ${(want.data as Float64Array)[i]}`);
  });
});

test("applyRotary's gradient (a custom swap-halves backward) matches finite differences", () => {
  const d = 6;
  const r = gradCheck(
    (x, c, s) => {
      const signedSin = concat([s.slice(-1, 0, d / 2).neg(), s.slice(-1, d / 2, d)], -1);
      return applyRotary(x, { cos: c, signedSin }).square().sum();
    },
    [rand([2, 4, d]), rand([1, 4, d]), rand([1, 4, d])],
  );
  assert.ok(r.maxRelError <= 1e-6, `rel err ${r.maxRelError}`);
});

test("slidingWindow keeps keys q−W < k <= q of a causal mask, measured in key slots", () => {
  // 3 queries in slots 5, 6, 7 (cache positions 3..5 behind 2 leading prompt rows), 8 keys.
  const window = 3;
  const g = trace(
    (qpos) => {
      const causal = iota([1, 8], 1).le(qpos.unsqueeze(-1)).unsqueeze(0);
      return [slidingWindow(causal, qpos, window).cast("i64")];
    },
    [spec("i64", [3], "qpos")],
  );
  const slots = [5, 6, 7];
  const [got] = interpret(g, [{ dtype: "i64", shape: [3], data: BigInt64Array.from(slots, BigInt) }]);
  const want = slots.flatMap((q) => Array.from({ length: 8 }, (_, k) => (k <= q && k > q - window ? 1n : 0n)));
  assert.deepEqual([...got.shape], [1, 3, 8]);
  assert.deepEqual(Array.from(got.data as BigInt64Array), want);
  // each query keeps exactly `window` keys, itself included
  for (let i = 0; i < 3; i++) assert.equal(want.slice(i * 8, i * 8 + 8).filter((v) => v === 1n).length, window);
});
