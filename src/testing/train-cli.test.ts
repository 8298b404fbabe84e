/**
 * The shared resume check must itself catch what it is for: a tensor off by more than its
 * tolerance, a missing or renamed tensor, a changed shape, a NaN, and integer indices that moved.
 * (A comparison that always passes would leave every CLI resume test green for a broken resume.)
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { hostTensor } from "../engine/ir/host.js";
import { writeSafetensors } from "../io/safetensors.js";
import { assertSafetensorsClose, maxAbsDifference, tempDir, writeKindOfData } from "./train-cli.js";

const tmp = tempDir("peftkit-train-cli-helpers-");
const file = (name: string, a: number[], idx: number[] = [1, 4], shape = [a.length]) => {
  const path = join(tmp, `${name}.safetensors`);
  writeSafetensors(path, { a: hostTensor("f32", shape, a), "m.indices": hostTensor("i32", [idx.length], idx) });
  return path;
};
const tol = (key: string) => (key.endsWith(".indices") ? 0 : 1e-6);

describe("train-cli helpers", () => {
  test("maxAbsDifference is the largest |a − b|, NaN when an entry is NaN", () => {
    assert.equal(maxAbsDifference([1, 2, 3], [1, 2.5, 1]), 2);
    assert.equal(maxAbsDifference(new Int32Array([4, 7]), new Int32Array([4, 7])), 0);
    assert.ok(Number.isNaN(maxAbsDifference([1, Number.NaN], [1, 2])));
  });

  test("assertSafetensorsClose passes within tolerance, fails past it, on NaN, moved indices, other names or shapes", () => {
    const want = file("want", [0.5, -1, 2, 3]);
    assertSafetensorsClose(want, file("near", [0.5 + 5e-7, -1, 2, 3]), tol);
    assert.throws(() => assertSafetensorsClose(want, file("far", [0.5, -1, 2 + 3e-6, 3]), tol), /a: max \|resumed − uninterrupted\| /);
    assert.throws(() => assertSafetensorsClose(want, file("nan", [0.5, Number.NaN, 2, 3]), tol), /a: max .* NaN/);
    assert.throws(() => assertSafetensorsClose(want, file("moved", [0.5, -1, 2, 3], [1, 5]), tol), /m\.indices: max/);
    assert.throws(
      () => assertSafetensorsClose(want, file("shape", [0.5, -1, 2, 3], [1, 4], [2, 2]), tol),
      /^AssertionError \[ERR_ASSERTION\]: a\n/,
    );
    const other = join(tmp, "other.safetensors");
    writeSafetensors(other, { b: hostTensor("f32", [1], [0]) });
    assert.throws(() => assertSafetensorsClose(want, other, tol));
  });

  test("writeKindOfData writes the kind-of examples as prompt/completion lines", () => {
    const lines = readFileSync(writeKindOfData(tmp, 2), "utf8").split("\n");
    assert.deepEqual(lines, [
      '{"prompt":"a dog is a kind of","completion":" animal"}',
      '{"prompt":"a oak is a kind of","completion":" tree"}',
      "",
    ]);
  });
});
