import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import {
  CompeftError,
  type CompressedAdapter,
  type CompressedTensor,
  checkCompeftDensity,
  compeftFromParts,
  compeftParts,
  compressTensors,
  decompressAdapter,
  keptCount,
  lloydMax,
  nearestLevel,
  packCodes,
  payloadBytes,
  popcount,
  quantiseMagnitudes,
  topKPositions,
  unpackCode,
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

describe("ComPEFT --bits > 1: Lloyd–Max magnitude levels (peftkit extension)", () => {
  it("Lloyd–Max reaches the hand-computed optimum: {1..6} ∪ {100} with 2 levels → [3.5, 100]", () => {
    // Start at the quantiles: sorted[⌊0.5·7/2⌋] = 2, sorted[⌊1.5·7/2⌋] = 6. Midpoint 4 → cells {1..4}, {5, 6, 100}
    // → levels 2.5, 37; midpoint 19.75 → {1..6}, {100} → 3.5, 100; fixed point, the optimum (SSE 17.5).
    const x = Float64Array.from([100, 3, 1, 6, 2, 5, 4]);
    assert.deepEqual([...lloydMax(x, 2)], [3.5, 100]);
    // Three well-separated clusters, 3 levels: the cluster means.
    const y = Float64Array.from([0.5, 0.25, 0.75, 7, 7, 8, 8, 20, 22]);
    assert.deepEqual([...lloydMax(y, 3)], [0.5, 7.5, 21]);
    assert.deepEqual([...lloydMax(new Float64Array(0), 4)], []);
  });

  it("empty cells keep their level, and levels no value uses are dropped", () => {
    // {2, 2, 3} with 4 levels: start [2, 2, 2, 3]; cells {2, 2}, ∅, ∅, {3}: a fixed point.
    assert.deepEqual([...lloydMax(Float64Array.from([2, 3, 2]), 4)], [2, 2, 2, 3]);
    const q = quantiseMagnitudes(Float64Array.from([2, 3, 2]), 3, 1);
    assert.deepEqual([...q.levels], [2, 3]);
    assert.deepEqual([...q.codes], [0, 1, 0]);
  });

  it("a value midway between two levels takes the lower one", () => {
    assert.equal(nearestLevel(2, [1, 3]), 0);
    assert.equal(nearestLevel(2.0000001, [1, 3]), 1);
    assert.equal(nearestLevel(5, [1, 3, 4]), 2);
  });

  it("codes pack LSB-first, b − 1 bits each, across byte boundaries", () => {
    // 7-bit codes 1, 127, 64: stream bits 0..6 = 1, 7..13 = 127, 14..20 = 64 (bit 20 set).
    const p = packCodes([1, 127, 64], 0, 3, 7);
    assert.deepEqual([...p], [0b10000001, 0b00111111, 0b00010000]);
    for (const [j, c] of [1, 127, 64].entries()) assert.equal(unpackCode(p, j, 7), c);
  });

  const tensors = new Map([
    ["x.w", f32([6, 9], noise(54, 11))],
    [
      "y.w",
      f32(
        [40],
        noise(40, 12).map((v) => v * v * v),
      ),
    ],
    ["z.w", f32([3], [0.25, -0.5, 0])],
  ]);
  const keptOf = (c: CompressedAdapter, name: string) => popcount((c.tensors.get(name) as CompressedTensor).mask);

  for (const scope of ["global", "per-tensor"] as const)
    for (const bits of [2, 3, 4, 8] as const)
      it(`${scope}, b = ${bits}: each kept entry decompresses to sign(τ)·(α·level)[code], code = the nearest level`, () => {
        const alpha = 1.5;
        const c = compressTensors(tensors, { density: 0.6, alpha, scope, init: 0, bits });
        const dense = decompressAdapter(c);
        const names = [...tensors.keys()].sort();
        // The reference, from scratch: the same top-k, then Lloyd–Max on the kept magnitudes of the scope.
        const groups = scope === "global" ? [names] : names.map((n) => [n]);
        for (const group of groups) {
          const tau = group.flatMap((n) => values(tensors.get(n)));
          const out = group.flatMap((n) => values(dense.get(n)));
          const kept = referenceTopK(tau, keptCount(tau.length, 0.6)).filter((i) => tau[i] !== 0);
          const fitted = lloydMax(
            Float64Array.from(kept, (i) => Math.abs(tau[i])),
            2 ** (bits - 1),
          );
          const levels = [...fitted].map((l) => Math.fround(alpha * l));
          const stored = scope === "global" ? (c.levels as Float32Array) : (c.tensors.get(group[0]) as CompressedTensor).magnitudes?.levels;
          assert.ok(stored && stored.length <= 2 ** (bits - 1));
          for (const i of kept) {
            // The nearest of all fitted levels (ties: the lower, as levels ascend) by brute force.
            const x = alpha * Math.abs(tau[i]);
            let best = levels[0];
            for (const l of levels) if (Math.abs(x - l) < Math.abs(x - best)) best = l;
            assert.equal(out[i], Math.sign(tau[i]) * best, `${group} entry ${i}`);
            assert.ok(stored.includes(best), "the level is in the stored codebook");
          }
          const keptSet = new Set(kept);
          for (let i = 0; i < out.length; i++) if (!keptSet.has(i)) assert.equal(out[i], 0, `entry ${i} dropped`);
          if (kept.length <= 2 ** (bits - 1)) {
            // At most one value per level: every kept entry is reproduced (to f32).
            for (const i of kept) assert.equal(out[i], Math.fround(alpha * tau[i]));
          }
        }
        // The stored form round-trips.
        const back = compeftFromParts(compeftParts(c), "f");
        assert.equal(back.bits, bits);
        assert.deepEqual(decompressAdapter(back), dense);
        // Payload: ⌈n/8⌉ + ⌈m/8⌉ + ⌈m(b−1)/8⌉ per tensor, plus 4 bytes a level.
        const parts = compeftParts(c);
        for (const name of names) {
          const m = keptOf(c, name);
          assert.equal(parts.tensors[`${name}.compeft_code`].data.length, Math.ceil((m * (bits - 1)) / 8), name);
          const n = (tensors.get(name) as HostTensor).data.length;
          assert.equal(payloadBytes(n, m, bits), Math.ceil(n / 8) + Math.ceil(m / 8) + Math.ceil((m * (bits - 1)) / 8));
        }
        assert.equal(parts.metadata.bits, String(bits));
        assert.equal(parts.metadata.format_version, "2");
        assert.equal(parts.metadata.scale, undefined);
      });

  it("the error over the kept entries falls with b (1 at its best α, then 2, 3, 4, 8)", () => {
    // A random "adapter": 3000 entries, magnitudes spread over two orders of magnitude.
    const big = new Map([
      [
        "a",
        f32(
          [1000],
          noise(1000, 21).map((v) => v * Math.exp(3 * v)),
        ),
      ],
      [
        "b",
        f32(
          [2000],
          noise(2000, 22).map((v) => v * v * Math.sign(v)),
        ),
      ],
    ]);
    const tau = [...values(big.get("a")), ...values(big.get("b"))];
    const kept = referenceTopK(tau, keptCount(tau.length, 0.3));
    const sse = (c: CompressedAdapter) => {
      const d = decompressAdapter(c);
      const out = [...values(d.get("a")), ...values(d.get("b"))];
      return kept.reduce((s, i) => s + (out[i] - tau[i]) ** 2, 0);
    };
    // b = 1 at its best α: the scale that minimises Σ(|τ| − s)² over the kept entries is their mean |τ|.
    const mags = kept.map((i) => Math.abs(tau[i]));
    const mean = mags.reduce((a, b) => a + b, 0) / mags.length;
    const sigma = compressTensors(big, { density: 0.3, alpha: 1, scope: "global", init: 0 }).scale;
    const one = sse(compressTensors(big, { density: 0.3, alpha: mean / sigma, scope: "global", init: 0 }));
    const closedForm = mags.reduce((s, m) => s + (m - mean) ** 2, 0);
    assert.ok(Math.abs(one - closedForm) <= 1e-5 * closedForm, `b = 1 at α*: ${one} vs Σ(|τ| − mean)² = ${closedForm}`);
    const errors = [one];
    for (const bits of [2, 3, 4, 8] as const)
      errors.push(sse(compressTensors(big, { density: 0.3, alpha: 1, scope: "global", init: 0, bits })));
    for (let i = 1; i < errors.length; i++) assert.ok(errors[i] < errors[i - 1], `SSE by b = 1, 2, 3, 4, 8: ${errors.join(", ")}`);
    // And α = 1 is the right scale for fitted levels: α ≠ 1 is worse.
    for (const alpha of [0.9, 1.1])
      assert.ok(sse(compressTensors(big, { density: 0.3, alpha, scope: "global", init: 0, bits: 4 })) > errors[3]);
  });

  it("IA³ (init 1): τ = θ − 1 is coded, and 1 is added back", () => {
    // τ = [0.5, −1, 2, −0.25]; D = 0.75 keeps 2, −1, 0.5; b = 3 has 4 ≥ 3 levels: each magnitude is its own level.
    const c = compressTensors(new Map([["l", f32([4], [1.5, 0, 3, 0.75])]]), {
      density: 0.75,
      alpha: 1,
      scope: "global",
      init: 1,
      bits: 3,
    });
    assert.deepEqual([...(c.levels as Float32Array)], [0.5, 1, 2]);
    assert.deepEqual(values(decompressAdapter(c).get("l")), [1.5, 0, 3, 1]);
  });

  it("refuses bits outside 1, 2, 3, 4, 8, naming --bits", () => {
    assert.throws(
      () => compressTensors(tensors, { density: 0.5, alpha: 1, scope: "global", init: 0, bits: 5 as 4 }),
      /^CompeftError: --bits must be one of 1, 2, 3, 4, 8, got 5$/,
    );
  });

  for (const scope of ["global", "per-tensor"] as const) {
    const c4 = compressTensors(tensors, { density: 0.6, alpha: 1, scope, init: 0, bits: 4 });
    const levelsKey = scope === "global" ? "compeft_levels" : "x.w.compeft_levels";
    const broken = (edit: (p: ReturnType<typeof compeftParts>) => void, message: RegExp) => () => {
      const p = compeftParts(c4);
      const parts = { tensors: { ...p.tensors }, metadata: { ...p.metadata } };
      edit(parts);
      assert.throws(
        () => compeftFromParts(parts, "f.safetensors"),
        (e: Error) => e instanceof CompeftError && message.test(e.message) && !e.message.includes("\n"),
      );
    };
    it(
      `${scope}: refuses a truncated codes tensor, naming it`,
      broken((p) => {
        const t = p.tensors["x.w.compeft_code"];
        p.tensors["x.w.compeft_code"] = { ...t, shape: [t.data.length - 1], data: t.data.subarray(0, -1) };
      }, /^f\.safetensors: tensor "x\.w\.compeft_code" has \d+ bytes, but its mask keeps \d+ entries of 3 bits \(expected ceil\(\d+·3\/8\) = \d+\)$/),
    );
    it(
      `${scope}: refuses a missing codes tensor`,
      broken((p) => {
        delete p.tensors["y.w.compeft_code"];
      }, /^f\.safetensors: tensor "y\.w" has no compeft_code \(metadata "bits" is 4\)$/),
    );
    it(
      `${scope}: refuses a levels tensor longer than 2^(b−1)`,
      broken(
        (p) => {
          const t = p.tensors[levelsKey];
          p.tensors[levelsKey] = { dtype: "F32", shape: [9], data: new Uint8Array(36) };
          assert.ok(t.shape[0] <= 8);
        },
        new RegExp(`^f\\.safetensors: tensor "${levelsKey}": has 9 levels, expected 1 to 2\\^\\(4−1\\) = 8 at bits 4$`),
      ),
    );
    it(
      `${scope}: refuses a code that points past the levels`,
      broken((p) => {
        const t = p.tensors[levelsKey];
        p.tensors[levelsKey] = { dtype: "F32", shape: [1], data: t.data.subarray(0, 4) };
      }, /^f\.safetensors: tensor "[xy]\.w\.compeft_code": code \d+ of kept entry \d+ points past the 1 levels of "[a-z.]*compeft_levels"$/),
    );
    it(
      `${scope}: refuses a negative or non-finite level`,
      broken((p) => {
        const t = p.tensors[levelsKey];
        const data = Uint8Array.from(t.data);
        new DataView(data.buffer).setFloat32(0, -1, true);
        p.tensors[levelsKey] = { ...t, data };
      }, /compeft_levels": level 0 is -1, not a finite number ≥ 0$/),
    );
  }

  const c2 = compressTensors(tensors, { density: 0.6, alpha: 1, scope: "global", init: 0, bits: 2 });
  const brokenMeta = (edit: (m: Record<string, string>) => void, message: RegExp) => () => {
    const p = compeftParts(c2);
    const metadata = { ...p.metadata };
    edit(metadata);
    assert.throws(
      () => compeftFromParts({ tensors: p.tensors, metadata }, "f.safetensors"),
      (e: Error) => e instanceof CompeftError && message.test(e.message),
    );
  };
  for (const bad of ["5", "1", "0", "16", "2.0", "two"])
    it(
      `refuses metadata "bits" = ${JSON.stringify(bad)}`,
      brokenMeta(
        (m) => {
          m.bits = bad;
        },
        new RegExp(`^f\\.safetensors: metadata "bits" must be one of 2, 3, 4, 8 \\(absent for 1\\), got "${bad}"$`),
      ),
    );
  it(
    'refuses "bits" in a format_version 1 file',
    brokenMeta((m) => {
      m.format_version = "1";
    }, /metadata "bits" is 2 but format_version is "1"/),
  );
  it(
    "refuses a format_version 2 file without bits",
    brokenMeta((m) => {
      delete m.bits;
    }, /metadata "bits" is missing \(format_version "2" files have 2, 3, 4 or 8\)/),
  );
  it("refuses a codebook tensor of the other scope", () => {
    const p = compeftParts(c2);
    const parts = { tensors: { ...p.tensors, "x.w.compeft_levels": p.tensors.compeft_levels }, metadata: p.metadata };
    assert.throws(
      () => compeftFromParts(parts, "f"),
      /tensor "x\.w\.compeft_levels" in a global-scope file \(one codebook, in tensor "compeft_levels"\)/,
    );
  });
});
