import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { SafetensorsFile, writeSafetensors } from "../../io/safetensors.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/** y = x·Wᵀ + λ_b ⊙ (B[:out]·(λ_d ⊙ (A[:, :in]·x))) in plain JS, float64. */
function veraJs(
  x: Float32Array,
  rows: number,
  w: HostTensor,
  fif: boolean,
  t: ReadonlyMap<string, HostTensor>,
  name: string,
): Float64Array {
  const y = linearJs(x, rows, w, null, fif);
  const a = t.get("base_model.vera_A") as HostTensor;
  const b = t.get("base_model.vera_B") as HostTensor;
  const [r, maxIn] = a.shape;
  const lb = f32(t.get(`${name}.vera_lambda_b`));
  const ld = f32(t.get(`${name}.vera_lambda_d`));
  const inF = fif ? w.shape[0] : w.shape[1];
  const out = lb.length;
  for (let n = 0; n < rows; n++) {
    const h = new Float64Array(r);
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < inF; i++) s += f32(a)[k * maxIn + i] * x[n * inF + i];
      h[k] = s * ld[k];
    }
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += f32(b)[o * r + k] * h[k];
      y[n * out + o] += lb[o] * s;
    }
  }
  return y;
}

describe("VeRA", () => {
  runConformance({
    name: "VeRA on llama (q,v defaults)",
    model: "llama_basic",
    identityConfig: { peftType: "VERA", r: 8 },
    config: { peftType: "VERA", r: 8, initWeights: false },
  });
  runConformance({
    name: "VeRA on GPT-2 Conv1D, all-linear, save_projection=false",
    model: "gpt2",
    identityConfig: { peftType: "VERA", r: 4, fanInFanOut: true, targetModules: "all-linear", saveProjection: false },
    config: { peftType: "VERA", r: 4, fanInFanOut: true, targetModules: "all-linear", saveProjection: false, initWeights: false },
  });
  runConformance({
    name: "VeRA on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "VERA", taskType: "SEQ_CLS", r: 6, initWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("keys, shapes and init as PEFT: shared vera_A [r, max_in] / vera_B [max_out, r] from torch's generator, λ_d = d_initial, λ_b = 0", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "VERA", r: 4, targetModules: ["q_proj", "up_proj"], dInitial: 0.25 });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].sort(), [
      "base_model.vera_A",
      "base_model.vera_B",
      "model.layers.0.mlp.up_proj.vera_lambda_b",
      "model.layers.0.mlp.up_proj.vera_lambda_d",
      "model.layers.0.self_attn.q_proj.vera_lambda_b",
      "model.layers.0.self_attn.q_proj.vera_lambda_d",
      "model.layers.1.mlp.up_proj.vera_lambda_b",
      "model.layers.1.mlp.up_proj.vera_lambda_d",
      "model.layers.1.self_attn.q_proj.vera_lambda_b",
      "model.layers.1.self_attn.q_proj.vera_lambda_d",
    ]);
    // q_proj is [32, 32], up_proj [64, 32]: A covers in = 32, B out = 64.
    assert.deepEqual(t.get("base_model.vera_A")?.shape, [4, 32]);
    assert.deepEqual(t.get("base_model.vera_B")?.shape, [64, 4]);
    assert.deepEqual(t.get("model.layers.0.mlp.up_proj.vera_lambda_b")?.shape, [64]);
    assert.ok(f32(t.get("model.layers.0.mlp.up_proj.vera_lambda_b")).every((v) => v === 0));
    assert.deepEqual([...f32(t.get("model.layers.1.self_attn.q_proj.vera_lambda_d"))], [0.25, 0.25, 0.25, 0.25]);
    // torch 1.13: Generator().manual_seed(0), _kaiming_init((4, 32)) then ((64, 4)) (test/golden/torch-rng.json).
    const golden = (
      JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/torch-rng.json"), "utf8")) as {
        vera: { seed: number; r: number; in: number; out: number; vera_A: number[]; vera_B: number[] }[];
      }
    ).vera.find((v) => v.seed === 0 && v.r === 4 && v.in === 32 && v.out === 64);
    assert.ok(golden);
    assert.deepEqual([...f32(t.get("base_model.vera_A"))], golden.vera_A);
    assert.deepEqual([...f32(t.get("base_model.vera_B"))], golden.vera_B);
    // Same key → same projections for every adapter; another key → others.
    const again = peft.addAdapter("again", { peftType: "VERA", r: 4, targetModules: ["q_proj", "up_proj"] }, { seed: 99 });
    assert.deepEqual(f32(again.tensors.get("base_model.vera_A")), f32(t.get("base_model.vera_A")));
    const other = peft.addAdapter("other", { peftType: "VERA", r: 4, targetModules: ["q_proj", "up_proj"], projectionPrngKey: 1 });
    assert.ok(maxDiff(f32(other.tensors.get("base_model.vera_A")), f32(t.get("base_model.vera_A"))) > 0.1);
    await model.release();
  });

  test("a layer computes W·x + λ_b ⊙ (B[:out]·(λ_d ⊙ A[:, :in]·x)), per row in mixed batches; merging adds that ΔW", async () => {
    for (const [m, path, fif] of [
      ["llama_basic", "model.layers.1.self_attn.v_proj", false],
      ["gpt2", "transformer.h.0.attn.c_attn", true],
    ] as const) {
      const model = await loadTestModel(m);
      const peft = PeftModel.create(model, { peftType: "VERA", r: 5, initWeights: false, targetModules: "all-linear" }, { seed: 17 });
      const t = peft.adapter("default").tensors;
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const b = fif ? (model.weights.get(`${path}.bias`) as HostTensor) : null;
      const inF = fif ? w.shape[0] : w.shape[1];
      const out = fif ? w.shape[1] : w.shape[0];
      // The shared projections are wider than this layer in at least one dimension.
      assert.ok((t.get("base_model.vera_A") as HostTensor).shape[1] > inF || (t.get("base_model.vera_B") as HostTensor).shape[0] > out);
      const x = randomTensor([2, inF]);
      const want = veraJs(x.data as Float32Array, 2, w, fif, t, path);
      if (b) for (let i = 0; i < want.length; i++) want[i] += f32(b)[i % out];
      const lin = fif ? { fanInFanOut: true } : undefined;
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, lin), x);
      assert.ok(maxDiff(got, want) < 1e-5, `${path}: ${maxDiff(got, want)}`);
      const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, lin), x, [1, 0]);
      assert.ok(maxDiff(mixed.subarray(0, out), want.subarray(0, out)) < 1e-5, "adapter row");
      const base = linearJs(x.data as Float32Array, 2, w, b, fif);
      assert.ok(maxDiff(mixed.subarray(out), base.subarray(out)) < 1e-5, "base row");
      // Merged weight: probing the identity rows recovers W + ΔW in the stored layout.
      const a = peft.adapter("default");
      const merged = a.tuner.merge?.(peft.info, a.config, a.tensors) as Map<string, HostTensor>;
      const eye = new Float32Array(inF * inF);
      for (let i = 0; i < inF; i++) eye[i * inF + i] = 1;
      const cols = veraJs(eye, inF, w, fif, t, path); // row i = W'·e_i, i.e. column i of W' [out, in]
      const wm = f32(merged.get(`${path}.weight`));
      let worst = 0;
      for (let i = 0; i < inF; i++)
        for (let o = 0; o < out; o++) worst = Math.max(worst, Math.abs(wm[fif ? i * out + o : o * inF + i] - cols[i * out + o]));
      assert.ok(worst < 1e-5, `merge ${worst}`);
      await model.release();
    }
  });

  test("training moves only λ_d and λ_b: vera_A and vera_B stay bit-identical and are not counted as trainable", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "VERA", r: 8, initWeights: false }, { seed: 7 });
    const before = new Map([...peft.adapter("default").tensors].map(([k, v]) => [k, Float32Array.from(f32(v))]));
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const ids = randomIds(2, 6, 256);
    for (let i = 0; i < 3; i++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
    const after = peft.adapter("default").tensors;
    for (const k of ["base_model.vera_A", "base_model.vera_B"]) assert.deepEqual(f32(after.get(k)), before.get(k), k);
    for (const [k, v] of after)
      if (k.includes("vera_lambda")) assert.ok(maxAbsDiff(f32(v), before.get(k) as Float32Array) > 0, `${k} did not move`);
    await trainer.release();
    // 2 layers × (q: λ_b 32 + λ_d 8, v: 32 + 8); the projections (8·32 + 32·8) are not trainable.
    assert.equal(peft.parameterCounts().trainable, 2 * (32 + 8 + 32 + 8));
    await model.release();
  });

  test("save_projection=false: the folder holds only the λ vectors; loading regenerates A and B bit for bit", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "VERA", r: 8, initWeights: false, saveProjection: false, projectionPrngKey: 1234 });
    const ids = randomIds(2, 5, 256);
    const want = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const dir = mkdtempSync(join(tmpdir(), "peftkit-vera-"));
    try {
      peft.savePretrained(dir);
      const file = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
      const names = file.entries.map((e) => e.name);
      file.close();
      assert.ok(
        names.every((n) => n.includes("vera_lambda_")),
        names.join(", "),
      );
      const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
      assert.equal(cfg.save_projection, false);
      assert.equal(cfg.projection_prng_key, 1234);
      const fresh = await loadTestModel("llama_basic");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      for (const k of ["base_model.vera_A", "base_model.vera_B"])
        assert.deepEqual(f32(loaded.adapter("default").tensors.get(k)), f32(peft.adapter("default").tensors.get(k)));
      assert.ok(maxAbsDiff((await loaded.forward({ inputIds: ids })).logits?.data as Float32Array, want) < 1e-6);
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await model.release();
  });

  test("loading: missing projections (save_projection=true) and a mis-shaped λ are named", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "VERA", r: 4, targetModules: ["q_proj"] });
    const dir = mkdtempSync(join(tmpdir(), "peftkit-vera-"));
    try {
      peft.savePretrained(dir);
      const t = peft.adapter("default").tensors;
      const file: Record<string, HostTensor> = {};
      for (const [k, v] of t) if (k !== "base_model.vera_B") file[k.startsWith("base_model.") ? k : `base_model.model.${k}`] = v;
      file["base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_d"] = hostTensor("f32", [5], new Float32Array(5));
      writeSafetensors(join(dir, "adapter_model.safetensors"), file, { format: "pt" });
      const fresh = await loadTestModel("llama_basic");
      assert.throws(
        () => PeftModel.fromPretrained(fresh, dir),
        (e: Error) =>
          e instanceof PeftConfigError &&
          /missing tensors:\n {2}base_model\.vera_B \[32, 4\]/.test(e.message) &&
          /layers\.0\.self_attn\.q_proj\.vera_lambda_d: file \[5\], expected \[4\]/.test(e.message),
      );
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await model.release();
  });

  test("config: PEFT's fields and defaults; bad options are refused naming the field", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "VERA" });
    const a = peft.adapter("default");
    const json = a.tuner.toJson(a.config);
    assert.deepEqual(
      [json.r, json.projection_prng_key, json.save_projection, json.vera_dropout, json.d_initial, json.bias, json.init_weights],
      [256, 0, true, 0, 0.1, "none", true],
    );
    assert.ok(!("exclude_modules" in json));
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ bias: "all" }, /does not save them/],
      [{ excludeModules: ["q_proj"] }, /no field "exclude_modules"/],
      [{ veraDropout: 1 }, /vera_dropout/],
      [{ projectionPrngKey: -1 }, /projection_prng_key/],
      [{ r: 0 }, /"r"/],
      [{ layersPattern: "layers" }, /layers_to_transform/],
    ];
    for (const [over, re] of bad)
      assert.throws(
        () => peft.addAdapter("bad", { peftType: "VERA", ...over }),
        (e: Error) => e instanceof PeftConfigError && re.test(e.message),
        JSON.stringify(over),
      );
    await model.release();
  });
});
