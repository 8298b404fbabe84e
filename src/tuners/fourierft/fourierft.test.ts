import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { SafetensorsFile, writeSafetensors } from "../../io/safetensors.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { TorchGenerator } from "../../util/torch-rng.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { parseFourierFTConfig } from "./config.js";
import { fourierRouteOf } from "./index.js";
import { type FourierLayer, fourierDelta, fourierLayers, randpermPrefix, spectrumIndices } from "./layers.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

interface IndexGoldens {
  torch_version: string;
  indices: { out: number; in: number; n: number; seed: number; rows: number[]; cols: number[] }[];
  delta: { out: number; in: number; n: number; seed: number; scaling: number; spectrum: number[]; delta: number[] }[];
}
const G = JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/peft-fourierft/indices.json"), "utf8")) as IndexGoldens;

/**
 * Re(ifft2(S))·scaling by its definition, in float64: S dense [out, in] with the spectrum scattered,
 * ΔW[p, q] = scaling/(out·in)·Σ_j Σ_k S[j, k]·cos(2π(p·j/out + q·k/in)) (S is real), every entry of S
 * visited (no use of its sparsity, no separable split).
 */
function naiveDelta(out: number, inF: number, rows: ArrayLike<number>, cols: ArrayLike<number>, s: ArrayLike<number>, scaling: number) {
  const dense = new Float64Array(out * inF);
  for (let k = 0; k < s.length; k++) dense[rows[k] * inF + cols[k]] = s[k];
  const d = new Float64Array(out * inF);
  for (let p = 0; p < out; p++)
    for (let q = 0; q < inF; q++) {
      let acc = 0;
      for (let j = 0; j < out; j++)
        for (let k = 0; k < inF; k++) {
          const v = dense[j * inF + k];
          if (v !== 0) acc += v * Math.cos(2 * Math.PI * ((p * j) / out + (q * k) / inF));
        }
      d[p * inF + q] = (acc * scaling) / (out * inF);
    }
  return d;
}

const CFG = { peftType: "FOURIERFT", nFrequency: 64, scaling: 40 };

describe("FourierFT", () => {
  runConformance({
    name: "FourierFT on llama (q,v defaults)",
    model: "llama_basic",
    identityConfig: { ...CFG, initWeights: true },
    config: CFG,
  });
  runConformance({
    name: "FourierFT on GPT-2 Conv1D, all-linear, n_frequency_pattern",
    model: "gpt2",
    identityConfig: { ...CFG, initWeights: true, fanInFanOut: true, targetModules: "all-linear" },
    config: { ...CFG, fanInFanOut: true, targetModules: "all-linear", nFrequencyPattern: { c_fc: 90 }, randomLocSeed: 5 },
  });
  runConformance({
    name: "FourierFT on llama, n_frequency 300 > out + in (the dense DFT-matrix route)",
    model: "llama_basic",
    config: { ...CFG, nFrequency: 300 },
  });
  runConformance({
    name: "FourierFT on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { ...CFG, taskType: "SEQ_CLS", modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("spectrum positions: torch.randperm(out·in, manual_seed(seed))[:n] split into (idx // in, idx % in), as torch gives them", () => {
    for (const c of G.indices) {
      const got = spectrumIndices(c.out, c.in, c.n, c.seed);
      assert.deepEqual([...got.rows], c.rows, `${c.out}x${c.in} n=${c.n} seed=${c.seed}: rows`);
      assert.deepEqual([...got.cols], c.cols, `${c.out}x${c.in} n=${c.n} seed=${c.seed}: cols`);
    }
    // The prefix shortcut is the full permutation's head, including k = n (the last element takes no draw).
    for (const [total, k, seed] of [
      [10, 10, 0],
      [1000, 37, 7],
      [5000, 1300, 3],
      [1, 1, 9],
    ]) {
      const full = new TorchGenerator(seed).randperm(total).slice(0, k);
      assert.deepEqual([...randpermPrefix(new TorchGenerator(seed), total, k)], [...full], `total ${total} k ${k}`);
    }
  });

  test("ΔW equals the inverse 2-D DFT of the scattered spectrum (naive double-loop DFT; torch.fft.ifft2 goldens)", async () => {
    // Host (merge) path against torch's own ifft2 values.
    for (const c of G.delta) {
      const { rows, cols } = spectrumIndices(c.out, c.in, c.n, c.seed);
      const l: FourierLayer = { path: "p", key: "k", inFeatures: c.in, outFeatures: c.out, n: c.n, rows, cols };
      const d = fourierDelta(l, c.spectrum, c.scaling).data;
      assert.ok(maxDiff(d, c.delta) < 1e-5, `torch ifft2 ${c.out}x${c.in}: ${maxDiff(d, c.delta)}`);
      assert.ok(maxDiff(d, naiveDelta(c.out, c.in, rows, cols, c.spectrum, c.scaling)) < 1e-12, "naive DFT");
    }
    // The graph (a layer probed with the identity: row i = (W + ΔW)·e_i) and merge, on a [64, 32] and a
    // GPT-2 Conv1D layer, by both graph routes (n ≤ out + in: factored; n > out + in: dense).
    for (const [m, path, fif, n, route] of [
      ["llama_basic", "model.layers.1.mlp.up_proj", false, 64, "factored"],
      ["llama_basic", "model.layers.1.mlp.up_proj", false, 200, "dense"],
      ["gpt2", "transformer.h.0.attn.c_attn", true, 64, "factored"],
      ["gpt2", "transformer.h.0.attn.c_attn", true, 300, "dense"],
    ] as const) {
      const model = await loadTestModel(m);
      const peft = PeftModel.create(
        model,
        { ...CFG, nFrequency: n, fanInFanOut: fif, targetModules: "all-linear", randomLocSeed: 31 },
        { seed: 17 },
      );
      const a = peft.adapter("default");
      const l = fourierLayers(peft.info, a.config as ReturnType<typeof parseFourierFTConfig>).find((x) => x.path === path);
      assert.ok(l);
      assert.equal(fourierRouteOf(l), route);
      const s = f32(a.tensors.get(`${l.key}.fourierft_spectrum`));
      const want = naiveDelta(l.outFeatures, l.inFeatures, l.rows, l.cols, s, 40);
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const b = fif ? (model.weights.get(`${path}.bias`) as HostTensor) : null;
      const inF = l.inFeatures;
      const out = l.outFeatures;
      const eye = new Float32Array(inF * inF);
      for (let i = 0; i < inF; i++) eye[i * inF + i] = 1;
      const lin = fif ? { fanInFanOut: true } : undefined;
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, lin), hostTensor("f32", [inF, inF], eye));
      const base = linearJs(eye, inF, w, b, fif);
      let worst = 0;
      for (let i = 0; i < inF; i++)
        for (let o = 0; o < out; o++) worst = Math.max(worst, Math.abs(got[i * out + o] - base[i * out + o] - want[o * inF + i]));
      assert.ok(worst < 1e-5, `${path} ${route} graph: ${worst}`);
      assert.ok(Math.max(...want.map(Math.abs)) > 1e-2, "ΔW is not trivially small");
      assert.ok(a.tuner.merge);
      const merged = f32(a.tuner.merge(peft.info, a.config, a.tensors).get(`${path}.weight`));
      let mw = 0;
      for (let i = 0; i < inF; i++)
        for (let o = 0; o < out; o++) {
          const at = fif ? i * out + o : o * inF + i;
          mw = Math.max(mw, Math.abs(merged[at] - f32(w)[at] - want[o * inF + i]));
        }
      assert.ok(mw < 1e-6, `${path} merge: ${mw}`);
      await model.release();
    }
  });

  test("keys, shapes and init as PEFT: '<module>.fourierft_spectrum' [n]; standard normal by default, zeros with init_weights", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { ...CFG, targetModules: ["q_proj", "up_proj"], nFrequencyPattern: { up_proj: 500 } });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.entries()].map(([k, v]) => [k, v.shape]).sort(), [
      ["model.layers.0.mlp.up_proj.fourierft_spectrum", [500]],
      ["model.layers.0.self_attn.q_proj.fourierft_spectrum", [64]],
      ["model.layers.1.mlp.up_proj.fourierft_spectrum", [500]],
      ["model.layers.1.self_attn.q_proj.fourierft_spectrum", [64]],
    ]);
    const s = f32(t.get("model.layers.0.mlp.up_proj.fourierft_spectrum"));
    const mean = s.reduce((p, v) => p + v, 0) / s.length;
    const sd = Math.sqrt(s.reduce((p, v) => p + (v - mean) ** 2, 0) / s.length);
    assert.ok(Math.abs(mean) < 0.15 && Math.abs(sd - 1) < 0.15, `mean ${mean} sd ${sd}`);
    const zero = peft.addAdapter("zero", { ...CFG, initWeights: true });
    for (const v of zero.tensors.values()) assert.ok(f32(v).every((x) => x === 0));
    // Every tensor trains: the spectrum is all there is.
    assert.equal(peft.parameterCounts().trainable, 2 * (64 + 500));
    await model.release();
    // PEFT's default targets for GPT-2 are mlp.c_proj (not LoRA's c_attn).
    const gpt2 = await loadTestModel("gpt2");
    const g = PeftModel.create(gpt2, { peftType: "FOURIERFT", nFrequency: 64 });
    const keys = [...g.adapter("default").tensors.keys()];
    assert.ok(keys.length === 2 && keys.every((k) => /^transformer\.h\.\d\.mlp\.c_proj\.fourierft_spectrum$/.test(k)), keys.join(", "));
    await gpt2.release();
  });

  test("a saved folder holds only the spectra; the positions come back from random_loc_seed (another seed, other outputs)", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { ...CFG, randomLocSeed: 99 }, { seed: 5 });
    const ids = randomIds(2, 5, 256);
    const want = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const dir = mkdtempSync(join(tmpdir(), "peftkit-fourierft-"));
    try {
      peft.savePretrained(dir);
      const file = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
      const names = file.entries.map((e) => e.name);
      file.close();
      assert.ok(
        names.length === 4 &&
          names.every((n) => /^base_model\.model\.model\.layers\.\d\.self_attn\.[qv]_proj\.fourierft_spectrum$/.test(n)),
        names.join(", "),
      );
      const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
      assert.deepEqual([cfg.peft_type, cfg.random_loc_seed, cfg.n_frequency, cfg.scaling], ["FOURIERFT", 99, 64, 40]);
      const fresh = await loadTestModel("llama_basic");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      assert.ok(maxAbsDiff((await loaded.forward({ inputIds: ids })).logits?.data as Float32Array, want) < 1e-6);
      // A folder PEFT trained with bias "fourier_only" holds no biases either (PEFT 0.20 saves only
      // "fourierft_" keys): it loads, and computes the same.
      writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ ...cfg, bias: "fourier_only" }));
      const again = PeftModel.fromPretrained(await loadTestModel("llama_basic"), dir);
      assert.ok(maxAbsDiff((await again.forward({ inputIds: ids })).logits?.data as Float32Array, want) < 1e-6);
      // The same spectra at other positions: a different model.
      const moved = PeftModel.create(await loadTestModel("llama_basic"), { ...CFG, randomLocSeed: 100 });
      moved.adapter("default").tensors.clear();
      for (const [k, v] of peft.adapter("default").tensors) moved.adapter("default").tensors.set(k, v);
      assert.ok(maxAbsDiff((await moved.forward({ inputIds: ids })).logits?.data as Float32Array, want) > 1e-3);
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await model.release();
  });

  test("training moves the spectra only; the step's gradient flows through the DFT factors", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CFG, { seed: 7 });
    const before = new Map([...peft.adapter("default").tensors].map(([k, v]) => [k, Float32Array.from(f32(v))]));
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const ids = randomIds(2, 6, 256);
    const losses: number[] = [];
    for (let i = 0; i < 4; i++) losses.push((await trainer.train({ inputIds: ids, labels: ids }, { lr: 5e-2 })).loss);
    await trainer.release();
    for (const [k, v] of peft.adapter("default").tensors)
      assert.ok(maxAbsDiff(f32(v), before.get(k) as Float32Array) > 0, `${k} did not move`);
    assert.ok(losses[3] < losses[0], `loss ${losses}`);
    await model.release();
  });

  test("errors name the field and layer: n_frequency too large for a layer, < 1, a bad pattern value, bias, a mis-shaped spectrum", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CFG);
    const bad: [Record<string, unknown>, RegExp][] = [
      // llama_basic's q_proj is [32, 32]: 1024 entries.
      [{ nFrequency: 1025 }, /n_frequency = 1025 exceeds the 32x32 = 1024 entries of "model\.layers\.0\.self_attn\.q_proj"/],
      [{ nFrequency: 0 }, /field "n_frequency" must be an integer >= 1, got 0/],
      [
        { nFrequencyPattern: { "layers\\.1\\.self_attn\\.q_proj": 1025 } },
        /n_frequency_pattern\[.*q_proj"\] = 1025 exceeds .*"model\.layers\.1\.self_attn\.q_proj"/,
      ],
      [{ nFrequencyPattern: { q_proj: 0 } }, /"n_frequency_pattern": "q_proj" must map to an integer >= 1/],
      [{ bias: "all" }, /bias "all" is not supported for new adapters: PEFT trains those biases but does not save them/],
      [{ randomLocSeed: -1 }, /random_loc_seed/],
      [{ layersPattern: "layers" }, /layers_to_transform/],
    ];
    for (const [over, re] of bad)
      assert.throws(
        () => peft.addAdapter("bad", { ...CFG, ...over }),
        (e: Error) => e instanceof PeftConfigError && re.test(e.message) && !e.message.includes("\n"),
        JSON.stringify(over),
      );
    const dir = mkdtempSync(join(tmpdir(), "peftkit-fourierft-"));
    try {
      peft.savePretrained(dir);
      const file: Record<string, HostTensor> = {};
      for (const [k, v] of peft.adapter("default").tensors) file[`base_model.model.${k}`] = v;
      file["base_model.model.model.layers.0.self_attn.q_proj.fourierft_spectrum"] = hostTensor("f32", [65], new Float32Array(65));
      writeSafetensors(join(dir, "adapter_model.safetensors"), file, { format: "pt" });
      const fresh = await loadTestModel("llama_basic");
      assert.throws(
        () => PeftModel.fromPretrained(fresh, dir),
        (e: Error) =>
          e instanceof PeftConfigError && /layers\.0\.self_attn\.q_proj\.fourierft_spectrum: file \[65\], expected \[64\]/.test(e.message),
      );
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await model.release();
  });

  test("config: PEFT's fields and defaults (n_frequency 1000, scaling 150, random_loc_seed 777, init_weights false)", () => {
    const c = parseFourierFTConfig({ peft_type: "FOURIERFT" }, "test");
    assert.deepEqual(
      [c.nFrequency, c.scaling, c.randomLocSeed, c.fanInFanOut, c.bias, c.initWeights, c.nFrequencyPattern, c.targetModules],
      [1000, 150, 777, false, "none", false, {}, null],
    );
  });
});
