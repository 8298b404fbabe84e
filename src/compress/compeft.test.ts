import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import {
  CompeftError,
  checkCompeftDensity,
  compeftFromParts,
  compeftParts,
  compressTensors,
  decompressAdapter,
  keptCount,
  popcount,
  topKPositions,
} from "./compeft.js";

/** A deterministic pseudo-random stream (LCG) in [-1, 1). */
function noise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

const values = (t: HostTensor | undefined): number[] => [...((t as HostTensor).data as Float32Array)];
const f32 = (shape: number[], data: ArrayLike<number>): HostTensor => hostTensor("f32", shape, Float32Array.from(data));

/** The reference: positions of the k largest |x| by a full sort of (|x| desc, position asc). */
function referenceTopK(x: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: x.length }, (_, i) => i);
  idx.sort((a, b) => Math.abs(x[b]) - Math.abs(x[a]) || a - b);
  return idx.slice(0, k).sort((a, b) => a - b);
}

describe("ComPEFT top-k", () => {
  it("keeps exactly the k largest magnitudes (global over sorted keys) and their signs", () => {
    // Keys deliberately inserted out of order: the concatenation is in sorted key order.
    const tensors = new Map([
      ["m.b", f32([3, 7], noise(21, 2))],
      ["m.a", f32([4, 5], noise(20, 1))],
      ["m.c", f32([9], noise(9, 3))],
    ]);
    const all = [...values(tensors.get("m.a")), ...values(tensors.get("m.b")), ...values(tensors.get("m.c"))];
    for (const density of [0.05, 0.1, 0.3, 0.5, 1]) {
      const c = compressTensors(tensors, { density, alpha: 1, scope: "global", init: 0 });
      const k = keptCount(all.length, density);
      const want = new Set(referenceTopK(all, k));
      const dense = decompressAdapter(c);
      const got = [...values(dense.get("m.a")), ...values(dense.get("m.b")), ...values(dense.get("m.c"))];
      const kept = got.flatMap((v, i) => (v !== 0 ? [i] : []));
      assert.equal(kept.length, k, `density ${density}: ${kept.length} kept, want ${k}`);
      assert.deepEqual(new Set(kept), want, `density ${density}: the kept positions are the top-k`);
      for (const i of kept) assert.equal(Math.sign(got[i]), Math.sign(all[i]), `density ${density}: sign at ${i}`);
    }
  });

  it("breaks ties at the k-th magnitude by the lower position, and never keeps zeros", () => {
    const x = Float64Array.from([0.5, -2, 2, 1, -2, 0.5, 2]);
    assert.deepEqual([...topKPositions(x, 2)], [1, 2]);
    assert.deepEqual([...topKPositions(x, 4)], [1, 2, 4, 6]);
    assert.deepEqual([...topKPositions(x, 5)], [1, 2, 3, 4, 6]);
    assert.deepEqual([...topKPositions(Float64Array.from([0, 3, 0, 0]), 3)], [1]);
  });

  it("k = round(D·n), at least 1", () => {
    assert.equal(keptCount(10, 0.25), 3);
    assert.equal(keptCount(100, 0.29), 29);
    assert.equal(keptCount(7, 0.01), 1);
    assert.equal(keptCount(7, 1), 7);
  });
});

describe("ComPEFT scale", () => {
  it("is α·σ, σ the unbiased std of the whole uncompressed update (closed form)", () => {
    // τ = [1, −2 | 3, 0, −4]; mean −0.4; Σ(τ−mean)² = 29.2; σ = √(29.2/4) = √7.3.
    const tensors = new Map([
      ["b", f32([3], [3, 0, -4])],
      ["a", f32([2], [1, -2])],
    ]);
    const c = compressTensors(tensors, { density: 0.4, alpha: 2, scope: "global", init: 0 });
    const s = Math.fround(2 * Math.sqrt(7.3));
    assert.equal(c.scale, s);
    const d = decompressAdapter(c);
    assert.deepEqual(values(d.get("a")), [0, 0]);
    assert.deepEqual(values(d.get("b")), [s, 0, -s]);
  });

  it("measures τ from 1 for multiplicative (IA³) vectors", () => {
    // τ = [0.5, −1, 2]: mean 0.5, Σ(τ−mean)² = 0 + 2.25 + 2.25, σ = √2.25 = 1.5.
    const c = compressTensors(new Map([["l", f32([3], [1.5, 0, 3])]]), { density: 0.34, alpha: 1, scope: "global", init: 1 });
    assert.equal(c.scale, 1.5);
    assert.deepEqual(values(decompressAdapter(c).get("l")), [1, 1, 2.5]);
  });

  it("per-tensor scope: one σ and one top-k per tensor", () => {
    const c = compressTensors(
      new Map([
        ["a", f32([4], [1, -1, 1, 5])], // mean 1.5, Σ = 0.25+6.25+0.25+12.25 = 19, σ = √(19/3)
        ["b", f32([2], [0.1, -0.3])], // mean −0.1, Σ = 0.08, σ = √0.08
      ]),
      { density: 0.5, alpha: 1, scope: "per-tensor", init: 0 },
    );
    const sa = Math.fround(Math.sqrt(19 / 3));
    const sb = Math.fround(Math.sqrt(0.08));
    const d = decompressAdapter(c);
    // k = 2 of a: 5, then the tie at |1| goes to position 0.
    assert.deepEqual(values(d.get("a")), [sa, 0, 0, sa]);
    assert.deepEqual(values(d.get("b")), [0, -sb]);
  });
});

describe("ComPEFT stored form", () => {
  const tensors = new Map([
    ["x.w", f32([5, 3], noise(15, 9))],
    ["y.w", f32([11], noise(11, 4))],
  ]);
  const c = compressTensors(tensors, { density: 0.3, alpha: 1.5, scope: "global", init: 0 });

  it("round-trips through tensors + metadata; payload is ceil(n/8) + ceil(kept/8) bytes per tensor", () => {
    const parts = compeftParts(c);
    assert.equal(parts.tensors["x.w.compeft_mask"].data.length, 2);
    assert.equal(parts.tensors["y.w.compeft_mask"].data.length, 2);
    const keptX = popcount(parts.tensors["x.w.compeft_mask"].data);
    assert.equal(parts.tensors["x.w.compeft_sign"].data.length, Math.ceil(keptX / 8));
    const back = compeftFromParts(parts, "f");
    assert.deepEqual(decompressAdapter(back), decompressAdapter(c));
  });

  const broken = (edit: (p: ReturnType<typeof compeftParts>) => void, message: RegExp) => () => {
    const p = compeftParts(c);
    const parts = { tensors: { ...p.tensors }, metadata: { ...p.metadata } };
    edit(parts);
    assert.throws(
      () => compeftFromParts(parts, "f.safetensors"),
      (e: Error) => e instanceof CompeftError && message.test(e.message),
    );
  };
  it(
    "refuses a bitmap whose length is not ceil(n/8), naming the tensor",
    broken((p) => {
      const t = p.tensors["x.w.compeft_mask"];
      p.tensors["x.w.compeft_mask"] = { ...t, shape: [3], data: Uint8Array.of(...t.data, 0) };
    }, /^f\.safetensors: tensor "x\.w\.compeft_mask" has 3 bytes, expected ceil\(15\/8\) = 2/),
  );
  it(
    "refuses a sign count that is not the mask's popcount",
    broken((p) => {
      const t = p.tensors["y.w.compeft_mask"];
      p.tensors["y.w.compeft_mask"] = { ...t, data: Uint8Array.of(0xff, 0x07) };
    }, /tensor "y\.w\.compeft_sign" has \d+ bytes, but its mask keeps 11 entries/),
  );
  it(
    "refuses a tensor whose shape is missing",
    broken((p) => {
      p.metadata.shapes = JSON.stringify({ "x.w": [5, 3] });
    }, /metadata "shapes" has no valid shape for tensor "y\.w"/),
  );
  it(
    "refuses a bitmap with bits past its entries",
    broken((p) => {
      const t = p.tensors["x.w.compeft_mask"];
      p.tensors["x.w.compeft_mask"] = { ...t, data: Uint8Array.of(t.data[0], t.data[1] | 0x80) };
    }, /"x\.w\.compeft_mask" has bits set past its 15 entries/),
  );
  it(
    "refuses another format or version",
    broken((p) => {
      p.metadata.format_version = "9";
    }, /format_version "9" is not supported/),
  );

  it("refuses a density outside (0, 1], naming --density", () => {
    for (const d of [0, -0.1, 1.5, Number.NaN]) assert.throws(() => checkCompeftDensity(d), /^CompeftError|--density must be in \(0, 1\]/);
    assert.throws(
      () => compressTensors(tensors, { density: 0, alpha: 1, scope: "global", init: 0 }),
      /--density must be in \(0, 1\], got 0/,
    );
  });
});
