import assert from "node:assert/strict";
import { test } from "node:test";
import { LinalgError } from "./errors.js";
import { matrix } from "./matrix.js";
import { qr } from "./qr.js";
import { svd } from "./svd.js";

test("svd and qr refuse non-finite input too (Jacobi would spin on NaN)", () => {
  const a = matrix(2, 3, [1, 2, 3, 4, Number.NaN, 6]);
  assert.throws(
    () => svd(a),
    (e: unknown) => e instanceof LinalgError && /^svd: a has a non-finite value NaN at \(1, 1\)$/.test(e.message),
  );
  assert.throws(
    () => qr(a),
    (e: unknown) => e instanceof LinalgError && /^qr: a has a non-finite value NaN at \(1, 1\)$/.test(e.message),
  );
});
