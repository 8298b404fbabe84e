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
import { crossEntropy } from "../../engine/trace/composites.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import { WeightContext } from "../../nn/context.js";
import { adapterDiffs, quietProgress, stopThenResume } from "../../testing/resume.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { fullFinetuneGradient } from "../increlora/testing.js";
import { layerSalt } from "../layer-seed.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer, shiftLabels } from "../train.js";
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
  assert.throws(
    () => parseRamtConfig({ ...CONFIG, threshold: 0.01 }, "cfg"),
    /^PeftConfigError: cfg: field "threshold" must be below mask_scale \(0\.01\), or every mask starts off, got 0\.01$/,
  );
  assert.throws(
    () => parseRamtConfig({ ...CONFIG, mask_scale: 1e-3 }, "cfg"),
    /cfg: field "threshold" must be below mask_scale \(0\.001\)/,
  );
  assert.throws(
    () => parseRamtConfig({ ...CONFIG, grad_drop_lambda: 1.5 }, "cfg"),
    /cfg: field "grad_drop_lambda" must be in \[0, 1\], got 1\.5/,
  );
  assert.throws(
    () => parseRamtConfig({ ...CONFIG, grad_drop_lambda: -0.1 }, "cfg"),
    /field "grad_drop_lambda" must be in \[0, 1\], got -0\.1/,
  );
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
    const r = hostTensor(
      "f32",
      [n],
      Float32Array.from({ length: n }, () => rng.next() * 0.01),
    );
    const back = unpackMask(packMask(r, TAU), [n], "t").data as Float32Array;
    (r.data as Float32Array).forEach((v, i) => {
      assert.equal(back[i], v > TAU ? 1 : 0, `n ${n}, entry ${i}`);
    });
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
      s.forEach((v, i) => {
        assert.equal(back[i], v > TAU ? 1 : 0);
      });
    }
    // Merge: θ ← M ⊙ θ, entry by entry.
    const merged = RAMT.merge?.(peft.info, a.config as RamtConfig, a.tensors) as Map<string, HostTensor>;
    for (const t of targets) {
      const w = model.weights.get(`${t.path}.weight`)?.data as Float32Array;
      const m = merged.get(`${t.path}.weight`)?.data as Float32Array;
      const s = a.tensors.get(scoresKey(t))?.data as Float32Array;
      s.forEach((v, i) => {
        assert.equal(m[i], v > TAU ? w[i] : 0);
      });
    }
    await model.release();
    await fresh.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// compare's encoder rows: a BERT classifier trained with R-AMT keeps its head with modules_to_save,
// and the folder (packed masks, no scores) must still hold the head and load with the same outputs.
test("RAMT on BERT classification: the modules_to_save head is saved beside the packed masks and reloads", async () => {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-ramt-cls-"));
  try {
    const cfg = { ...CONFIG, target_modules: ["query", "value"], init_weights: false, modules_to_save: ["classifier"] };
    const model = await loadTestModel("bert_seq_cls");
    const peft = PeftModel.create(model, cfg, { seed: 5 });
    const a = peft.adapter("default");
    const head = [...a.tensors.keys()].filter((k) => k.startsWith("classifier."));
    assert.ok(head.length > 0, "the head is in the adapter");
    // A head that differs from the base's, as after training.
    const moved = new Map(a.tensors);
    for (const k of head) {
      const t = a.tensors.get(k) as HostTensor;
      moved.set(k, { ...t, data: Float32Array.from(t.data as Float32Array, (v, i) => v + 0.01 * ((i % 7) - 3)) });
    }
    peft.setAdapterTensors("default", moved);
    const ids = randomIds(2, 5, 100);
    const before = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    peft.savePretrained(dir);
    const fresh = await loadTestModel("bert_seq_cls");
    const loaded = PeftModel.fromPretrained(fresh, dir);
    for (const k of head) assert.deepEqual(loaded.adapter("default").tensors.get(k)?.data, moved.get(k)?.data, k);
    assert.deepEqual((await loaded.forward({ inputIds: ids })).logits?.data, before);
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
  const g = trace((...xs) => {
    const opts = { adapterName: "default", tensor: (k: string) => xs[keys.indexOf(k)], rowMask: null, training: true, seed: null };
    const loss = RAMT.loss?.(peft.info, c, opts) as Tensor;
    return [loss, ...backward([loss], [onesLike(loss)], xs)];
  }, specs);
  const inputs = keys.map((k) =>
    hostTensor("f64", [...(a.tensors.get(k) as HostTensor).shape], Float64Array.from(a.tensors.get(k)?.data as Float32Array)),
  );
  const [value, ...grads] = interpret(g, inputs, { precision: "f64" });
  let total = 0;
  inputs.forEach((s, j) => {
    const d = s.data as Float64Array;
    const norm = Math.sqrt(d.reduce((x, v) => x + v * v, 0));
    total += norm;
    (grads[j].data as Float64Array).forEach((v, i) => {
      assert.ok(Math.abs(v - (0.5 * d[i]) / norm) < 1e-12, `${keys[j]}[${i}]`);
    });
  });
  assert.ok(Math.abs((value.data as Float64Array)[0] - 0.5 * total) < 1e-12);
  // STE: the cotangent of M reaches S unchanged.
  const ste = trace(
    (s, r) => {
      const m = straightThroughMask(s, TAU);
      return [m, ...backward([m], [r], [s])];
    },
    [spec("f64", [4]), spec("f64", [4])],
  );
  const [m, gs] = interpret(ste, [hostTensor("f64", [4], [0.01, 0.005, -3, 0.0051]), hostTensor("f64", [4], [0.5, -2, 7, 1e-9])], {
    precision: "f64",
  });
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

/**
 * a = ∂(CE + w·Σ‖S‖)/∂S and b = ∂(soft CE to the teacher)/∂S, independently: an f64 forward with the
 * mask linearised at S (no custom backward), the teacher the same model without masks, the soft
 * cross-entropy written out here.
 */
function referenceGradients(model: PreTrainedModel, peft: PeftModel, ids: number[][]) {
  const a = peft.adapter("default");
  const c = a.config as RamtConfig;
  const keys = ramtTargets(peft.info, c).map(scoresKey);
  const names = [...model.weights.keys()];
  const f64 = (t: HostTensor) => hostTensor("f64", [...t.shape], Float64Array.from(t.data as Float32Array));
  const idsT = hostTensor("i64", [ids.length, ids[0].length], BigInt64Array.from(ids.flat(), BigInt));
  const maskT = hostTensor("i64", idsT.shape, new BigInt64Array(idsT.data.length).fill(1n));
  const labelsT = shiftLabels(idsT);
  const inputs = [
    ...keys.map((k) => f64(a.tensors.get(k) as HostTensor)),
    ...names.map((n) => f64(model.weights.get(n) as HostTensor)),
    idsT,
    maskT,
    labelsT,
  ];
  const g = trace(
    (...xs) => {
      const scores = xs.slice(0, keys.length);
      const w = new Map(names.map((n, i) => [n, xs[keys.length + i]]));
      const [inIds, inMask, labels] = xs.slice(keys.length + names.length);
      const base = new WeightContext((n) => w.get(n), new Set(names));
      const student = model.traceForward(
        linearised(base, (k) => scores[keys.indexOf(k)], { info: peft.info, config: c, tensors: a.tensors }),
        { input_ids: inIds, attention_mask: inMask },
      ).logits as Tensor;
      const teacher = model.traceForward(base, { input_ids: inIds, attention_mask: inMask }).logits as Tensor;
      let norms = scores[0].square().sum().sqrt();
      for (const s of scores.slice(1)) norms = norms.add(s.square().sum().sqrt());
      const la = crossEntropy(student, labels).add(norms.mul(c.maskLossWeight));
      const valid = labels.ne(-100).cast(student.dtype);
      const lb = teacher.softmax(-1).mul(student.logSoftmax(-1)).sum(-1).neg().mul(valid).sum().div(valid.sum());
      return [lb, ...backward([la], [onesLike(la)], scores), ...backward([lb], [onesLike(lb)], scores)];
    },
    inputs.map((t) => spec(t.dtype === "f64" ? "f32" : t.dtype, t.shape)),
  );
  const [lb, ...rest] = interpret(g, inputs, { precision: "f64" });
  const out = new Map<string, { a: Float64Array; b: Float64Array }>();
  keys.forEach((k, i) => {
    out.set(k, { a: rest[i].data as Float64Array, b: rest[keys.length + i].data as Float64Array });
  });
  return { grads: out, distill: (lb.data as Float64Array)[0] };
}

test("RAMT step: the update applies a dropped where it disagrees with b, drawn from the step's seed (λ = 1 and 0.4)", async () => {
  for (const lambda of [1, 0.4]) {
    const model = await loadTestModel("llama_basic");
    // Random scores: a quarter of the entries off, so the student differs from the teacher and b ≠ 0.
    const peft = PeftModel.create(
      model,
      { ...CONFIG, init_weights: false, grad_drop_lambda: lambda, mask_loss_weight: 1e-2 },
      { seed: 11 },
    );
    const targets = ramtTargets(peft.info, peft.adapter("default").config as RamtConfig);
    const ids = randomIds(2, 6, 100);
    const ref = referenceGradients(model, peft, ids);
    const before = new Map(
      targets.map((t) => [t.key, Float32Array.from(peft.adapter("default").tensors.get(scoresKey(t))?.data as Float32Array)]),
    );
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd" } });
    const seed = 77;
    const res = await trainer.train({ inputIds: ids, labels: ids }, { lr: 1, seed });
    assert.ok(
      Math.abs(res.metrics[DISTILL_TERM] - ref.distill) < 1e-5 * Math.abs(ref.distill) + 1e-7,
      `distill ${res.metrics[DISTILL_TERM]} vs ${ref.distill}`,
    );
    assert.ok(ref.distill > 1e-3, "the teacher differs from the student");
    let disagree = 0;
    let dropped = 0;
    let edge = 0;
    for (const t of targets) {
      const { a, b } = ref.grads.get(scoresKey(t)) as { a: Float64Array; b: Float64Array };
      const s32 = reduceSeed(BigInt(seed + layerSalt(t.key, 3)));
      const s0 = before.get(t.key) as Float32Array;
      const s1 = peft.adapter("default").tensors.get(scoresKey(t))?.data as Float32Array;
      const scale = a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      for (let i = 0; i < a.length; i++) {
        const p = (Math.sign(a[i]) * (a[i] + b[i])) / (Math.abs(a[i]) + Math.abs(b[i]) + 1e-8) / 2 + 0.5;
        const u = uniformAt(s32, i);
        // f32 against f64 gradients: a draw within 1e-4 of P may fall either way.
        if (Math.abs(p - u) < 1e-4) {
          edge++;
          continue;
        }
        if (Math.sign(a[i]) !== Math.sign(b[i])) disagree++;
        const keep = p > u;
        if (!keep) dropped++;
        const want = a[i] * (keep ? 1 : 1 - lambda);
        const got = s0[i] - s1[i];
        assert.ok(
          Math.abs(got - want) < 1e-4 * scale + 3e-9,
          `λ ${lambda}, ${t.key}[${i}]: applied ${got}, want ${want} (a ${a[i]}, b ${b[i]}, P ${p}, U ${u})`,
        );
      }
    }
    assert.ok(disagree > 100 && dropped > 20, `disagreeing ${disagree}, dropped ${dropped}`);
    assert.ok(edge < 5, `${edge} draws within 1e-4 of P`);
    await trainer.release();
    await model.release();
  }
});

test("RAMT: a run stopped and resumed ends where an uninterrupted one does (the dropout's noise comes from the step's seed)", async () => {
  const root = mkdtempSync(join(tmpdir(), "peftkit-ramt-resume-"));
  try {
    const source: BatchSource = {
      batchesPerEpoch: 4,
      batch: (epoch, index) => {
        const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
        return { inputIds: ids, labels: ids, tokens: 12 };
      },
    };
    const target = async () => {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(model, { ...CONFIG, init_weights: false, grad_drop_lambda: 0.7 }, { seed: 2 });
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 6 });
      return { trainer, peft, causal: true, classification: false, model };
    };
    const args = (dir: string) => ({ outputDir: dir, maxSteps: 6, lr: 0.003, seed: 3, saveSteps: 1 });
    const a = await target();
    const start = new Map([...a.peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    await new Trainer(a, source, null, args(join(root, "full")), quietProgress()).run();
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 3);
    for (const [k, d] of adapterDiffs(a, c)) assert.equal(d, 0, `${k}: ${d}`);
    // Masks moved during the run (entries crossed τ both ways).
    let flips = 0;
    for (const [k, t] of a.peft.adapter("default").tensors) {
      const s0 = start.get(k) as Float32Array;
      (t.data as Float32Array).forEach((v, i) => {
        if (v > TAU !== s0[i] > TAU) flips++;
      });
    }
    assert.ok(flips > 0, "no mask changed");
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
