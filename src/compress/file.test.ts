import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pickAlpha } from "../cli/commands/compress.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { type RawTensor, readSafetensors, type SafetensorsDType, SafetensorsFile, writeSafetensors } from "../io/safetensors.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { runCli } from "../testing/cli.js";
import { MODEL, maxAbsDifference, tempDir, writeKindOfData } from "../testing/train-cli.js";
import { PeftModel } from "../tuners/peft-model.js";
import { compressTensors, decompressAdapter, payloadBytes, popcount } from "./compeft.js";
import { COMPEFT_WEIGHTS, compressAdapterFolder, readCompeftFile, writeCompeftFile } from "./file.js";

const PREFIX = "base_model.model.";

/** An adapter folder of `config` on the embedded model whose every tensor holds seeded noise around `init`. */
function writeAdapter(base: PreTrainedModel, dir: string, config: Record<string, unknown>, init: number): Record<string, HostTensor> {
  const peft = PeftModel.create(base, config, { seed: 3 });
  peft.savePretrained(dir);
  base.contextWrapper = null;
  const { tensors } = readSafetensors(join(dir, "adapter_model.safetensors"));
  let s = 7;
  for (const t of Object.values(tensors)) {
    const d = t.data as Float32Array;
    for (let i = 0; i < d.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      d[i] = Math.fround(init + (s / 2 ** 32 - 0.5) * (1 + (i % 5)));
    }
  }
  writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
  return tensors;
}

/** The closed form, computed here from scratch: init + α·σ·sign(τ) at the global top-k of |τ|, init elsewhere. */
/** The loaded adapter's tensors (keys without PREFIX) equal `want` exactly, and there are no others. */
function assertLoaded(got: ReadonlyMap<string, HostTensor>, want: ReadonlyMap<string, Float32Array>): void {
  assert.equal(got.size, want.size);
  for (const [name, w] of want) {
    const g = got.get(name.slice(PREFIX.length));
    assert.ok(g, `${name} loaded`);
    assert.equal(maxAbsDifference(g.data as Float32Array, w), 0, name);
  }
}

function expected(tensors: Record<string, HostTensor>, init: number, density: number, alpha: number): Map<string, Float32Array> {
  const names = Object.keys(tensors).sort();
  const tau = names.flatMap((n) => [...(tensors[n].data as Float32Array)].map((v) => v - init));
  const mean = tau.reduce((a, b) => a + b, 0) / tau.length;
  const sigma = Math.sqrt(tau.reduce((a, b) => a + (b - mean) ** 2, 0) / (tau.length - 1));
  const k = Math.round(density * tau.length);
  const order = tau.map((_, i) => i).sort((a, b) => Math.abs(tau[b]) - Math.abs(tau[a]) || a - b);
  const keep = new Set(order.slice(0, k));
  const scale = Math.fround(alpha * sigma);
  const out = new Map<string, Float32Array>();
  let off = 0;
  for (const n of names) {
    const len = tensors[n].data.length;
    const v = new Float32Array(len).fill(init);
    for (let i = 0; i < len; i++) if (keep.has(off + i)) v[i] = Math.fround(init + Math.sign(tau[off + i]) * scale);
    out.set(n, v);
    off += len;
  }
  return out;
}

describe("ComPEFT --bits 1 files", () => {
  it("are byte for byte what peftkit wrote before --bits 2|3|4|8 existed (sha256 of the file)", () => {
    // The hashes were taken from the code of commit fb3b5dc (before --bits > 1) on this same input.
    const noise = (n: number, seed: number) => {
      let s = seed >>> 0;
      return Float32Array.from({ length: n }, () => {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        return s / 2 ** 31 - 1;
      });
    };
    const tensors = new Map([
      ["m.b", hostTensor("f32", [3, 7], noise(21, 2))],
      ["m.a", hostTensor("f32", [4, 5], noise(20, 1))],
      ["m.c", hostTensor("f32", [9], noise(9, 3))],
    ]);
    const want = {
      global: "37726ea0484191c9443d7a7fdae52ace81523f0102723ea98a5aa6274c66ff69",
      "per-tensor": "0ee5a9d87a289bb54cfd100c4f35a76da6d73671fe6c76fb6244f142dd7fdd36",
    };
    const dir = tempDir("compeft-b1-");
    for (const scope of ["global", "per-tensor"] as const)
      for (const bits of [undefined, 1] as const) {
        const path = join(dir, `${scope}-${bits}.safetensors`);
        const c = compressTensors(tensors, { density: 0.3, alpha: 1.5, scope, init: 0, bits });
        writeCompeftFile(path, c, { peft_type: "LORA", source_sha256: "0".repeat(64) });
        assert.equal(createHash("sha256").update(readFileSync(path)).digest("hex"), want[scope], `${scope}, bits ${bits}`);
      }
  });
});

describe("ComPEFT adapter folders", () => {
  let base: PreTrainedModel;
  const root = tempDir("compeft-");
  before(async () => {
    base = await AutoModelForCausalLM.fromPretrained(MODEL);
  });
  after(async () => {
    await base.release();
  });

  const cases = [
    { name: "LoRA (init 0)", init: 0, config: { peftType: "LORA", r: 2, loraAlpha: 4, targetModules: ["q_proj", "v_proj"] } },
    {
      name: "IA³ (init 1)",
      init: 1,
      config: { peftType: "IA3", targetModules: ["k_proj", "down_proj"], feedforwardModules: ["down_proj"] },
    },
  ];
  for (const c of cases) {
    it(`${c.name}: loading the compressed folder gives init + α·σ·sign at the top-k, init elsewhere`, () => {
      const src = join(root, `${c.init}-src`);
      const out = join(root, `${c.init}-out`);
      const tensors = writeAdapter(base, src, c.config, c.init);
      compressAdapterFolder(src, out, { density: 0.1, alpha: 2, scope: "global" });
      const want = expected(tensors, c.init, 0.1, 2);
      const peft = PeftModel.fromPretrained(base, out);
      try {
        assertLoaded(peft.adapter("default").tensors, want);
      } finally {
        base.contextWrapper = null;
      }
      // --decompress writes the same tensors as a plain folder.
      const plain = join(root, `${c.init}-plain`);
      const r = runCli(["compress", out, "--decompress", "--output-dir", plain]);
      assert.equal(r.code, 0, r.stderr);
      const back = readSafetensors(join(plain, "adapter_model.safetensors")).tensors;
      for (const [name, w] of want) assert.equal(maxAbsDifference(back[name].data as Float32Array, w), 0, name);
    });
  }

  for (const c of cases)
    for (const [bits, scope] of [
      [2, "global"],
      [4, "per-tensor"],
      [8, "global"],
    ] as const)
      it(`${c.name}, --bits ${bits}, ${scope}: the loader and --decompress restore what was compressed`, () => {
        const src = join(root, `${c.init}-src`);
        const out = join(root, `${c.init}-b${bits}-${scope}`);
        const tensors = readSafetensors(join(src, "adapter_model.safetensors")).tensors;
        const r = runCli([
          "compress",
          src,
          "--density",
          "0.3",
          "--alpha",
          "1.25",
          "--scope",
          scope,
          "--bits",
          String(bits),
          "--output-dir",
          out,
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`, ${bits} bits \\(`));
        assert.match(runCli(["info", out]).stdout, new RegExp(`scope ${scope}, ${bits} bits per kept entry`));
        const want = decompressAdapter(
          compressTensors(new Map(Object.entries(tensors)), { density: 0.3, alpha: 1.25, scope, init: c.init as 0 | 1, bits }),
        );
        const file = readCompeftFile(join(out, COMPEFT_WEIGHTS));
        assert.equal(file.bits, bits);
        const peft = PeftModel.fromPretrained(base, out);
        let distinct = 0;
        try {
          assertLoaded(peft.adapter("default").tensors, new Map([...want].map(([name, w]) => [name, w.data as Float32Array])));
          for (const [name, w] of want) {
            // At most 2^(b−1) magnitudes per codebook, each with two signs (the ternary form: 2 values).
            const kept = new Set([...(w.data as Float32Array)].filter((v) => v !== c.init));
            assert.ok(kept.size <= 2 ** bits, name);
            distinct = Math.max(distinct, kept.size);
          }
          assert.ok(distinct > 2, "more than one magnitude");
        } finally {
          base.contextWrapper = null;
        }
        const plain = join(root, `${c.init}-b${bits}-${scope}-plain`);
        const d = runCli(["compress", out, "--decompress", "--output-dir", plain]);
        assert.equal(d.code, 0, d.stderr);
        const back = readSafetensors(join(plain, "adapter_model.safetensors")).tensors;
        for (const [name, w] of want) assert.equal(maxAbsDifference(back[name].data as Float32Array, w.data as Float32Array), 0, name);
      });

  it("--bits 4: the file is 8 + header + Σ(⌈n/8⌉ + ⌈m/8⌉ + ⌈3m/8⌉) + 4 bytes per level", () => {
    const out = join(root, "ratio-b4");
    const r = runCli(["compress", join(root, "0-src"), "--density", "0.2", "--bits", "4", "--output-dir", out]);
    assert.equal(r.code, 0, r.stderr);
    const path = join(out, COMPEFT_WEIGHTS);
    const bytes = readFileSync(path);
    const c = readCompeftFile(path);
    let payload = 4 * (c.levels as Float32Array).length;
    for (const t of c.tensors.values())
      payload += payloadBytes(
        t.shape.reduce((a, b) => a * b, 1),
        popcount(t.mask),
        4,
      );
    assert.ok((c.levels as Float32Array).length === 8);
    assert.equal(bytes.length, 8 + Number(bytes.readBigUInt64LE(0)) + payload);
    assert.match(r.stdout, new RegExp(`→ ${bytes.length} bytes`));
  });

  it("the file is 8 + header + Σ(ceil(n/8) + ceil(kept/8)) bytes and the printed ratio is source/compressed", () => {
    const src = join(root, "0-src");
    const out = join(root, "ratio");
    const r = runCli(["compress", src, "--density", "0.2", "--output-dir", out]);
    assert.equal(r.code, 0, r.stderr);
    const path = join(out, COMPEFT_WEIGHTS);
    const bytes = readFileSync(path);
    const header = Number(bytes.readBigUInt64LE(0));
    const c = readCompeftFile(path);
    let payload = 0;
    for (const t of c.tensors.values()) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      let kept = 0;
      for (let i = 0; i < n; i++) if (t.mask[i >> 3] & (1 << (i & 7))) kept++;
      payload += Math.ceil(n / 8) + Math.ceil(kept / 8);
    }
    assert.equal(bytes.length, 8 + header + payload);
    const source = statSync(join(src, "adapter_model.safetensors")).size;
    const m = /size: (\d+) → (\d+) bytes \(([\d.]+)× smaller/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.deepEqual([Number(m[1]), Number(m[2])], [source, bytes.length]);
    assert.equal(m[3], (source / bytes.length).toFixed(2));
  });

  it("--alpha auto keeps the α of the best score on --eval-data (ties: lower loss)", () => {
    assert.equal(
      pickAlpha([
        { alpha: 0.5, score: 0.25, loss: 3 },
        { alpha: 1, score: 0.5, loss: 4 },
        { alpha: 2, score: 0.5, loss: 2 },
        { alpha: 4, score: 0.125, loss: 1 },
      ]).alpha,
      2,
    );
    const data = writeKindOfData(tempDir("compeft-auto-"));
    const out = join(root, "auto");
    const r = runCli([
      "compress",
      join(root, "0-src"),
      "--alpha",
      "auto",
      "--alphas",
      "0.5,3",
      "--model",
      MODEL,
      "--eval-data",
      data,
      "--output-dir",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const trials = [...r.stdout.matchAll(/^alpha ([\d.]+): score ([\d.]+), loss ([\d.]+)$/gm)].map((m) => ({
      alpha: Number(m[1]),
      score: Number(m[2]),
      loss: Number(m[3]),
    }));
    assert.equal(trials.length, 2, r.stdout);
    const chosen = pickAlpha(trials).alpha;
    assert.match(r.stdout, new RegExp(`chose alpha ${chosen}\n`));
    assert.equal(readCompeftFile(join(out, COMPEFT_WEIGHTS)).alpha, chosen);
    assert.equal(runCli(["compress", join(root, "0-src"), "--alpha", "auto", "--output-dir", out]).code, 2);
  });

  describe("bad input: one line naming the flag, file or tensor", () => {
    const good = () => join(root, "ratio", COMPEFT_WEIGHTS);
    const loadFails = (edit: (bytes: Buffer) => Buffer, message: RegExp) => {
      const dir = tempDir("compeft-bad-");
      writeFileSync(join(dir, "adapter_config.json"), readFileSync(join(root, "ratio", "adapter_config.json")));
      writeFileSync(join(dir, COMPEFT_WEIGHTS), edit(readFileSync(good())));
      const r = runCli(["eval", "--model", MODEL, "--adapter", dir, "--data", join(dir, "adapter_config.json")]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    };
    it("a flipped sign bit: the content hash does not match", () =>
      loadFails((b) => {
        const c = Buffer.from(b);
        c[c.length - 1] ^= 1;
        return c;
      }, /adapter_compeft\.safetensors: content_sha256 does not match/));
    it("a truncated file", () => loadFails((b) => b.subarray(0, b.length - 10), /adapter_compeft\.safetensors: file is truncated/));
    it("an edited scale in the metadata", () =>
      loadFails(
        (b) => Buffer.from(b.toString("latin1").replace(/"scale":"(\d)/, '"scale":"9'), "latin1"),
        /content_sha256 does not match/,
      ));
    /** Rewrites the --bits 4 file with edited tensors/metadata (the hash is then stale; structure is checked first). */
    const editB4 = (edit: (t: Record<string, RawTensor>, m: Record<string, string>) => void) => (_: Buffer) => {
      const f = SafetensorsFile.open(join(root, "ratio-b4", COMPEFT_WEIGHTS));
      const tensors: Record<string, RawTensor> = {};
      for (const e of f.entries)
        tensors[e.name] = { dtype: e.dtype as SafetensorsDType, shape: e.shape, data: Uint8Array.from(f.readRaw(e.name)) };
      const metadata = { ...f.metadata };
      f.close();
      edit(tensors, metadata);
      const path = join(tempDir("compeft-b4-"), "x.safetensors");
      writeSafetensors(path, tensors, metadata);
      return readFileSync(path);
    };
    const codeKey = (t: Record<string, RawTensor>) =>
      Object.keys(t).find((k) => k.endsWith(".compeft_code") && t[k].shape[0] > 1) as string;
    it("--bits 4: a truncated codes tensor", () =>
      loadFails(
        editB4((t) => {
          const k = codeKey(t);
          t[k] = { ...t[k], shape: [t[k].shape[0] - 1], data: (t[k].data as Uint8Array).subarray(1) };
        }),
        /adapter_compeft\.safetensors: tensor "base_model\.[\w.]+\.compeft_code" has \d+ bytes, but its mask keeps \d+ entries of 3 bits/,
      ));
    it("--bits 4: a levels tensor of the wrong length", () =>
      loadFails(
        editB4((t) => {
          t.compeft_levels = { dtype: "F32", shape: [16], data: new Uint8Array(64) };
        }),
        /adapter_compeft\.safetensors: tensor "compeft_levels": has 16 levels, expected 1 to 2\^\(4−1\) = 8 at bits 4/,
      ));
    it("--bits 4: a code past the levels", () =>
      loadFails(
        editB4((t) => {
          t.compeft_levels = { dtype: "F32", shape: [2], data: (t.compeft_levels.data as Uint8Array).subarray(0, 8) };
        }),
        /adapter_compeft\.safetensors: tensor "base_model\.[\w.]+\.compeft_code": code \d+ of kept entry \d+ points past the 2 levels of "compeft_levels"/,
      ));
    it("--bits 4: a bits value in the metadata that is not allowed", () =>
      loadFails(
        editB4((_, m) => {
          m.bits = "6";
        }),
        /adapter_compeft\.safetensors: metadata "bits" must be one of 2, 3, 4, 8 \(absent for 1\), got "6"/,
      ));
    it("--bits 4: a flipped code bit fails the content hash", () =>
      loadFails(
        editB4((t) => {
          const k = codeKey(t);
          (t[k].data as Uint8Array)[0] ^= 1;
        }),
        /content_sha256 does not match/,
      ));
    it("--bits outside 1, 2, 3, 4, 8 names --bits (exit 2)", () => {
      for (const b of ["0", "5", "16", "x"]) {
        const r = runCli(["compress", join(root, "0-src"), "--bits", b, "--output-dir", join(root, "never")]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, new RegExp(`--bits must be one of 1, 2, 3, 4, 8, got "${b}"`));
      }
    });
    it("density outside (0, 1] names --density (exit 2)", () => {
      for (const d of ["0", "1.5"]) {
        const r = runCli(["compress", join(root, "0-src"), "--density", d, "--output-dir", join(root, "never")]);
        assert.equal(r.code, 2);
        assert.match(r.stderr, /--density/);
      }
    });
    it("an adapter type ComPEFT cannot handle", () => {
      const dir = tempDir("compeft-vera-");
      writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "VERA", r: 4 }));
      const r = runCli(["compress", dir, "--output-dir", join(dir, "out")]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /adapter_config\.json: peft_type "VERA" is not handled by ComPEFT/);
    });
  });
});
