/**
 * CorDA against test/golden/corda_llama (scripts/goldens/make_corda_goldens.py: our plain-torch
 * re-derivation of PEFT 0.20.0's corda.py / corda_init, not PEFT's output): the calibration pass on
 * one padded batch gives PEFT's covariance (a hook over one forward per sequence, each divided by
 * |max|, averaged), and from that covariance LORA.create gives PEFT's lora_A, lora_B (up to the sign
 * of each singular pair) and residual base weight, for IPM and KPM.
 */
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { runCalibration } from "../../calibration/index.js";
import type { HostTensor } from "../../engine/ir/host.js";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { matrix } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { modelInfo } from "../model-info.js";
import type { LoraConfig } from "./config.js";
import { LORA } from "./index.js";

const DIR = resolve(REPO_ROOT, "test/golden/corda_llama");
const LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"];
const TOL = 1e-4;

const f32 = (t: HostTensor | undefined, what: string): Float32Array => {
  assert.ok(t, `golden has no ${what}`);
  return t.data as Float32Array;
};
const ids = (t: HostTensor): number[][] => {
  const [b, n] = t.shape;
  const d = t.data as BigInt64Array;
  return Array.from({ length: b }, (_, i) => Array.from({ length: n }, (_, j) => Number(d[i * n + j])));
};

test("CorDA golden: the calibration pass on a padded batch equals PEFT's per-sequence hook covariance", async () => {
  const golden = readSafetensors(join(DIR, "golden.safetensors")).tensors;
  const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
  try {
    const req = LORA.calibration?.(
      modelInfo(model),
      LORA.parseConfig({ peft_type: "LORA", target_modules: ["q_proj", "down_proj"], init_lora_weights: "corda" }, "t") as LoraConfig,
    );
    assert.ok(req);
    const stats = await runCalibration(model, [{ inputIds: ids(golden.input_ids), attentionMask: ids(golden.attention_mask) }], req, {
      compile: { backend: "interpreter", precision: "f64" },
    });
    assert.equal(stats.samples, 8);
    for (const p of req.layers.filter((l) => LAYERS.includes(l))) {
      const want = f32(golden[`cov.${p}`], `cov.${p}`);
      const got = stats.inputCovariance.get(p)?.data as Float64Array;
      let d = 0;
      let scale = 0;
      for (let i = 0; i < want.length; i++) {
        d = Math.max(d, Math.abs(got[i] / stats.samples - want[i]));
        scale = Math.max(scale, Math.abs(want[i]));
      }
      assert.ok(d < 1e-5 * scale, `${p}: max |ours − golden| = ${d} (scale ${scale})`);
    }
  } finally {
    await model.release();
  }
});

for (const mode of ["ipm", "kpm"] as const) {
  test(`CorDA golden (${mode}): lora_A, lora_B and the residual base weight within ${TOL} of the torch re-derivation`, async () => {
    const golden = readSafetensors(join(DIR, "golden.safetensors")).tensors;
    const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
    try {
      const info = modelInfo(model);
      const c = LORA.parseConfig(
        {
          peft_type: "LORA",
          r: 3,
          lora_alpha: 6,
          target_modules: ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"],
          init_lora_weights: "corda",
          corda_config: { corda_method: mode },
        },
        "t",
      ) as LoraConfig;
      const inputCovariance = new Map(
        LAYERS.map((p) => {
          const n = Math.sqrt(f32(golden[`cov.${p}`], p).length);
          return [p, matrix(n, n, f32(golden[`cov.${p}`], p))];
        }),
      );
      const created = LORA.create(info, c, new Rng(0), {
        calibration: { samples: 1, batches: 1, tokens: 1, inputCovariance, gradientSum: new Map(), gradientSquareSum: new Map() },
      });
      for (const p of LAYERS) {
        const a = f32(created.tensors.get(`${p}.lora_A.weight`), "A");
        const b = f32(created.tensors.get(`${p}.lora_B.weight`), "B");
        const ga = f32(golden[`${mode}.${p}.lora_A`], "A");
        const gb = f32(golden[`${mode}.${p}.lora_B`], "B");
        const inF = a.length / 3;
        const out = b.length / 3;
        for (let j = 0; j < 3; j++) {
          // A singular pair (u, v) is defined up to a joint sign.
          let dot = 0;
          for (let i = 0; i < inF; i++) dot += a[j * inF + i] * ga[j * inF + i];
          const sg = Math.sign(dot);
          let da = 0;
          let db = 0;
          for (let i = 0; i < inF; i++) da = Math.max(da, Math.abs(sg * a[j * inF + i] - ga[j * inF + i]));
          for (let o = 0; o < out; o++) db = Math.max(db, Math.abs(sg * b[o * 3 + j] - gb[o * 3 + j]));
          assert.ok(da < TOL && db < TOL, `${p} component ${j}: |ΔA| ${da}, |ΔB| ${db}`);
        }
        const res = f32(created.baseEdits?.get(`${p}.weight`), "residual");
        const gr = f32(golden[`${mode}.${p}.residual`], "residual");
        let dr = 0;
        for (let i = 0; i < gr.length; i++) dr = Math.max(dr, Math.abs(res[i] - gr[i]));
        assert.ok(dr < TOL, `${p}: residual differs by ${dr}`);
      }
    } finally {
      await model.release();
    }
  });
}
