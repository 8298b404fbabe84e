import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { backward } from "../../engine/autodiff/grad.js";
import { onesLike } from "../../engine/autodiff/rules.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { reduceSeed, uniformAt } from "../../engine/ir/random.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { fullFinetuneGradient } from "../increlora/testing.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { parseRamtConfig, type RamtConfig } from "./config.js";
import { DISTILL_TERM, maskKey, RAMT, RamtContext, ramtTargets, scoresKey } from "./index.js";
import { gradientDropout, keepProbability, packMask, straightThroughMask, unpackMask } from "./mask.js";

const CONFIG = { peft_type: "RAMT" };
const TAU = 5e-3;

/** The STE's gradient is the derivative of the mask linearised at the current scores: M₀ + (S − S₀). */
function linearised(
  base: import("../../nn/context.js").ForwardContext,
  tensor: (k: string) => Tensor,
  a: { info: PeftModel["info"]; config: unknown; tensors: ReadonlyMap<string, HostTensor> },
) {
  const c = a.config as RamtConfig;
  return new RamtContext(
    base,
    ramtTargets(a.info, c),
    c,
    { adapterName: "default", tensor, rowMask: null, training: false, seed: null },
    (t, s) => {
      const s0 = a.tensors.get(scoresKey(t)) as HostTensor;
      const shift = Float64Array.from(s0.data as Float32Array, (v) => (v > c.threshold ? 1 : 0) - v);
      return s.add(constant(hostTensor("f64", [...s0.shape], shift)).cast(s.dtype));
    },
  );
}

for (const model of ["llama_basic", "gpt2", "bert_seq_cls"] as const) {
  runConformance({
    name: `RAMT on ${model}`,
    model,
    identityConfig: CONFIG,
    // Random scores (about a quarter of the entries off); the folder holds the scores themselves.
    config: { ...CONFIG, init_weights: false, save_scores: true },
    referenceWrap: linearised,
  });
}

test("RAMT: bad input gets one line naming the field", () => {
  assert.throws(() => parseRamtConfig({ ...CONFIG, threshold: 0.01 }, "cfg"), /^PeftConfigError: cfg: field "threshold" must be below mask_scale \(0\.01\), or every mask starts off, got 0\.01$/);
  assert.throws(() => parseRamtConfig({ ...CONFIG, mask_scale: 1e-3 }, "cfg"), /cfg: field "threshold" must be below mask_scale \(0\.001\)/);
  assert.throws(() => parseRamtConfig({ ...CONFIG, grad_drop_lambda: 1.5 }, "cfg"), /cfg: field "grad_drop_lambda" must be in \[0, 1\], got 1\.5/);
  assert.throws(() => parseRamtConfig({ ...CONFIG, grad_drop_lambda: -0.1 }, "cfg"), /field "grad_drop_lambda" must be in \[0, 1\], got -0\.1/);
  assert.throws(() => parseRamtConfig({ ...CONFIG, mask_loss_weight: -1 }, "cfg"), /field "mask_loss_weight" must be >= 0/);
  assert.throws(() => parseRamtConfig({ ...CONFIG, distill_temperature: 0 }, "cfg"), /field "distill_temperature" must be > 0/);
  const c = parseRamtConfig(CONFIG, "cfg");
  assert.deepEqual(
    [c.maskScale, c.threshold, c.maskLossWeight, c.gradDropLambda, c.distillTemperature, c.saveScores],
    [1e-2, 5e-3, 1e-4, 1, 1, false],
  );
});

test("RAMT: masks pack 8 per byte, first entry in the high bit, zero-padded; unpacking restores them", () => {
  const s = hostTensor("f32", [3, 3], [0.01, 0, 0.006, 0.0051, 0.005, -1, 0.004, 0.001, 1]);
  // on: > τ (0.005 itself is off, as the authors' Binarizer has it).
  assert.deepEqual([...packMask(s, TAU)], [0b10110000, 0b10000000]);
  assert.deepEqual([...(unpackMask([0b10110000, 0b10000000], [3, 3], "t").data as Float32Array)], [1, 0, 1, 1, 0, 0, 0, 0, 1]);
  const rng = new (class {
    x = 7;
    next() {
      this.x = (this.x * 1103515245 + 12345) % 2 ** 31;
      return this.x / 2 ** 31;
    }
  })();
  for (const n of [1, 8, 9, 64, 1001]) {
    const r = hostTensor("f32", [n], Float32Array.from({ length: n }, () => rng.next() * 0.01));
    const back = unpackMask(packMask(r, TAU), [n], "t").data as Float32Array;
    (r.data as Float32Array).forEach((v, i) => assert.equal(back[i], v > TAU ? 1 : 0, `n ${n}, entry ${i}`));
  }
  assert.throws(() => unpackMask([1, 300], [3, 3], 'tensor "m"'), /^RangeError: tensor "m": byte 1 is 300, not in 0\.\.255$/);
  assert.throws(() => unpackMask([1], [3, 3], 'tensor "m"'), /^RangeError: tensor "m": 1 bytes for 9 mask bits \(expected 2\)$/);
});

test("RAMT: a folder holds U8 masks (⌈n/8⌉ bytes per target); it reloads as scores 0/1 with the same outputs, and merge = M ⊙ θ", async () => {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-ramt-"));
  try {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { ...CONFIG, init_weights: false }, { seed: 5 });
    const a = peft.adapter("default");
    const targets = ramtTargets(peft.info, a.config as RamtConfig);
    assert.deepEqual(
      targets.map((t) => t.key.split(".").pop()),
      ["q_proj", "k_proj", "v_proj", "o_proj", "q_proj", "k_proj", "v_proj", "o_proj"],
    );
    const ids = randomIds(2, 5, 100);
    const before = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    peft.savePretrained(dir);
    const f = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
    const entries = new Map(f.entries.map((e) => [e.name, e]));
    f.close();
    assert.equal(entries.size, targets.length);
    for (const t of targets) {
      const e = entries.get(`base_model.model.${maskKey(t)}`);
      assert.ok(e, maskKey(t));
      assert.equal(e.dtype, "U8");
      assert.deepEqual(e.shape, [Math.ceil((t.shape[0] * t.shape[1]) / 8)]);
    }
    const fresh = await loadTestModel("llama_basic");
    const loaded = PeftModel.fromPretrained(fresh, dir);
    const after = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.deepEqual(after, before);
    for (const t of targets) {
      const s = a.tensors.get(scoresKey(t))?.data as Float32Array;
      const back = loaded.adapter("default").tensors.get(scoresKey(t))?.data as Float32Array;
      s.forEach((v, i) => assert.equal(back[i], v > TAU ? 1 : 0));
    }
    // Merge: θ ← M ⊙ θ, entry by entry.
    const merged = RAMT.merge?.(peft.info, a.config as RamtConfig, a.tensors) as Map<string, HostTensor>;
    for (const t of targets) {
      const w = model.weights.get(`${t.path}.weight`)?.data as Float32Array;
      const m = merged.get(`${t.path}.weight`)?.data as Float32Array;
      const s = a.tensors.get(scoresKey(t))?.data as Float32Array;
      s.forEach((v, i) => assert.equal(m[i], v > TAU ? w[i] : 0));
    }
    await model.release();
    await fresh.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("RAMT keep probability: 1 where a and b agree in sign, |a|/(|a|+|b|) where they disagree; b = a keeps every element", () => {
  const av = [0.3, -2, 1e-3, 0.5, -0.25, 4, -1e-4, 0];
  const bv = [0.7, -1, 5e-3, -1.5, 0.75, -4, 3e-4, 1];
  const g = trace((a, b) => keepProbability(a, b), [spec("f64", [av.length]), spec("f64", [av.length])]);
  const [p] = interpret(g, [hostTensor("f64", [av.length], av), hostTensor("f64", [av.length], bv)], { precision: "f64" });
  // The closed forms, up to the authors' ε = 1e-8 in the denominator; sign(0) = 0 (torch.sign) gives ½.
  const want = av.map((a, i) => {
    const b = bv[i];
    if (a === 0) return 0.5;
    return Math.sign(a) === Math.sign(b) ? 1 : Math.abs(a) / (Math.abs(a) + Math.abs(b));
  });
  (p.data as Float64Array).forEach((v, i) => {
    const tol = 1e-8 / (Math.abs(av[i]) + Math.abs(bv[i])) + 1e-15;
    assert.ok(Math.abs(v - want[i]) <= tol, `element ${i}: ${v} vs ${want[i]}`);
  });
});

test("RAMT gradient dropout: ((1 − λ) + λ·1[P > U])·a with U from the seed's counter; exact per element, and the keep rate matches P", () => {
  const n = 20000;
  const seed = 123456789n;
  const s32 = reduceSeed(seed);
  const av = Float32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -1 : 1) * (0.5 + (i % 7) / 7));
  // Opposite signs, |b| = 3|a|: P = 1/4 (up to ε).
  const bv = Float32Array.from(av, (a) => -3 * a);
  for (const lambda of [1, 0.3]) {
    const g = trace((a, b, s) => gradientDropout(a, b, s, lambda), [spec("f32", [n]), spec("f32", [n]), spec("i64", [])]);
    const [out] = interpret(g, [hostTensor("f32", [n], av), hostTensor("f32", [n], bv), hostTensor("i64", [], BigInt64Array.of(seed))]);
    const o = out.data as Float32Array;
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const keep = 0.25 > uniformAt(s32, i);
      if (keep) kept++;
      // The graph's f32 arithmetic: a·(keep·λ + (1 − λ)).
      const factor = Math.fround(Math.fround((keep ? 1 : 0) * Math.fround(lambda)) + Math.fround(1 - lambda));
      assert.equal(o[i], Math.fround(av[i] * factor), `λ ${lambda}, element ${i}`);
    }
    // Binomial(n, 1/4): 5σ is 0.015.
    assert.ok(Math.abs(kept / n - 0.25) < 0.015, `keep rate ${kept / n}`);
  }
  // b = a: every element kept, the gradient unchanged.
  const g = trace((a, s) => gradientDropout(a, a, s, 1), [spec("f32", [n]), spec("i64", [])]);
  const [same] = interpret(g, [hostTensor("f32", [n], av), hostTensor("i64", [], BigInt64Array.of(seed))]);
  assert.deepEqual(same.data, av);
});

test("RAMT penalty: w·Σ‖S‖₂ whose gradient is w·S/‖S‖ per tensor; the STE passes the cotangent through", async () => {
  const model = await loadTestModel("llama_basic");
  const cfg = { ...CONFIG, init_weights: false, target_modules: ["q_proj"], mask_loss_weight: 0.5 };
  const peft = PeftModel.create(model, cfg, { seed: 9 });
  const a = peft.adapter("default");
  const c = a.config as RamtConfig;
  const targets = ramtTargets(peft.info, c);
  const keys = targets.map(scoresKey);
  const specs = keys.map((k) => spec("f64", (a.tensors.get(k) as HostTensor).shape));
  const g = trace(
    (...xs) => {
      const opts = { adapterName: "default", tensor: (k: string) => xs[keys.indexOf(k)], rowMask: null, training: true, seed: null };
      const loss = RAMT.loss?.(peft.info, c, opts) as Tensor;
      return [loss, ...backward([loss], [onesLike(loss)], xs)];
    },
    specs,
  );
  const inputs = keys.map((k) => hostTensor("f64", [...(a.tensors.get(k) as HostTensor).shape], Float64Array.from(a.tensors.get(k)?.data as Float32Array)));
  const [value, ...grads] = interpret(g, inputs, { precision: "f64" });
  let total = 0;
  inputs.forEach((s, j) => {
    const d = s.data as Float64Array;
    const norm = Math.sqrt(d.reduce((x, v) => x + v * v, 0));
    total += norm;
    (grads[j].data as Float64Array).forEach((v, i) => assert.ok(Math.abs(v - (0.5 * d[i]) / norm) < 1e-12, `${keys[j]}[${i}]`));
  });
  assert.ok(Math.abs((value.data as Float64Array)[0] - 0.5 * total) < 1e-12);
  // STE: the cotangent of M reaches S unchanged.
  const ste = trace((s, r) => {
    const m = straightThroughMask(s, TAU);
    return [m, ...backward([m], [r], [s])];
  }, [spec("f64", [4]), spec("f64", [4])]);
  const [m, gs] = interpret(ste, [hostTensor("f64", [4], [0.01, 0.005, -3, 0.0051]), hostTensor("f64", [4], [0.5, -2, 7, 1e-9])], { precision: "f64" });
  assert.deepEqual([...(m.data as Float64Array)], [1, 0, 0, 1]);
  assert.deepEqual([...(gs.data as Float64Array)], [0.5, -2, 7, 1e-9]);
  await model.release();
});

test("RAMT with λ = 0: one AdamW update is plain Adam on a = (∂L/∂θ) ⊙ θ + w·S/‖S‖ (every mask on at init)", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, { ...CONFIG, target_modules: ["q_proj", "o_proj"], grad_drop_lambda: 0 }, { seed: 1 });
  const a = peft.adapter("default");
  const targets = ramtTargets(peft.info, a.config as RamtConfig);
  const ids = randomIds(2, 6, 100);
  const grads = new Map<string, Float32Array>();
  for (const t of targets) grads.set(t.key, await fullFinetuneGradient(model, peft, `${t.path}.weight`, ids));
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw", weightDecay: 0 } });
  const lr = 1e-3;
  await trainer.train({ inputIds: ids, labels: ids }, { lr });
  for (const t of targets) {
    const w = model.weights.get(`${t.path}.weight`)?.data as Float32Array;
    const n = w.length;
    const s1 = peft.adapter("default").tensors.get(scoresKey(t))?.data as Float32Array;
    const gw = grads.get(t.key) as Float32Array;
    // ‖S‖ = 1e-2·√n, so S/‖S‖ = 1/√n.
    for (let i = 0; i < n; i++) {
      const g = gw[i] * w[i] + 1e-4 / Math.sqrt(n);
      const want = 1e-2 - (lr * g) / (Math.abs(g) + 1e-8);
      assert.ok(Math.abs(s1[i] - want) < 2e-7 + 1e-3 * lr, `${t.key}[${i}]: ${s1[i]} vs ${want}`);
    }
  }
  await trainer.release();
  await model.release();
});
