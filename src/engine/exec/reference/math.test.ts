import assert from "node:assert/strict";
import { test } from "node:test";
import { spec } from "../../trace/trace.js";
import { erf, floatToI32, floatToI64, powC, roundHalfEven } from "./math.js";
import { ht, nums, run } from "./testing.js";

// Published values of erf (Abramowitz & Stegun table 7.1 / high-precision tables).
const ERF_TABLE: [number, number][] = [
  [0.1, 0.1124629160182849],
  [0.5, 0.5204998778130465],
  [1, 0.8427007929497149],
  [1.5, 0.9661051464753108],
  [2, 0.9953222650189527],
  [2.5, 0.999593047982555],
  [3, 0.9999779095030014],
  [3.5, 0.9999992569016276],
  [4, 0.9999999845827421],
];

test("erf matches tabulated values to ~1 ulp and is odd", () => {
  for (const [x, want] of ERF_TABLE) {
    assert.ok(Math.abs(erf(x) - want) <= 2.3e-16, `erf(${x}) = ${erf(x)}, want ${want}`);
    assert.equal(erf(-x), -erf(x));
  }
  assert.equal(erf(0), 0);
  assert.equal(erf(10), 1);
  assert.equal(erf(Number.NEGATIVE_INFINITY), -1);
  assert.ok(Number.isNaN(erf(Number.NaN)));
  // erfc(3) = 2.209049699858544e-5: the tail is accurate, not just the leading digits
  assert.ok(Math.abs(1 - erf(3) - 2.209049699858544e-5) < 1e-16);
});

test("erf' = 2/sqrt(pi) exp(-x^2) by central differences, across the series/fraction switch", () => {
  const h = 1e-5;
  for (let i = 0; i < 200; i++) {
    const x = -5 + Math.random() * 10;
    const fd = (erf(x + h) - erf(x - h)) / (2 * h);
    const exact = (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x);
    assert.ok(Math.abs(fd - exact) < 1e-9, `x=${x}: fd ${fd} vs ${exact}`);
  }
});

test("erf kernel output agrees with the scalar function (f32 rounds it)", () => {
  const x = [-3.2, -1, -0.25, 0, 0.7, 2.9, 3.1];
  const [y64] = run((t) => t.erf(), [spec("f64", [7])], [ht("f64", [7], x)]);
  assert.deepEqual(nums(y64), x.map(erf));
  const [y32] = run((t) => t.erf(), [spec("f32", [7])], [ht("f32", [7], x)]);
  assert.deepEqual(
    nums(y32),
    x.map((v) => Math.fround(erf(Math.fround(v)))),
  );
});

test("scalar helpers: round half even, C pow, float → int casts", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -2.5, 4.5000001].map(roundHalfEven), [0, 2, 2, -2, 5]);
  assert.equal(powC(1, Number.NaN), 1);
  assert.equal(powC(-1, Number.POSITIVE_INFINITY), 1);
  assert.equal(powC(2, 10), 1024);
  assert.ok(Number.isNaN(powC(-2, 0.5)));
  assert.deepEqual([2.9, -2.9, 2147483647.5, Number.NaN, 3e9].map(floatToI32), [2, -2, 2147483647, -2147483648, -2147483648]);
  assert.deepEqual([2.9, -2.9, Number.NaN, 1e19].map(floatToI64), [2, -2, -(2 ** 63), -(2 ** 63)]);
});
