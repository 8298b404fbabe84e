/**
 * MeZO's defining behaviour against independent references:
 * - the seeds tile one stream (tensor i's z is the step stream shifted by the elements before it);
 * - the update equals θ − lr·g·z with g the finite difference (L(θ+εz) − L(θ−εz))/2ε computed
 *   here in the float64 interpreter from the model's own forward, with z read off the one stream
 *   (not through tensorSeeds), on the interpreter (tight) and on ONNX Runtime (f32);
 * - g → ⟨∇L, z⟩ as ε → 0, with ∇L from the interpreter's autodiff;
 * - Sparse MeZO leaves every entry with |θ| > h untouched and h is the per-tensor quantile.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { backward } from "../../engine/autodiff/grad.js";
import { onesLike } from "../../engine/autodiff/rules.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { Graph } from "../../engine/ir/graph.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { normalAt } from "../../engine/ir/random.js";
import { crossEntropy } from "../../engine/trace/composites.js";
import { withGraph } from "../../engine/trace/context.js";
import { Tensor } from "../../engine/trace/tensor.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { WeightContext } from "../../nn/context.js";
import { GOLDEN_MODELS } from "../../testing/paths.js";
import { PeftModel } from "../../tuners/peft-model.js";
import { prepareBatch } from "../../tuners/train.js";
import { methodConfig } from "../methods.js";
import { stepSeed, tensorSeeds } from "./seeds.js";
import { checkSparsity, magnitudeThreshold } from "./sparse.js";
import { ZoTrainer } from "./trainer.js";

const SEQ = [[5, 17, 99, 3, 42, 7, 7, 120, 64, 1]];
const BATCH = { inputIds: SEQ, labels: SEQ };
const INTERP = { backend: "interpreter", precision: "f64" } as const;

function tinyModel(seed: number, dir = "llama_gqa_tied"): PreTrainedModel {
  const config = JSON.parse(readFileSync(join(GOLDEN_MODELS, dir, "config.json"), "utf8"));
  return PreTrainedModel.fromConfig(config, "causal_lm", { seed });
}

/** Distinct weights in model order (a tied weight under its first name), as ZoTrainer.full orders them. */
function distinct(model: PreTrainedModel): { names: string[]; alias: (n: string) => string } {
  const first = new Map<HostTensor, string>();
  const names: string[] = [];
  for (const [k, t] of model.weights)
    if (!first.has(t)) {
      first.set(t, k);
      names.push(k);
    }
  return { names, alias: (n) => first.get(model.weights.get(n) as HostTensor) as string };
}

/**
 * The loss and (optionally) its gradient at the given f64 weights, from the model's forward traced
 * here on its own and run by the interpreter in f64.
 */
function reference(
  model: PreTrainedModel,
  weights: Map<string, Float64Array>,
  grad = false,
): { loss: number; grads: Map<string, Float64Array> } {
  const { names, alias } = distinct(model);
  const batch = prepareBatch(model.head, BATCH);
  const g = new Graph();
  const wrt: Tensor[] = [];
  withGraph(g, () => {
    const inputs: Record<string, Tensor> = {};
    for (const n of names) {
      const t = model.weights.get(n) as HostTensor;
      inputs[n] = new Tensor(g, g.addInput(`w.${n}`, { dtype: "f32", shape: t.shape }));
      wrt.push(inputs[n]);
    }
    const ids = new Tensor(g, g.addInput("ids", { dtype: "i64", shape: batch.input_ids.shape }));
    const mask = new Tensor(g, g.addInput("mask", { dtype: "i64", shape: batch.attention_mask.shape }));
    const labels = new Tensor(g, g.addInput("labels", { dtype: "i64", shape: batch.labels.shape }));
    const start = g.nodes.length;
    const out = model.traceForward(new WeightContext((n) => inputs[alias(n)], new Set(model.weights.keys())), {
      input_ids: ids,
      attention_mask: mask,
    });
    const loss = crossEntropy(out.logits as Tensor, labels, { ignoreIndex: -100 });
    g.addOutput("loss", loss.id);
    if (grad)
      backward([loss], [onesLike(loss)], wrt, start).forEach((t, i) => {
        g.addOutput(`g.${names[i]}`, t.id);
      });
  });
  const feeds: Record<string, HostTensor> = { ids: batch.input_ids, mask: batch.attention_mask, labels: batch.labels };
  for (const n of names) feeds[`w.${n}`] = hostTensor("f64", [...(model.weights.get(n) as HostTensor).shape], weights.get(n));
  const outs = interpret(g, feeds, { precision: "f64" });
  const grads = new Map<string, Float64Array>();
  if (grad)
    names.forEach((n, i) => {
      grads.set(n, Float64Array.from(outs[1 + i].data as Float64Array));
    });
  return { loss: Number(outs[0].data[0]), grads };
}

/** z of every distinct weight for a step seed, read off ONE stream: tensor i starts after the elements before it. */
function streamZ(model: PreTrainedModel, seed: number): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  let off = 0;
  for (const n of distinct(model).names) {
    const len = (model.weights.get(n) as HostTensor).data.length;
    out.set(
      n,
      Float64Array.from({ length: len }, (_, j) => normalAt(seed, off + j)),
    );
    off += len;
  }
  return out;
}

function snapshot(model: PreTrainedModel): Map<string, Float64Array> {
  return new Map(distinct(model).names.map((n) => [n, Float64Array.from((model.weights.get(n) as HostTensor).data as Float32Array)]));
}

/** The expected update from the independent finite difference. */
function expectedStep(model: PreTrainedModel, seed: number, eps: number, lr: number) {
  const theta = snapshot(model);
  const z = streamZ(model, seed);
  const shifted = (sign: number) =>
    new Map([...theta].map(([n, t]) => [n, Float64Array.from(t, (v, j) => v + sign * eps * (z.get(n) as Float64Array)[j])]));
  const g = (reference(model, shifted(1)).loss - reference(model, shifted(-1)).loss) / (2 * eps);
  const after = new Map([...theta].map(([n, t]) => [n, Float64Array.from(t, (v, j) => v - lr * g * (z.get(n) as Float64Array)[j])]));
  return { g, theta, after, z };
}

describe("MeZO", () => {
  test("per-tensor seeds tile one stream: tensor i's z is the step stream from Σ earlier sizes", () => {
    const sizes = [7, 1000, 3, 50000];
    const seeds = tensorSeeds(123456789, sizes);
    let off = 0;
    sizes.forEach((n, i) => {
      for (const j of [0, 1, n - 1]) assert.equal(normalAt(seeds[i], j), normalAt(123456789, off + j), `tensor ${i} element ${j}`);
      off += n;
    });
    assert.notEqual(stepSeed(42, 0), stepSeed(42, 1));
    assert.equal(stepSeed(42, 7), stepSeed(42, 7));
  });

  test("the update is θ − lr·g·z with g the f64 finite difference of the model's loss (interpreter: 1e-9; ONNX Runtime: f32)", async () => {
    const eps = 1e-3;
    const lr = 1e-2;
    const seed = stepSeed(7, 0);
    // chunk 100: the tied head runs in row blocks of the perturbed embedding (llama: [out, in],
    // blocks of output features; gpt2: [in, out] Conv1D, blocks of inputs summed); the lookup always
    // perturbs only the rows it reads
    for (const [compile, chunk, dir] of [
      [INTERP, undefined, "llama_gqa_tied"],
      [INTERP, 100, "llama_gqa_tied"],
      [INTERP, 100, "gpt2"],
      [{}, undefined, "llama_gqa_tied"],
    ] as const) {
      const model = tinyModel(11, dir);
      const want = expectedStep(model, seed, eps, lr);
      const t = await ZoTrainer.full(model, { compile, chunk });
      const res = await t.train(BATCH, { lr, eps, seed });
      const exact = compile === INTERP;
      const gTol = exact ? 1e-9 * Math.max(1, Math.abs(want.g)) : 2e-2 * Math.abs(want.g) + 1e-3;
      assert.ok(Math.abs(res.projectedGrad - want.g) <= gTol, `g ${res.projectedGrad} vs finite difference ${want.g}`);
      assert.ok(Math.abs(want.g) > 1e-2, `a degenerate test: g = ${want.g}`);
      let moved = 0;
      for (const [n, exp] of want.after) {
        const got = (model.weights.get(n) as HostTensor).data as Float32Array;
        const before = want.theta.get(n) as Float64Array;
        for (let j = 0; j < got.length; j++) {
          // the f32 store rounds θ′; g carries its own error into the step (the interpreter's ~1e-9
          // relative: f32 ε, f64 sums; ORT's f32 forwards), which shows where θ′ ≈ 0 cancels
          const step = before[j] - exp[j];
          const tol = 1e-7 * Math.abs(exp[j]) + 1e-12 + (exact ? 1e-8 : 2.5e-2) * Math.abs(step);
          assert.ok(Math.abs(got[j] - exp[j]) <= tol, `${n}[${j}]: ${got[j]} vs ${exp[j]} (step ${step})`);
          if (got[j] !== Math.fround(before[j])) moved++;
        }
      }
      assert.ok(moved > 0.99 * [...want.theta.values()].reduce((a, t) => a + t.length, 0), `only ${moved} entries moved`);
      if (dir === "llama_gqa_tied") assert.equal(model.weights.get("lm_head.weight"), model.weights.get("model.embed_tokens.weight"));
      await t.release();
      await model.release();
    }
  });

  test("g → ⟨∇L, z⟩ as ε → 0 (∇L from the interpreter's autodiff)", async () => {
    const model = tinyModel(5);
    const seed = stepSeed(3, 4);
    const { grads } = reference(model, snapshot(model), true);
    const z = streamZ(model, seed);
    let dir = 0;
    for (const [n, gr] of grads)
      gr.forEach((v, j) => {
        dir += v * (z.get(n) as Float64Array)[j];
      });
    const t = await ZoTrainer.full(model, { compile: INTERP });
    const prepared = prepareBatch(model.head, BATCH);
    const errs: number[] = [];
    for (const eps of [1e-3, 1e-4, 1e-5]) {
      const r = await t.step.evaluate(prepared, { eps, seed });
      errs.push(Math.abs(r.projectedGrad - dir));
    }
    // central differences: O(ε²)
    assert.ok(errs[1] < errs[0] / 20 && errs[2] < errs[1] / 20, `errors ${errs} (⟨∇L, z⟩ = ${dir})`);
    assert.ok(errs[2] < 1e-6 * Math.max(1, Math.abs(dir)), `errors ${errs} (⟨∇L, z⟩ = ${dir})`);
    await t.release();
    await model.release();
  });

  test("Sparse MeZO: h is the per-tensor quantile; entries with |θ| > h stay bit-identical, the others move", async () => {
    const model = tinyModel(9);
    const before = snapshot(model);
    const t = await ZoTrainer.full(model, { sparsity: 0.6 });
    const h = t.step.thresholds as Record<string, number>;
    let moved = 0;
    let small = 0;
    for (const [n, th] of Object.entries(h)) {
      const abs = Float64Array.from(before.get(n) as Float64Array, Math.abs).sort();
      const keep = Math.ceil(0.4 * abs.length);
      if (abs.every((v) => v === 0)) assert.equal(th, Number.POSITIVE_INFINITY, n);
      else assert.equal(th, abs[keep - 1], n);
    }
    await t.train(BATCH, { lr: 1e-2, eps: 1e-3, seed: stepSeed(1, 0) });
    for (const [n, b] of before) {
      const got = (model.weights.get(n) as HostTensor).data as Float32Array;
      for (let j = 0; j < got.length; j++) {
        if (Math.abs(b[j]) > h[n]) assert.equal(got[j], b[j], `${n}[${j}] (|θ| > h) moved`);
        else {
          small++;
          if (got[j] !== b[j]) moved++;
        }
      }
    }
    assert.ok(moved > 0.95 * small, `${moved} of ${small} small entries moved`);
    await t.release();
    await model.release();
  });

  test("z of a large tensor generated in row blocks, and the forwards split over two runs, give the same losses and update", async () => {
    const runs: Float32Array[][] = [];
    const gs: number[] = [];
    for (const [chunk, split] of [
      [undefined, false],
      [100, false],
      [undefined, true],
    ] as const) {
      const model = tinyModel(6);
      const t = await ZoTrainer.full(model, { compile: INTERP, chunk, split, sparsity: 0.3 });
      gs.push((await t.train(BATCH, { lr: 1e-2, eps: 1e-3, seed: stepSeed(8, 2) })).projectedGrad);
      runs.push(Object.values(t.tensors).map((x) => Float32Array.from(x.data as Float32Array)));
      await t.release();
      await model.release();
    }
    assert.equal(gs[0], gs[1]);
    assert.equal(gs[0], gs[2]);
    runs[0].forEach((a, i) => {
      assert.deepEqual(runs[1][i], a);
      assert.deepEqual(runs[2][i], a);
    });
  });

  test("Sparse MeZO's sparsity must be in [0, 1) (the error names the flag)", () => {
    assert.throws(() => checkSparsity(1), /--zo-sparsity 1: want a share of entries left unperturbed in \[0, 1\)/);
    assert.throws(() => checkSparsity(-0.1), /--zo-sparsity -0.1/);
    assert.equal(magnitudeThreshold(new Float32Array([3, -1, 2, 0.5]), 0.5), 1);
  });

  test("over a LoRA adapter: only the adapter's tensors move (A and B), the base weights stay", async () => {
    const model = tinyModel(4);
    const base = snapshot(model);
    const peft = PeftModel.create(model, methodConfig("lora", { r: 2, alpha: 4, dropout: 0, target: ["q_proj", "v_proj"] }), { seed: 1 });
    const a0 = new Map([...peft.adapter("default").tensors].map(([k, v]) => [k, Float32Array.from(v.data as Float32Array)]));
    const t = await ZoTrainer.adapter(peft);
    const r = await t.train(BATCH, { lr: 1e-2, eps: 1e-2, seed: stepSeed(2, 0) });
    assert.ok(Number.isFinite(r.projectedGrad) && r.projectedGrad !== 0);
    for (const [n, b] of base) assert.deepEqual(Float64Array.from((model.weights.get(n) as HostTensor).data as Float32Array), b, n);
    for (const [k, v] of peft.adapter("default").tensors)
      assert.ok(
        (v.data as Float32Array).some((x, j) => x !== (a0.get(k) as Float32Array)[j]),
        `${k} did not move`,
      );
    await t.release();
    await model.release();
  });
});
