import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { readJsonFile } from "../../io/hf-folder.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { normalizeKeys, PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../format.js";
import { PeftModel } from "../peft-model.js";
import { parseAdaLoraConfig } from "./config.js";
import { ADALORA, type AdaLoraConfig } from "./index.js";
import { adaLoraKeys, adaLoraLayers } from "./layers.js";

const GOLDEN = resolve(REPO_ROOT, "test/golden/peft-adalora");
const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

async function logits(m: PeftModel | PreTrainedModel, ids: number[][]): Promise<Float32Array> {
  return (await m.forward({ inputIds: ids })).logits?.data as Float32Array;
}

/** Max |got − want| over the [batch, position] rows where valid is 1. */
function maxDiffValid(got: Float32Array, want: Float32Array, valid: HostTensor): number {
  assert.equal(got.length, want.length);
  const per = want.length / valid.data.length;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number((valid.data as ArrayLike<number>)[Math.floor(i / per)])) continue;
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

/** ADALORA.loss traced with the adapter's tensors as inputs, on the reference interpreter. */
function methodLoss(peft: PeftModel): number {
  const a = peft.adapter("default");
  const entries = [...a.tensors];
  const g = trace(
    (...xs: Tensor[]) => {
      const at = new Map(entries.map(([k], i) => [k, xs[i]]));
      return ADALORA.loss?.(peft.info, a.config as AdaLoraConfig, {
        adapterName: "default",
        tensor: (k) => at.get(k) as Tensor,
        rowMask: null,
        training: true,
        seed: null,
      }) as Tensor;
    },
    entries.map(([, t]) => ({ dtype: t.dtype, shape: t.shape })),
  );
  return (
    interpret(
      g,
      entries.map(([, t]) => t),
    )[0].data as Float32Array
  )[0];
}

/** orth_reg_weight · mean over A and B of ‖A·Aᵀ − I‖_F, ‖Bᵀ·B − I‖_F, in float64 from the tensors. */
function orthClosedForm(peft: PeftModel): number {
  const a = peft.adapter("default");
  const c = a.config as AdaLoraConfig;
  const gram = (m: Float32Array, rows: number, cols: number, rowsGram: boolean) => {
    const n = rowsGram ? rows : cols;
    let s = 0;
    for (let p = 0; p < n; p++)
      for (let q = 0; q < n; q++) {
        let g = 0;
        if (rowsGram) for (let j = 0; j < cols; j++) g += m[p * cols + j] * m[q * cols + j];
        else for (let i = 0; i < rows; i++) g += m[i * cols + p] * m[i * cols + q];
        s += (g - (p === q ? 1 : 0)) ** 2;
      }
    return Math.sqrt(s);
  };
  let sum = 0;
  let count = 0;
  for (const l of adaLoraLayers(peft.info, c)) {
    const k = adaLoraKeys(l.key);
    sum += gram(f32(a.tensors.get(k.a)), c.initR, l.inFeatures, true) + gram(f32(a.tensors.get(k.b)), l.outFeatures, c.initR, false);
    count += 2;
  }
  return (c.orthRegWeight * sum) / count;
}

const BASE = { peftType: "ADALORA", totalStep: 10, initR: 4, targetR: 2 };

describe("AdaLoRA", () => {
  runConformance({
    name: "AdaLoRA on llama (q_proj, v_proj by PEFT's default)",
    model: "llama_basic",
    identityConfig: BASE,
    config: { ...BASE, initLoraWeights: false, loraAlpha: 1 },
  });
  runConformance({
    name: "AdaLoRA on gpt2 (Conv1D c_attn, dropout)",
    model: "gpt2",
    config: { ...BASE, initLoraWeights: false, loraAlpha: 0.5, loraDropout: 0.1 },
    mixedBatch: false,
  });

  test("defaults are PEFT's (AdaLoraConfig + LoraConfig), and the config writes what PEFT writes", () => {
    const c = parseAdaLoraConfig({ peft_type: "ADALORA", total_step: 100 }, "t");
    assert.deepEqual(
      [c.targetR, c.initR, c.tinit, c.tfinal, c.deltaT, c.beta1, c.beta2, c.orthRegWeight, c.loraAlpha, c.loraDropout, c.rankPattern],
      [8, 12, 0, 0, 1, 0.85, 0.85, 0.5, 8, 0, null],
    );
    const json = ADALORA.toJson({ ...c, rankPattern: { "model.layers.0.self_attn.q_proj": [true, false] } });
    assert.equal(json.deltaT, 1);
    assert.deepEqual(json.rank_pattern, { "model.layers.0.self_attn.q_proj.lora_E": [true, false] });
    // PEFT's key spelling (deltaT) and the adapter-name-suffixed rank_pattern keys read back.
    const back = parseAdaLoraConfig(normalizeKeys({ ...json, deltaT: 5, rank_pattern: { "m.q.lora_E.default": [true] } }, "t"), "t");
    assert.equal(back.deltaT, 5);
    assert.deepEqual(back.rankPattern, { "m.q": [true] });
  });

  test("bad configs fail in one line naming the field", async () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ total_step: 0 }, /field "total_step" must be an integer > 0/],
      [{ total_step: -3 }, /field "total_step" must be an integer > 0/],
      [{ total_step: 10, tinit: 4, tfinal: 6 }, /"tinit" \(4\) \+ "tfinal" \(6\) must be < "total_step" \(10\).*budgeting phase/],
      [{ total_step: 10, target_r: 13, init_r: 12 }, /field "target_r" \(13\) must be <= "init_r" \(12\)/],
      [{ total_step: 10, use_dora: true }, /field "use_dora": ADALORA does not support DoRA/],
      [{ total_step: 10, loftq_config: { loftq_bits: 4 } }, /field "loftq_config": ADALORA does not support LoftQ/],
      [{ total_step: 10, orth_reg_weight: -1 }, /field "orth_reg_weight" must be >= 0/],
      [{ total_step: 10, beta1: 1 }, /field "beta1" must be in \(0, 1\)/],
      [{ total_step: 10, layers_pattern: "layers" }, /field "layers_pattern" needs "layers_to_transform"/],
      [{ total_step: 10, bias: "all" }, /field "bias" = "all" is not supported/],
      [{ total_step: 10, rank_pattern: { "a.lora_E": [1, 0] } }, /rank_pattern\["a.lora_E"\] must be a list of booleans/],
      [{ total_step: 10, rank_pattern: { "a.lora_A": [true] } }, /rank_pattern key "a.lora_A" must name a module's lora_E/],
    ];
    for (const [raw, re] of bad) {
      const err = (() => {
        try {
          parseAdaLoraConfig({ peft_type: "ADALORA", ...raw }, "adapter_config.json");
        } catch (e) {
          return e as Error;
        }
        return null;
      })();
      assert.ok(err instanceof PeftConfigError, `${JSON.stringify(raw)} was accepted`);
      assert.match(err.message, re);
      assert.ok(!err.message.includes("\n"), err.message);
    }
    const model = await loadTestModel("llama_basic");
    try {
      const q = "model.layers.0.self_attn.q_proj";
      assert.throws(
        () => PeftModel.create(model, { ...BASE, rankPattern: { "model.layers.0.mlp.up_proj.lora_E": [true, true, true, true] } }),
        /rank_pattern\["model.layers.0.mlp.up_proj.lora_E"\] names no targeted layer/,
      );
      assert.throws(
        () => PeftModel.create(model, { ...BASE, rankPattern: { [`${q}.lora_E`]: [true, false] } }),
        /rank_pattern\["model.layers.0.self_attn.q_proj.lora_E"\] has 2 entries, init_r is 4/,
      );
      // mistral and vit have no AdaLoRA default in PEFT's mapping: target_modules is required.
    } finally {
      await model.release();
    }
  });

  test("init: E = 0, A and B ~ N(0, 0.02) of shapes [r, in], [r, 1], [out, r]", async () => {
    const model = await loadTestModel("llama_basic");
    try {
      const peft = PeftModel.create(model, { ...BASE, initR: 6 }, { seed: 1 });
      const t = peft.adapter("default").tensors;
      const k = adaLoraKeys("model.layers.0.self_attn.q_proj");
      assert.deepEqual(t.get(k.e)?.shape, [6, 1]);
      assert.ok(f32(t.get(k.e)).every((v) => v === 0));
      const a = f32(t.get(k.a));
      assert.deepEqual(t.get(k.a)?.shape, [6, 32]);
      assert.deepEqual(t.get(k.b)?.shape, [32, 6]);
      const std = Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
      assert.ok(Math.abs(std - 0.02) < 0.004, `std ${std}`);
    } finally {
      await model.release();
    }
  });

  test("masked ranks contribute nothing: with E_i = 0, any A row i / B column i give the same outputs, = the pruned adapter", async () => {
    const model = await loadTestModel("llama_basic");
    const dir = mkdtempSync(join(tmpdir(), "peftkit-adalora-mask-"));
    try {
      const ids = randomIds(2, 6, 100);
      const keep = [true, false, true, false];
      // The rank_pattern a PEFT run would have recorded; the tensors stay at init_r in memory.
      const modules = [0, 1].flatMap((i) => ["q_proj", "v_proj"].map((m) => `model.layers.${i}.self_attn.${m}.lora_E`));
      const rankPattern = Object.fromEntries(modules.map((m) => [m, keep]));
      const peft = PeftModel.create(model, { ...BASE, initLoraWeights: false, loraAlpha: 1, rankPattern }, { seed: 3 });
      const a = peft.adapter("default");
      const c = a.config as AdaLoraConfig;
      const masked = new Map<string, HostTensor>();
      const scrambled = new Map<string, HostTensor>();
      for (const l of adaLoraLayers(peft.info, c)) {
        const k = adaLoraKeys(l.key);
        masked.set(
          k.e,
          hostTensor(
            "f32",
            [4, 1],
            f32(a.tensors.get(k.e)).map((v, i) => (keep[i] ? v : 0)),
          ),
        );
        scrambled.set(
          k.a,
          hostTensor(
            "f32",
            [4, l.inFeatures],
            f32(a.tensors.get(k.a)).map((v, i) => (keep[Math.floor(i / l.inFeatures)] ? v : 7 * v + 1)),
          ),
        );
        scrambled.set(
          k.b,
          hostTensor(
            "f32",
            [l.outFeatures, 4],
            f32(a.tensors.get(k.b)).map((v, i) => (keep[i % 4] ? v : -3 * v + 2)),
          ),
        );
      }
      const before = await logits(peft, ids);
      peft.setAdapterTensors("default", masked);
      const maskedOut = await logits(peft, ids);
      assert.ok(maxAbsDiff(maskedOut, before) > 1e-3, "the masked triplets mattered before");
      peft.setAdapterTensors("default", scrambled);
      assert.equal(maxAbsDiff(await logits(peft, ids), maskedOut), 0, "dropped triplets changed the output");
      // The same adapter cut to the kept triplets (PEFT's folder with this rank_pattern) gives the same outputs.
      peft.savePretrained(dir);
      const file = readSafetensors(join(dir, ADAPTER_WEIGHTS)).tensors;
      assert.deepEqual(file[`base_model.model.${adaLoraKeys("model.layers.1.self_attn.v_proj").b}`].shape, [32, 2]);
      const fresh = await loadTestModel("llama_basic");
      try {
        const loaded = PeftModel.fromPretrained(fresh, dir);
        assert.ok(maxAbsDiff(await logits(loaded, ids), maskedOut) < 1e-6);
        // merged: the dropped triplets contribute nothing to ΔW either
        assert.ok(maxAbsDiff(await logits(loaded.mergeAndUnload(), ids), maskedOut) < 1e-4);
      } finally {
        await fresh.release();
      }
    } finally {
      await model.release();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the orthogonal regulariser (Tuner.loss) = orth_reg_weight · mean of ‖AAᵀ − I‖_F, ‖BᵀB − I‖_F", async () => {
    const model = await loadTestModel("llama_basic");
    try {
      const peft = PeftModel.create(model, { ...BASE, initLoraWeights: false, orthRegWeight: 0.3, targetModules: ["q_proj", "down_proj"] });
      const got = methodLoss(peft);
      const want = orthClosedForm(peft);
      assert.ok(Math.abs(got - want) <= 1e-5 * want, `${got} vs ${want}`);
      const c = peft.adapter("default").config as AdaLoraConfig;
      assert.equal(ADALORA.loss?.(peft.info, { ...c, orthRegWeight: 0 }, {} as never), null);
    } finally {
      await model.release();
    }
  });
});

describe("AdaLoRA folders in PEFT's format (PyTorch re-derivation of PEFT 0.20's layer.py; atol 1e-5)", () => {
  for (const name of ["adalora_llama_pruned", "adalora_gpt2_fan_in_fan_out"]) {
    test(name, async () => {
      const dir = join(GOLDEN, name);
      const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as { base_model: string };
      const g = readSafetensors(join(dir, "golden.safetensors")).tensors;
      const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, meta.base_model));
      const out = mkdtempSync(join(tmpdir(), "peftkit-adalora-golden-"));
      try {
        const peft = PeftModel.fromPretrained(model, dir);
        const inputs = { inputIds: g.input_ids, attentionMask: g.attention_mask };
        const unmerged = (await peft.forward(inputs)).logits?.data as Float32Array;
        const d = maxDiffValid(unmerged, f32(g.logits), g.valid);
        const hint = g.logits_kept_rank_scaling
          ? ` (vs kept-rank scaling ${maxDiffValid(unmerged, f32(g.logits_kept_rank_scaling), g.valid)})`
          : "";
        assert.ok(d <= 1e-5, `unmerged: ${d}${hint}`);
        // Saved again, the folder holds PEFT's tensors and rank_pattern exactly.
        peft.savePretrained(out);
        const want = readSafetensors(join(dir, ADAPTER_WEIGHTS)).tensors;
        const got = readSafetensors(join(out, ADAPTER_WEIGHTS)).tensors;
        assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
        for (const k of Object.keys(want)) {
          assert.deepEqual(got[k].shape, want[k].shape, k);
          assert.deepEqual(got[k].data, want[k].data, k);
        }
        const cfg = (p: string) => JSON.parse(readFileSync(join(p, ADAPTER_CONFIG), "utf8")) as Record<string, unknown>;
        assert.deepEqual(cfg(out).rank_pattern, cfg(dir).rank_pattern);
        const merged = (await peft.mergeAndUnload().forward(inputs)).logits?.data as Float32Array;
        const dm = maxDiffValid(merged, f32(g.logits), g.valid);
        assert.ok(dm <= 1e-4, `merged: ${dm}`);
      } finally {
        await model.release();
        rmSync(out, { recursive: true, force: true });
      }
    });
  }

  test("a pruned folder without rank_pattern, or with a mis-shaped tensor, fails in one line naming the tensor", async () => {
    const src = join(GOLDEN, "adalora_llama_pruned");
    const dir = mkdtempSync(join(tmpdir(), "peftkit-adalora-bad-"));
    const model = await loadTestModel("llama_basic");
    const loadError = (): Error => {
      try {
        PeftModel.fromPretrained(model, dir);
      } catch (e) {
        return e as Error;
      }
      assert.fail("loaded");
    };
    try {
      cpSync(src, dir, { recursive: true });
      const cfgPath = join(dir, ADAPTER_CONFIG);
      const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
      writeFileSync(cfgPath, JSON.stringify({ ...cfg, rank_pattern: null }));
      let e = loadError();
      assert.ok(e instanceof PeftConfigError);
      assert.match(
        e.message,
        /tensor base_model\.model\.model\.layers\.\d\.self_attn\.\w_proj\.lora_A \[\d, \d+\] has rank \d, but init_r is 6 and rank_pattern has no entry "model\.layers\.\d\.self_attn\.\w_proj\.lora_E"/,
      );
      assert.ok(!e.message.includes("\n"), e.message);
      // E saved 1-D, and B with a rank that disagrees with the pattern
      writeFileSync(cfgPath, JSON.stringify(cfg));
      const file = readSafetensors(join(dir, ADAPTER_WEIGHTS)).tensors;
      // layers.0.o_proj keeps 4 of 6 triplets (meta.json)
      const eKey = "base_model.model.model.layers.0.self_attn.o_proj.lora_E";
      const k = file[eKey].shape[0];
      writeSafetensors(join(dir, ADAPTER_WEIGHTS), { ...file, [eKey]: hostTensor("f32", [k], f32(file[eKey])) }, { format: "pt" });
      e = loadError();
      assert.match(e.message, /tensor base_model\.model\.model\.layers\.0\.self_attn\.o_proj\.lora_E has shape \[4\], expected \[r, 1\]/);
      assert.ok(!e.message.includes("\n"), e.message);
      const bKey = "base_model.model.model.layers.0.self_attn.o_proj.lora_B";
      writeSafetensors(
        join(dir, ADAPTER_WEIGHTS),
        { ...file, [bKey]: hostTensor("f32", [32, 3], new Float32Array(32 * 3)) },
        { format: "pt" },
      );
      e = loadError();
      assert.match(
        e.message,
        /tensor base_model\.model\.model\.layers\.0\.self_attn\.o_proj\.lora_B \[32, 3\] has rank 3, but its rank_pattern entry keeps 4/,
      );
      assert.ok(!e.message.includes("\n"), e.message);
    } finally {
      await model.release();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
