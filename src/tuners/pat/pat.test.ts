import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { backward } from "../../engine/autodiff/grad.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { crossEntropy } from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import { WeightContext } from "../../nn/context.js";
import { pruneHiddenSize } from "../../prune/hidden-size.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer, shiftLabels } from "../train.js";
import type { PatConfig } from "./config.js";
import { keptChannels, maskKey, maskLoss, scheduleAt, scheduleKey, temperature } from "./hsm.js";

const BASE = {
  peft_type: "PAT",
  r: 4,
  lora_alpha: 8,
  target_modules: ["q_proj", "v_proj", "o_proj", "down_proj"],
  hsm_rank: 8,
  schedule_steps: 10,
};
// Random U, s, μ (mixed signs) and LoRA B. The count term's straight-through gradient is not the
// derivative of the step function that finite differences see, so the conformance gradient check
// runs without it; "the count loss's gradient is the straight-through one" below checks it.
const RANDOM = { ...BASE, init_lora_weights: false, init_hsm_weights: false, count_loss_weight: 0 };

for (const model of ["llama_basic", "llama_gqa_tied"] as const)
  runConformance({ name: `PAT (${model})`, model, identityConfig: BASE, config: RANDOM });

/**
 * Logits on the f64 interpreter of `model` alone (peft null), or with the adapter's forward traced
 * in training (with the given schedule) or at inference (schedule null: the rounded mask); with
 * `wantMuGrad`, also ∂CE/∂μ.
 */
function tracedLogits(
  model: PreTrainedModel,
  peft: PeftModel | null,
  ids: number[][],
  schedule: Float32Array | null,
  o: { wantMuGrad?: boolean; override?: Map<string, HostTensor> } = {},
) {
  const a = peft?.adapter("default");
  const tensors = new Map(a?.tensors ?? []);
  if (peft && schedule) tensors.set(scheduleKey(peft.info), hostTensor("f32", [3], schedule));
  for (const [k, t] of o.override ?? []) tensors.set(k, t);
  const keys = [...tensors.keys()];
  const names = [...model.weights.keys()];
  const idsT = hostTensor("i64", [ids.length, ids[0].length], BigInt64Array.from(ids.flat(), BigInt));
  const inputs: HostTensor[] = [
    ...keys.map((k) => tensors.get(k) as HostTensor),
    ...names.map((n) => model.weights.get(n) as HostTensor),
    idsT,
    shiftLabels(idsT),
  ];
  const g = trace(
    (...xs: Tensor[]) => {
      const start = xs[0].graph.nodes.length;
      const tensor = (k: string) => xs[keys.indexOf(k)];
      const w = new Map(names.map((n, i) => [n, xs[keys.length + i]]));
      const base = new WeightContext((n) => w.get(n), new Set(names));
      const opts = { adapterName: "default", tensor, rowMask: null, training: schedule !== null, seed: null };
      const ctx = a && peft ? a.tuner.wrap(base, peft.info, a.config, opts) : base;
      const [inIds, labels] = xs.slice(-2);
      const logits = model.traceForward(ctx, { input_ids: inIds }).logits as Tensor;
      if (!o.wantMuGrad || !peft) return [logits];
      const ce = crossEntropy(logits, labels);
      const mu = tensor(maskKey(peft.info));
      return [logits, ...backward([ce], [ce.mul(0).add(1)], [mu], start)];
    },
    inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })),
  );
  const out = interpret(g, inputs, { precision: "f64" });
  return { logits: out[0].data as Float64Array, muGrad: out[1]?.data as Float64Array | undefined };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe("PAT closed forms", () => {
  test("schedule: T(t) = 1/(1 − ln max(1,t)/ln N + 1e-6), b(t) = max(½ − t/N, 0), frozen (T(⌊0.8N⌋), g = 0) from ⌊0.8·N⌋", () => {
    const n = 10000;
    const [t0, b0, g0] = scheduleAt(0, n);
    assert.ok(Math.abs(t0 - 1 / (1 + 1e-6)) < 1e-7 && b0 === 0.5 && g0 === 1);
    const [t5k, b5k] = scheduleAt(5000, n);
    assert.ok(Math.abs(t5k - Math.fround(1 / (1 - Math.log(5000) / Math.log(n) + 1e-6))) < 1e-6 && b5k === 0);
    const [tf, , gf] = scheduleAt(8000, n);
    assert.ok(Math.abs(tf - 41.3) < 0.1, `T(0.8N) = ${tf}`);
    assert.equal(gf, 0);
    assert.deepEqual([...scheduleAt(9999, n)], [...scheduleAt(8000, n)]);
    assert.ok(temperature(1, n) === temperature(0, n));
    // ⌊0.8·N⌋ as the authors' int(global_step·0.8): N = 8 freezes from t = 6, at T(6).
    assert.equal(scheduleAt(5, 8)[2], 1);
    assert.deepEqual([...scheduleAt(7, 8)], [Math.fround(temperature(6, 8)), 0, 0]);
  });

  test("at t = 0 every HSM is the identity in the training forward (m = σ(0) + ½ = 1, U = 0, s = 1): logits unchanged", async () => {
    const model = await loadTestModel("llama_gqa_tied");
    const ids = randomIds(2, 6, 256);
    const base = (await model.forward({ inputIds: ids })).logits?.data as Float32Array;
    const peft = PeftModel.create(model, { ...BASE, init_hsm_weights: true }, { seed: 1 });
    const at0 = tracedLogits(model, peft, ids, scheduleAt(0, 10)).logits;
    assert.ok(maxDiff(at0, base) < 1e-5, `t = 0: ${maxDiff(at0, base)}`);
    // A μ ≠ 0 makes m = σ(T·μ) + ½ vary by channel, and the same forward changes the outputs.
    const mu = hostTensor(
      "f32",
      [32],
      Float32Array.from({ length: 32 }, (_, j) => ((j % 5) - 2) / 2),
    );
    const moved = tracedLogits(model, peft, ids, scheduleAt(0, 10), { override: new Map([[maskKey(peft.info), mu]]) }).logits;
    assert.ok(maxDiff(moved, base) > 1e-3);
    await model.release();
  });

  test("from 0.8·N the task loss no longer reaches μ (the mask is frozen); before, it does", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, RANDOM, { seed: 2 });
    const ids = randomIds(2, 5, 256);
    const live = tracedLogits(model, peft, ids, scheduleAt(3, 10), { wantMuGrad: true }).muGrad as Float64Array;
    const frozen = tracedLogits(model, peft, ids, scheduleAt(8, 10), { wantMuGrad: true }).muGrad as Float64Array;
    assert.ok(live.some((v) => Math.abs(v) > 1e-6));
    assert.ok(frozen.every((v) => v === 0));
    await model.release();
  });

  test("the count loss's gradient is the straight-through one; the polarisation means are over μ > 0 and μ ≤ 0, an empty one counting 0", () => {
    const run = (mu: number[], k: number, w: number) => {
      const x = hostTensor("f64", [mu.length], Float64Array.from(mu));
      const g = trace(
        (m: Tensor) => {
          const start = m.graph.nodes.length;
          const l = maskLoss(m, k, w);
          return [l, ...backward([l], [l.mul(0).add(1)], [m], start)];
        },
        [{ dtype: "f64", shape: [mu.length] }],
      );
      const [l, grad] = interpret(g, [x], { precision: "f64" });
      return { loss: (l.data as Float64Array)[0], grad: [...(grad.data as Float64Array)] };
    };
    const mu = [0.3, -0.2, 0, 0.7, -0.9];
    const got = run(mu, 2, 10);
    // Σ 1[μ ≥ 0] = 3 > k = 2: each μ_j gets 10·sign(3 − 2)/2 = 5, whatever its value (STE).
    const pos = mu.filter((v) => v > 0);
    const neg = mu.filter((v) => v <= 0);
    const want = mu.map((v) => 5 + (v > 0 ? (2 * (v - 0.5)) / pos.length : (2 * (v + 0.5)) / neg.length));
    const loss = 5 + pos.reduce((s, v) => s + (v - 0.5) ** 2, 0) / pos.length + neg.reduce((s, v) => s + (v + 0.5) ** 2, 0) / neg.length;
    assert.ok(Math.abs(got.loss - loss) < 1e-6, `loss ${got.loss} vs ${loss}`);
    for (const [j, g] of got.grad.entries()) assert.ok(Math.abs(g - want[j]) < 1e-6, `∂/∂μ_${j}: ${g} vs ${want[j]}`);
    // Σ 1[μ ≥ 0] = 0 < k: the sign flips; the empty μ > 0 set adds 0 (torch's mean() would be NaN).
    const none = run([-0.1, -0.4], 1, 10);
    assert.ok(Number.isFinite(none.loss));
    assert.ok(Math.abs(none.loss - (10 + (0.4 ** 2 + 0.1 ** 2) / 2)) < 1e-6);
    for (const [j, g] of none.grad.entries()) assert.ok(Math.abs(g - (-10 + [-0.1, -0.4][j] + 0.5)) < 1e-6);
  });

  test("after training, the pruned smaller model's logits equal the masked full model's (rounded mask) within 1e-5", async () => {
    for (const name of ["llama_gqa_tied", "qwen2"] as const) {
      const model = await loadTestModel(name);
      const cfg = { ...RANDOM, count_loss_weight: 10, keep_dim: 20, target_modules: "all-linear" };
      const peft = PeftModel.create(model, cfg, { seed: 3 });
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 6 });
      const ids = randomIds(2, 6, 256);
      for (let s = 0; s < 3; s++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
      assert.equal(
        trainer.controllerMetrics().pat_kept,
        keptChannels(peft.adapter("default").tensors.get(maskKey(peft.info)) as HostTensor).length,
      );
      await trainer.release();
      assert.equal((peft.adapter("default").config as PatConfig).scheduleSteps, 10);
      const keep = keptChannels(peft.adapter("default").tensors.get(maskKey(peft.info)) as HostTensor);
      assert.ok(keep.length > 0 && keep.length < 32, `kept ${keep.length}`);
      const evalIds = randomIds(3, 7, 256);
      // The masked full model: the adapter's inference forward (rounded mask 1[μ ≥ 0]), in f64.
      const masked = tracedLogits(model, peft, evalIds, null).logits;
      const maskedF32 = (await peft.forward({ inputIds: evalIds })).logits?.data as Float32Array;
      const merged = peft.mergeAndUnload();
      const pruned = pruneHiddenSize(merged, keep);
      assert.equal(pruned.config.hidden_size, keep.length);
      const got = tracedLogits(pruned, null, evalIds, null).logits;
      assert.ok(maxDiff(got, masked) < 1e-5, `${name}: pruned vs masked ${maxDiff(got, masked)}`);
      console.log(`${name}: kept ${keep.length}/32, max |Δlogit| f64 ${maxDiff(got, masked).toExponential(2)}`);
      // The same on onnxruntime in f32 (rounding of two different op orders: the merge tolerance).
      const gotF32 = (await pruned.forward({ inputIds: evalIds })).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(gotF32, maskedF32) < 1e-4, `${name}: f32 ${maxAbsDiff(gotF32, maskedF32)}`);
      await pruned.release();
      await model.release();
    }
  });

  test("bad input: keep_dim outside [1, hidden_size), a non-LLaMA model", async () => {
    const llama = await loadTestModel("llama_basic");
    assert.throws(
      () => PeftModel.create(llama, { ...BASE, keep_dim: 32 }),
      /field "keep_dim" must be an integer in \[1, 32\) \(hidden_size 32\), got 32/,
    );
    assert.throws(() => PeftModel.create(llama, { ...BASE, keep_dim: 0 }), /"keep_dim"/);
    const gpt2 = await loadTestModel("gpt2");
    assert.throws(
      () => PeftModel.create(gpt2, { ...BASE, target_modules: ["c_attn"] }),
      /PAT needs a LLaMA-family decoder .*model_type is "gpt2"/,
    );
    await llama.release();
    await gpt2.release();
  });
});
