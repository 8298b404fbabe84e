import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { gradCheck } from "../../engine/autodiff/gradcheck.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { readSafetensors, SafetensorsFile, writeSafetensors } from "../../io/safetensors.js";
import type { ForwardContext } from "../../nn/context.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../format.js";
import { PeftModel } from "../peft-model.js";
import type { ModelInfo } from "../tuner.js";
import { authorsLevels, lloydMaxLevels, normalCdf, normalPdf, normalPpf, thresholdsOf } from "./codebook.js";
import { type LowbitConfig, parseLowbitConfig } from "./config.js";
import { saveDequantizedLora } from "./export.js";
import { codesKey, latentKey, levelsOf, lowbitContext, lowbitLayers } from "./index.js";
import { dequantize, packCodes, packedLength, quantize, SIGMA_EPS, unpackCodes } from "./pack.js";
import { fakeQuantize } from "./quant.js";

const close = (got: readonly number[], want: readonly number[], tol: number, what: string) => {
  assert.equal(got.length, want.length, what);
  got.forEach((g, i) => {
    assert.ok(Math.abs(g - want[i]) <= tol, `${what}[${i}]: ${g} vs ${want[i]}`);
  });
};

describe("codebooks for N(0, 1)", () => {
  test("1-bit Lloyd–Max is ±√(2/π) and 2-bit is Max's (±0.452780, ±1.510418; thresholds 0, ±0.981599)", () => {
    const s = Math.sqrt(2 / Math.PI);
    close(lloydMaxLevels(1), [-s, s], 1e-3, "1 bit");
    close(lloydMaxLevels(2), [-1.510418, -0.45278, 0.45278, 1.510418], 1e-3, "2 bits");
    close(thresholdsOf(lloydMaxLevels(2)), [-0.981599, 0, 0.981599], 1e-3, "2-bit thresholds");
    close(lloydMaxLevels(3).slice(4), [0.245094, 0.756005, 1.343909, 2.151946], 1e-3, "3 bits");
  });

  test("every Lloyd–Max codebook (8 bits from its table) is a fixed point: each level is its cell's centroid", () => {
    for (const bits of [1, 2, 4, 8]) {
      const v = lloydMaxLevels(bits);
      const e = [Number.NEGATIVE_INFINITY, ...thresholdsOf(v), Number.POSITIVE_INFINITY];
      const centroids = v.map((_, i) => (normalPdf(e[i]) - normalPdf(e[i + 1])) / (normalCdf(e[i + 1]) - normalCdf(e[i])));
      close(v, centroids, 1e-7, `${bits} bits`);
    }
  });

  test("the authors' median codebook: 1 bit ±Φ⁻¹(0.75) = ±0.674490, 2 bits ±0.377754, ±1.265720", () => {
    close(authorsLevels(1), [-0.67449, 0.67449], 1e-5, "1 bit");
    close(authorsLevels(2), [-1.26572, -0.377754, 0.377754, 1.26572], 1e-5, "2 bits");
    for (const p of [1e-9, 0.01, 0.3, 0.5, 0.75, 0.999]) assert.ok(Math.abs(normalCdf(normalPpf(p)) - p) < 1e-12 * Math.max(1, p / 1e-3));
  });
});

describe("packing", () => {
  test("codes round-trip at 1, 2, 4 and 8 bits, LSB first, the last byte padded", () => {
    const rng = new Rng(3);
    for (const bits of [1, 2, 4, 8]) {
      for (const n of [1, 7, 8, 13, 100]) {
        const codes = Uint8Array.from({ length: n }, () => Math.floor(rng.next() * 2 ** bits));
        const bytes = packCodes(codes, bits);
        assert.equal(bytes.length, Math.ceil((n * bits) / 8));
        assert.deepEqual(unpackCodes(bytes, n, bits, "t"), codes);
      }
    }
    // Code i sits at bits (i mod 8/b)·b: [1,0,0,0, 0,0,0,1 | 1] → 0b10000001, 0b1.
    assert.deepEqual([...packCodes([1, 0, 0, 0, 0, 0, 0, 1, 1], 1)], [0x81, 0x01]);
    assert.deepEqual([...packCodes([3, 0, 1], 2)], [0b010011]);
  });

  test("truncated codes are one line naming the tensor", () => {
    assert.throws(
      () => unpackCodes(new Uint8Array(3), 30, 1, 'tensor "x.qcodes"'),
      /^.*tensor "x.qcodes" holds 3 bytes, expected ⌈30·1\/8⌉ = 4 \(truncated or corrupt\)$/,
    );
  });
});

/** (w − μ)/(σ + ε) in float64, and the gap q(w_n) − w_n the straight-through estimator adds as a constant. */
function steShift(w: Float64Array, levels: readonly number[]): Float64Array {
  const n = w.length;
  const mu = w.reduce((a, b) => a + b, 0) / n;
  const sigma = Math.sqrt(w.reduce((a, b) => a + (b - mu) ** 2, 0) / (n - 1));
  const t = thresholdsOf(levels);
  return w.map((x) => {
    const wn = (x - mu) / (sigma + SIGMA_EPS);
    let c = 0;
    while (c < t.length && wn > t[c]) c++;
    return levels[c] - wn;
  });
}

/** W = (w_n + D)·σ + μ with D fixed: the function whose derivative the straight-through gradient is. */
function linearisedQuantize(w: Tensor, shift: Float64Array): Tensor {
  const n = (w.shape as number[]).reduce((a, b) => a * b, 1);
  const mu = w.mean();
  const d = w.sub(mu);
  const sigma = d
    .square()
    .sum()
    .div(n - 1)
    .sqrt();
  const wn = d.div(sigma.add(SIGMA_EPS));
  return wn
    .add(constant(hostTensor("f64", [...w.shape] as number[], shift)).cast(w.dtype))
    .mul(sigma)
    .add(mu);
}

describe("quantisation-aware forward", () => {
  test("in the graph, W equals level[code]·σ + μ of the host quantiser (1, 2, 4, 8 bits, both codebooks)", () => {
    const rng = new Rng(11);
    const w = Float32Array.from({ length: 6 * 10 }, () => 0.3 * rng.normal() + 0.05);
    for (const bits of [1, 2, 4, 8]) {
      for (const levels of [lloydMaxLevels(bits), authorsLevels(bits)]) {
        const g = trace((x) => fakeQuantize(x, levels), [spec("f64", [6, 10])]);
        const [out] = interpret(g, [hostTensor("f64", [6, 10], Float64Array.from(w))]);
        const want = dequantize(quantize(w, levels), levels);
        assert.ok(maxAbsDiff(Float32Array.from(out.data as Float64Array), want) < 1e-6, `${bits} bits`);
        const distinct = new Set(Array.from(out.data as Float64Array, (v) => v.toFixed(9)));
        assert.ok(distinct.size <= 2 ** bits);
      }
    }
  });

  test("the straight-through gradient is the gradient through w_n, μ and σ (float64 finite differences)", () => {
    const rng = new Rng(5);
    for (const bits of [1, 2]) {
      const levels = lloydMaxLevels(bits);
      const w = Float64Array.from({ length: 4 * 6 }, () => 0.2 * rng.normal() - 0.1);
      const shift = steShift(w, levels);
      const res = gradCheck((x) => fakeQuantize(x, levels), [hostTensor("f64", [4, 6], w)], {
        h: 1e-6,
        reference: (x) => linearisedQuantize(x, shift),
      });
      assert.ok(res.maxRelError < 1e-6, `${bits} bits: ${res.maxRelError}`);
      // The μ and σ paths matter: a gradient that holds them fixed differs. The two differ by about
      // ⟨r, shift⟩·∂σ/∂w, so the cotangent r is the shift itself: a random r can be nearly orthogonal
      // to it (CI once saw a relative difference of 0.0014).
      const n = w.length;
      const mu = w.reduce((a, b) => a + b, 0) / n;
      const sigma = Math.sqrt(w.reduce((a, b) => a + (b - mu) ** 2, 0) / (n - 1));
      const fixedStats = gradCheck((x) => fakeQuantize(x, levels), [hostTensor("f64", [4, 6], w)], {
        h: 1e-6,
        cotangent: hostTensor("f64", [4, 6], shift),
        reference: (x) => {
          const k = (v: number) => constant(hostTensor("f64", [], Float64Array.of(v)));
          return x
            .sub(k(mu))
            .div(k(sigma + SIGMA_EPS))
            .add(constant(hostTensor("f64", [4, 6], shift)))
            .mul(k(sigma))
            .add(k(mu));
        },
      });
      assert.ok(fixedStats.maxRelError > 1e-2, `a gradient holding μ and σ fixed passes too (${fixedStats.maxRelError})`);
    }
  });
});

/** The conformance suite's gradient reference: the straight-through map linearised at the adapter's tensors. */
function linearised(
  base: ForwardContext,
  tensor: (k: string) => Tensor,
  a: { info: ModelInfo; config: unknown; tensors: ReadonlyMap<string, HostTensor> },
) {
  const c = a.config as LowbitConfig;
  return lowbitContext(base, a.info, c, { adapterName: "default", tensor, rowMask: null, training: false, seed: null }, (m, w, levels) => {
    const w0 = a.tensors.get(latentKey(m)) as HostTensor;
    return linearisedQuantize(w, steShift(Float64Array.from(w0.data as Float32Array), levels));
  });
}

const CONFIG = { peft_type: "LOWBIT", r: 4, bits: 1, scale: 10 };

for (const model of ["llama_basic", "gpt2", "bert_seq_cls"] as const) {
  runConformance({
    name: `LOWBIT on ${model}`,
    model,
    // save_latent: the folder holds the trained weights, so save → load is exact (the packed form is tested below).
    config: {
      ...CONFIG,
      bits: model === "gpt2" ? 2 : 1,
      save_latent: true,
      ...(model === "bert_seq_cls" ? { target_modules: ["query", "value"] } : {}),
    },
    referenceWrap: linearised,
  });
}

/** A LOWBIT adapter on llama_basic with B drawn large enough for its delta to show in the logits. */
async function lowbitModel(bits: number, extra: Record<string, unknown> = {}) {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, { ...CONFIG, bits, ...extra }, { seed: 9 });
  // B as after some training (its init, std 1e-3, barely moves the logits).
  const rng = new Rng(17);
  const bs = new Map<string, HostTensor>();
  for (const l of lowbitLayers(peft.info, peft.adapter("default").config as LowbitConfig))
    bs.set(
      latentKey(l.b),
      hostTensor(
        "f32",
        [...l.b.shape],
        Float32Array.from({ length: l.b.shape[0] * l.b.shape[1] }, () => 0.05 * rng.normal()),
      ),
    );
  peft.setAdapterTensors("default", bs);
  return { model, peft };
}

describe("packed folders", () => {
  for (const bits of [1, 2, 4, 8]) {
    test(`${bits} bits: the forward is the LoRA of the dequantised weights; the folder is b/32 of f32 and reloads to the same outputs`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "peftkit-lowbit-"));
      try {
        const { model, peft } = await lowbitModel(bits);
        const ids = randomIds(2, 6, 100);
        const a = peft.adapter("default");
        const c = a.config as LowbitConfig;
        const out = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
        // Closed form: LoRA with A, B = the dequantised codes and lora_alpha = s·r (scaling s).
        const lora = new Map<string, HostTensor>();
        for (const l of lowbitLayers(peft.info, c))
          for (const [m, k] of [
            [l.a, "lora_A"],
            [l.b, "lora_B"],
          ] as const) {
            const w = a.tensors.get(latentKey(m)) as HostTensor;
            lora.set(
              `${l.key}.${k}.weight`,
              hostTensor("f32", [...m.shape], dequantize(quantize(w.data as Float32Array, levelsOf(c)), levelsOf(c))),
            );
          }
        const plain = await loadTestModel("llama_basic");
        const ref = PeftModel.create(plain, {
          peft_type: "LORA",
          r: c.r,
          lora_alpha: c.scale * c.r,
          target_modules: lowbitLayers(peft.info, c).map((l) => l.key),
        });
        ref.setAdapterTensors("default", lora);
        const want = (await ref.forward({ inputIds: ids })).logits?.data as Float32Array;
        assert.ok(maxAbsDiff(out, want) < 1e-5, `vs dequantised LoRA: ${maxAbsDiff(out, want)}`);
        const base = await peft.disableAdapter(async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array);
        assert.ok(maxAbsDiff(out, base) > 1e-3, "the adapter changes nothing");

        peft.savePretrained(dir);
        const cfg = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8"));
        assert.equal(cfg.packed, true);
        assert.equal(cfg.codebook_values.length, 2 ** bits);
        const file = SafetensorsFile.open(join(dir, ADAPTER_WEIGHTS));
        let codeBytes = 0;
        let floats = 0;
        for (const e of file.entries) {
          if (e.name.endsWith(".qcodes")) {
            assert.equal(e.dtype, "U8");
            codeBytes += e.shape[0];
          } else floats += e.shape[0];
        }
        file.close();
        const f32Bytes = [...a.tensors.values()].reduce((s, t) => s + 4 * t.data.length, 0);
        const matrices = a.tensors.size;
        assert.equal(floats, 2 * matrices, "one μ and one σ per matrix");
        assert.ok(Math.abs(codeBytes - (f32Bytes * bits) / 32) <= matrices, `codes ${codeBytes} B vs b/32 of ${f32Bytes} B`);

        const fresh = await loadTestModel("llama_basic");
        const loaded = PeftModel.fromPretrained(fresh, dir);
        assert.equal((loaded.adapter("default").config as LowbitConfig).packed, true);
        const again = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
        assert.ok(maxAbsDiff(again, out) < 1e-6, `reloaded ${maxAbsDiff(again, out)}`);
        // Saved again as read, byte for byte.
        const dir2 = join(dir, "again");
        loaded.savePretrained(dir2);
        assert.deepEqual(readFileSync(join(dir2, ADAPTER_WEIGHTS)), readFileSync(join(dir, ADAPTER_WEIGHTS)));
        // It merges like the LoRA it stands for.
        loaded.mergeAdapter();
        assert.ok(maxAbsDiff((await loaded.forward({ inputIds: ids })).logits?.data as Float32Array, out) < 1e-4, "merged");
        // And exports as a plain HF PEFT LoRA that loads as one.
        const exported = join(dir, "lora");
        loaded.unmergeAdapter();
        saveDequantizedLora(loaded, "default", exported);
        assert.equal(JSON.parse(readFileSync(join(exported, ADAPTER_CONFIG), "utf8")).peft_type, "LORA");
        const asLora = PeftModel.fromPretrained(await loadTestModel("llama_basic"), exported);
        assert.ok(maxAbsDiff((await asLora.forward({ inputIds: ids })).logits?.data as Float32Array, out) < 1e-5, "exported LoRA");
        for (const m of [model, plain, fresh]) await m.release();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  test("a packed adapter refuses to train, naming save_latent", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-lowbit-"));
    try {
      const { model, peft } = await lowbitModel(1);
      peft.savePretrained(dir);
      const loaded = PeftModel.fromPretrained(await loadTestModel("llama_basic"), dir, { isTrainable: true });
      const { PeftTrainer } = await import("../train.js");
      await assert.rejects(async () => {
        const t = await PeftTrainer.create(loaded, { optimizer: { kind: "adamw" } });
        await t.train({ inputIds: [[3, 4, 5]], labels: [[3, 4, 5]] }, { lr: 1e-3 });
      }, /packed adapter .*save_latent/);
      await model.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("bad input", () => {
  test("bits outside {1, 2, 4, 8} and a codebook of the wrong length name the field", () => {
    assert.throws(
      () => parseLowbitConfig({ peft_type: "LOWBIT", bits: 3 }, "cfg.json"),
      /^PeftConfigError: cfg.json: field "bits" must be 1, 2, 4 or 8, got 3$|cfg.json: field "bits" must be 1, 2, 4 or 8, got 3/,
    );
    assert.throws(
      () => parseLowbitConfig({ peft_type: "LOWBIT", bits: 2, codebook_values: [-1, 0, 1] }, "cfg.json"),
      /cfg.json: field "codebook_values" has 3 levels, 2 bits need 2\^2 = 4/,
    );
  });

  test("truncated codes in a folder: one line naming the tensor and the file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-lowbit-"));
    try {
      const { model, peft } = await lowbitModel(2);
      peft.savePretrained(dir);
      const path = join(dir, ADAPTER_WEIGHTS);
      const { tensors } = readSafetensors(path);
      const l = lowbitLayers(peft.info, peft.adapter("default").config as LowbitConfig)[0];
      const name = `base_model.model.${codesKey(l.a)}`;
      const t = tensors[name] as HostTensor;
      const short = Uint8Array.from(t.data as ArrayLike<number>).subarray(0, t.data.length - 1);
      writeSafetensors(path, { ...tensors, [name]: { dtype: "U8", shape: [short.length], data: short } }, { format: "pt" });
      const n = l.a.shape[0] * l.a.shape[1];
      const fresh = await loadTestModel("llama_basic");
      assert.throws(
        () => PeftModel.fromPretrained(fresh, dir),
        (e: Error) => {
          assert.equal(
            e.message,
            `${path}: tensor "${name}" holds [${packedLength(n, 2) - 1}] bytes, expected ⌈${n}·2/8⌉ = ${packedLength(n, 2)} (truncated or corrupt)`,
          );
          return true;
        },
      );
      assert.ok(statSync(path).size > 0);
      await model.release();
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
