/**
 * The calibration pass against direct float64 computations: Σ xᵀx from the layer inputs captured
 * by a plain forward in the float64 interpreter and added up on the host; Σ ∂L/∂W and Σ (∂L/∂W)²
 * from central finite differences of the mean cross-entropy, computed on the host from the
 * interpreter's float64 logits (no autodiff and none of the pass's loss code involved).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { interpret } from "../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import { trace } from "../engine/trace/trace.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { type LinearOptions, WeightContext } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { type CalibrationRequest, DelegatingContext } from "../tuners/tuner.js";
import type { Matrix } from "../util/linalg.js";
import { type CalibrationBatch, CalibrationError, runCalibration } from "./index.js";

const LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"];

/** Two right-padded batches of a causal LM (labels −100 at padding), fixed values. */
function batches(): CalibrationBatch[] {
  const ids1 = [
    [5, 17, 33, 90, 41, 7],
    [12, 200, 3, 64, 0, 0],
  ];
  const ids2 = [
    [9, 8, 250, 1, 0, 0],
    [77, 31, 2, 0, 0, 0],
    [100, 101, 102, 103, 104, 105],
  ];
  const mk = (ids: number[][], lens: number[]): CalibrationBatch => ({
    inputIds: ids,
    attentionMask: ids.map((r, i) => r.map((_, j) => (j < lens[i] ? 1 : 0))),
    labels: ids.map((r, i) => r.map((v, j) => (j < lens[i] ? v : -100))),
  });
  return [mk(ids1, [6, 4]), mk(ids2, [4, 3, 6])];
}

class Capture extends DelegatingContext {
  readonly seen = new Map<string, Tensor>();
  constructor(
    inner: DelegatingContext | WeightContext,
    private readonly layers: readonly string[],
  ) {
    super(inner);
  }
  override linear(path: string, x: Tensor, opts?: LinearOptions): Tensor {
    if (this.layers.includes(path)) this.seen.set(path, x);
    return super.linear(path, x, opts);
  }
}

/** A plain forward in the float64 interpreter: logits and the inputs of `layers`, as f64 host tensors. */
function forwardF64(
  model: PreTrainedModel,
  weights: Map<string, HostTensor>,
  b: CalibrationBatch,
  layers: readonly string[] = LAYERS,
): Record<string, HostTensor> {
  const names = [...weights.keys()];
  const ids = b.inputIds as number[][];
  const mask = b.attentionMask as number[][];
  const [B, T] = [ids.length, ids[0].length];
  const g = trace(
    (...xs) => {
      const w = new Map(names.map((n, i) => [n, xs[i]]));
      const ctx = new Capture(new WeightContext((n) => w.get(n), new Set(names)), layers);
      const out = model.traceForward(ctx, { input_ids: xs[names.length], attention_mask: xs[names.length + 1] });
      const o: Record<string, Tensor> = { logits: out.logits as Tensor };
      for (const [p, x] of ctx.seen) o[p] = x;
      return o;
    },
    [
      ...names.map((n) => ({ dtype: "f32" as const, shape: (weights.get(n) as HostTensor).shape })),
      { dtype: "i64" as const, shape: [B, T] },
      { dtype: "i64" as const, shape: [B, T] },
    ],
  );
  const idT = hostTensor("i64", [B, T], BigInt64Array.from(ids.flat(), BigInt));
  const maskT = hostTensor("i64", [B, T], BigInt64Array.from(mask.flat(), BigInt));
  const res = interpret(g, [...names.map((n) => weights.get(n) as HostTensor), idT, maskT], { precision: "f64" });
  return Object.fromEntries(g.outputs.map((o, i) => [o.name, res[i]]));
}

/** Σ xᵀx over the non-padding rows, optionally each example divided by |max| of its values. */
function gramF64(x: HostTensor, mask: number[][], exampleMax: boolean): Float64Array {
  const [B, T, d] = x.shape;
  const v = x.data as Float64Array;
  const out = new Float64Array(d * d);
  for (let b = 0; b < B; b++) {
    let peak = -Infinity;
    for (let t = 0; t < T; t++) if (mask[b][t]) for (let i = 0; i < d; i++) peak = Math.max(peak, v[(b * T + t) * d + i]);
    const s = exampleMax ? 1 / Math.abs(peak) : 1;
    for (let t = 0; t < T; t++) {
      if (!mask[b][t]) continue;
      const row = (b * T + t) * d;
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) out[i * d + j] += v[row + i] * s * v[row + j] * s;
    }
  }
  return out;
}

/** Mean next-token cross-entropy over labelled positions, on the host from f64 logits. */
function lossF64(logits: HostTensor, labels: number[][]): number {
  const [B, T, V] = logits.shape;
  const z = logits.data as Float64Array;
  let sum = 0;
  let n = 0;
  for (let b = 0; b < B; b++)
    for (let t = 0; t + 1 < T; t++) {
      const y = labels[b][t + 1];
      if (y === -100) continue;
      const o = (b * T + t) * V;
      let m = -Infinity;
      for (let k = 0; k < V; k++) m = Math.max(m, z[o + k]);
      let s = 0;
      for (let k = 0; k < V; k++) s += Math.exp(z[o + k] - m);
      sum += m + Math.log(s) - z[o + y];
      n++;
    }
  return sum / n;
}

function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < want.length; i++) {
    d += (got[i] - want[i]) ** 2;
    n += want[i] ** 2;
  }
  return Math.sqrt(d / n);
}

const REQUEST: CalibrationRequest = { layers: LAYERS, inputCovariance: true, gradientSum: true, gradientSquareSum: true };

for (const [name, layers] of [
  ["llama_basic", LAYERS],
  // GPT-2's Conv1D stores W as [in, out]: the covariance is [in, in] = rows of W, gradients in W's stored layout.
  ["gpt2", ["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"]],
] as const) {
  test(`calibration (${name}): Σ xᵀx (padding masked) and Σ∇W, Σ(∇W)² match float64 references; ORT within f32 error`, async () => {
    const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, name));
    try {
      const data = batches();
      const request = { ...REQUEST, layers };
      const ort = await runCalibration(model, data, request);
      const f64 = await runCalibration(model, data, request, { compile: { backend: "interpreter", precision: "f64" } });
      assert.equal(ort.batches, 2);
      assert.equal(ort.samples, 5);
      assert.equal(ort.tokens, 6 + 4 + 4 + 3 + 6);

      // Covariances: captured inputs, host sums.
      for (const p of layers) {
        const want = new Float64Array(ort.inputCovariance.get(p)?.data.length ?? 0);
        for (const b of data) {
          const x = forwardF64(model, model.weights, b, layers)[p];
          assert.equal(want.length, x.shape[2] ** 2, `${p}: covariance is [in, in]`);
          const g = gramF64(x, b.attentionMask as number[][], false);
          for (let i = 0; i < g.length; i++) want[i] += g[i];
        }
        const c64 = f64.inputCovariance.get(p)?.data as Float64Array;
        assert.ok(relErr(c64, want) < 1e-12, `${p}: f64 covariance ${relErr(c64, want)}`);
        assert.ok(relErr(ort.inputCovariance.get(p)?.data as Float64Array, want) < 1e-5, `${p}: ORT covariance`);
      }

      // Gradients: central differences of the host loss at a few entries of each weight.
      const h = 1e-5;
      for (const p of layers) {
        const wname = `${p}.weight`;
        const w = model.weights.get(wname) as HostTensor;
        const n = w.data.length;
        const g64s = f64.gradientSum.get(wname) as Matrix;
        assert.deepEqual([g64s.rows, g64s.cols], w.shape, `${wname}: gradient in the stored layout`);
        for (const k of [0, 7, Math.floor(n / 2) + 3, n - 1]) {
          let sum = 0;
          let sq = 0;
          for (const b of data) {
            const at = (delta: number) => {
              const pert = new Float64Array(w.data as Float32Array);
              pert[k] += delta;
              const weights = new Map(model.weights);
              weights.set(wname, hostTensor("f64", w.shape, pert));
              return lossF64(forwardF64(model, weights, b, layers).logits, b.labels as number[][]);
            };
            const gk = (at(h) - at(-h)) / (2 * h);
            sum += gk;
            sq += gk * gk;
          }
          const g64 = g64s.data[k];
          const q64 = f64.gradientSquareSum.get(wname)?.data[k] as number;
          assert.ok(Math.abs(g64 - sum) <= 1e-6 * Math.max(Math.abs(sum), 1e-3), `${wname}[${k}]: Σ∇W ${g64} vs finite differences ${sum}`);
          assert.ok(Math.abs(q64 - sq) <= 1e-6 * Math.max(sq, 1e-6), `${wname}[${k}]: Σ(∇W)² ${q64} vs finite differences ${sq}`);
        }
        assert.ok(relErr(ort.gradientSum.get(wname)?.data as Float64Array, g64s.data) < 1e-4);
        assert.ok(
          relErr(ort.gradientSquareSum.get(wname)?.data as Float64Array, f64.gradientSquareSum.get(wname)?.data as Float64Array) < 1e-4,
        );
      }
    } finally {
      await model.release();
    }
  });
}

test("calibration: exampleMax scaling divides each example's rows by |max| of its own non-padding inputs (CorDA's hook)", async () => {
  const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
  try {
    const data = batches();
    const req: CalibrationRequest = { layers: LAYERS, inputCovariance: true, inputScaling: "exampleMax" };
    const f64 = await runCalibration(model, data, req, { compile: { backend: "interpreter", precision: "f64" } });
    assert.equal(f64.gradientSum.size, 0);
    for (const p of LAYERS) {
      const want = new Float64Array(f64.inputCovariance.get(p)?.data.length ?? 0);
      for (const b of data) {
        const g = gramF64(forwardF64(model, model.weights, b)[p], b.attentionMask as number[][], true);
        for (let i = 0; i < g.length; i++) want[i] += g[i];
      }
      assert.ok(relErr(f64.inputCovariance.get(p)?.data as Float64Array, want) < 1e-12, p);
    }
  } finally {
    await model.release();
  }
});

test("calibration: deterministic, streams one batch at a time, and refuses bad requests in one line", async () => {
  const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
  try {
    const data = batches();
    let pulled = 0;
    let done = 0;
    let ahead = 0;
    async function* stream(): AsyncGenerator<CalibrationBatch> {
      for (let i = 0; i < 6; i++) {
        pulled++;
        ahead = Math.max(ahead, pulled - done);
        yield data[i % 2];
      }
    }
    const a = await runCalibration(model, stream(), REQUEST, { onProgress: (p) => (done = p.batches) });
    assert.equal(ahead, 1, "the pass holds one batch at a time");
    assert.equal(a.batches, 6);
    const b = await runCalibration(model, [...data, ...data, ...data], REQUEST);
    for (const p of LAYERS) {
      assert.deepEqual(a.inputCovariance.get(p)?.data, b.inputCovariance.get(p)?.data);
      assert.deepEqual(a.gradientSum.get(`${p}.weight`)?.data, b.gradientSum.get(`${p}.weight`)?.data);
    }

    await assert.rejects(runCalibration(model, data, { layers: ["model.layers.9.mlp.up_proj"], inputCovariance: true }), {
      name: "CalibrationError",
      message: 'calibration: the model has no linear layer "model.layers.9.mlp.up_proj"',
    });
    await assert.rejects(runCalibration(model, data, { layers: LAYERS }), CalibrationError);
    await assert.rejects(runCalibration(model, [], { layers: LAYERS, inputCovariance: true }), /no batches/);
    const unlabelled = data.map(({ labels: _l, ...rest }) => rest);
    await assert.rejects(runCalibration(model, unlabelled, { layers: LAYERS, gradientSum: true }), /need batches with labels/);
    // Covariances alone need no labels.
    const c = await runCalibration(model, unlabelled, { layers: LAYERS, inputCovariance: true });
    const thrice = b.inputCovariance.get(LAYERS[0]) as Matrix;
    const third = thrice.data.map((v) => v / 3);
    assert.ok(relErr(c.inputCovariance.get(LAYERS[0])?.data as Float64Array, third) < 1e-14);
  } finally {
    await model.release();
  }
});
