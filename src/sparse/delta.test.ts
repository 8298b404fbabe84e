import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { writeSafetensors } from "../io/safetensors.js";
import { weightsFingerprint } from "../util/fingerprint.js";
import { composeDeltaSets, mergeDeltaSet } from "./compose.js";
import { addDeltas, applyDelta, checkDelta, type SparseDelta, SparseDeltaError } from "./delta.js";
import { loadSparseDeltas, saveSparseDeltas } from "./file.js";
import { sparseDeltaTensors } from "./format.js";

const delta = (shape: number[], idx: number[], val: number[]): SparseDelta => ({
  shape,
  indices: Int32Array.from(idx),
  values: Float32Array.from(val),
});

describe("sparse deltas on the host", () => {
  test("indices must be in range, increasing and unique; the error names where", () => {
    assert.throws(
      () => checkDelta(delta([2, 3], [0, 6], [1, 2]), "f: w"),
      /f: w: index 6 \(entry 1\) is out of range for a weight of 6 entries/,
    );
    assert.throws(() => checkDelta(delta([2, 3], [2, 2], [1, 2]), "f: w"), /f: w: index 2 is duplicated \(entries 0 and 1\)/);
    assert.throws(() => checkDelta(delta([2, 3], [3, 1], [1, 2]), "f: w"), /must be increasing/);
    assert.throws(() => checkDelta(delta([2, 3], [-1], [1]), "f: w"), /out of range/);
    assert.throws(() => checkDelta(delta([2, 3], [1], [1, 2]), "f: w"), /1 indices but 2 values/);
    checkDelta(delta([2, 3], [0, 5], [1, 2]), "f: w");
  });

  test("merge adds the values at their positions; unmerge takes them away", () => {
    const w = hostTensor("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
    const d = delta([2, 3], [1, 5], [0.5, -2]);
    assert.deepEqual(Array.from(applyDelta(w, d).data as Float32Array), [1, 2.5, 3, 4, 5, 4]);
    assert.deepEqual(Array.from(applyDelta(applyDelta(w, d), d, -1).data as Float32Array), [1, 2, 3, 4, 5, 6]);
    assert.throws(
      () => applyDelta(hostTensor("f32", [3, 2]), d, 1, "f: w"),
      /f: w: made for a weight of shape \[2,3\], this one is \[3,2\]/,
    );
  });

  test("two deltas add as the union of their positions", () => {
    const s = addDeltas(delta([4], [0, 2], [1, 2]), delta([4], [2, 3], [10, 20]));
    assert.deepEqual(Array.from(s.indices), [0, 2, 3]);
    assert.deepEqual(Array.from(s.values), [1, 12, 20]);
  });
});

describe("sparse-delta files", () => {
  const weights = new Map<string, HostTensor>([
    ["a.weight", hostTensor("f32", [2, 3], [1, 2, 3, 4, 5, 6])],
    ["b.weight", hostTensor("f32", [3], [7, 8, 9])],
  ]);
  const base = weightsFingerprint(weights);
  const dir = mkdtempSync(join(tmpdir(), "peftkit-sparse-"));

  test("write, read back, merge and unmerge", () => {
    const file = join(dir, "d.safetensors");
    const set = { deltas: new Map([["a.weight", delta([2, 3], [0, 4], [0.25, -1])]]), baseModel: base };
    saveSparseDeltas(file, set);
    const back = loadSparseDeltas(file);
    assert.equal(back.baseModel, base);
    assert.deepEqual(Array.from(back.deltas.get("a.weight")?.indices ?? []), [0, 4]);
    const merged = mergeDeltaSet(weights, { set: back, file });
    assert.deepEqual(Array.from((merged.get("a.weight")?.data ?? []) as Float32Array), [1.25, 2, 3, 4, 4, 6]);
    const undone = mergeDeltaSet(new Map([...weights, ...merged]), { set: back, file }, -1);
    assert.deepEqual(Array.from((undone.get("a.weight")?.data ?? []) as Float32Array), [1, 2, 3, 4, 5, 6]);
  });

  test("a file with bad indices is refused, naming the file and the tensor", () => {
    for (const [idx, why] of [
      [[0, 9], /index 9 \(entry 1\) is out of range/],
      [[3, 3], /index 3 is duplicated/],
    ] as const) {
      const file = join(dir, "bad.safetensors");
      const { metadata } = sparseDeltaTensors({ deltas: new Map([["a.weight", delta([2, 3], [0, 1], [1, 1])]]), baseModel: base });
      writeSafetensors(
        file,
        { "a.weight.sparse_indices": hostTensor("i32", [2], idx), "a.weight.sparse_values": hostTensor("f32", [2], [1, 1]) },
        metadata,
      );
      assert.throws(
        () => loadSparseDeltas(file),
        (e: Error) => e instanceof SparseDeltaError && e.message.startsWith(`${file}: "a.weight.sparse_indices": `) && why.test(e.message),
      );
    }
  });

  test("a file missing values or the format marker is refused", () => {
    const file = join(dir, "half.safetensors");
    writeSafetensors(
      file,
      { "a.weight.sparse_indices": hostTensor("i32", [1], [0]) },
      { format: "peftkit.sparse_delta", format_version: "1", shapes: '{"a.weight":[2,3]}' },
    );
    assert.throws(() => loadSparseDeltas(file), /"a.weight" has indices but no values/);
    writeSafetensors(file, { x: hostTensor("f32", [1], [0]) }, {});
    assert.throws(() => loadSparseDeltas(file), /not a peftkit sparse delta/);
  });

  test("deltas compose by addition only when made for the same base model", () => {
    const one = { set: { deltas: new Map([["a.weight", delta([2, 3], [0], [1])]]), baseModel: base }, file: "one.safetensors" };
    const two = { set: { deltas: new Map([["a.weight", delta([2, 3], [0, 2], [1, 1])]]), baseModel: base }, file: "two.safetensors" };
    const sum = composeDeltaSets([one, two]);
    assert.deepEqual(Array.from(sum.deltas.get("a.weight")?.values ?? []), [2, 1]);
    const other = new Map(weights);
    other.set("b.weight", hostTensor("f32", [3], [7, 8, 9.5]));
    const foreign = { set: { ...two.set, baseModel: weightsFingerprint(other) }, file: "foreign.safetensors" };
    assert.throws(() => composeDeltaSets([one, foreign]), /foreign.safetensors: made for a different base model/);
    assert.throws(() => mergeDeltaSet(other, one), /one.safetensors: made for a different base model/);
  });

  test.after(() => rmSync(dir, { recursive: true, force: true }));
});
