/**
 * Grafting's mask-score update on a tiny model against the chain rule by finite differences:
 * with ḡ from the compiled gradient graph (the float64 interpreter), one update with lr = 1 moves
 * S by −∂L/∂S, where L(S) is the mean next-token loss of θ_pre + γ(S) ⊙ τ, computed here by a plain
 * float64 forward and host cross-entropy (no autodiff, none of the graft code's loss).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { interpret } from "../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { trace } from "../engine/trace/trace.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { WeightContext } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import type { TrainBatch } from "../tuners/train.js";
import { Rng } from "../util/rng.js";
import { GraftGradients, graftableWeights } from "./graft.js";
import { gammaOf, updateScores } from "./graft-mask.js";

const IDS = [
  [5, 17, 33, 90, 41, 7],
  [12, 200, 3, 64, 0, 0],
];
const LENS = [6, 4];
const BATCH: TrainBatch = {
  inputIds: IDS,
  attentionMask: IDS.map((r, i) => r.map((_, j) => (j < LENS[i] ? 1 : 0))),
  labels: IDS.map((r, i) => r.map((v, j) => (j < LENS[i] ? v : -100))),
};

/** Mean next-token cross-entropy of a float64 forward at `weights`. */
function lossF64(model: PreTrainedModel, weights: Map<string, HostTensor>): number {
  const names = [...weights.keys()];
  const [B, T] = [IDS.length, IDS[0].length];
  const g = trace(
    (...xs) => {
      const w = new Map(names.map((n, i) => [n, xs[i]]));
      const out = model.traceForward(new WeightContext((n) => w.get(n), new Set(names)), {
        input_ids: xs[names.length],
        attention_mask: xs[names.length + 1],
      });
      return { logits: out.logits as NonNullable<typeof out.logits> };
    },
    [
      ...names.map((n) => ({ dtype: "f32" as const, shape: (weights.get(n) as HostTensor).shape })),
      { dtype: "i64" as const, shape: [B, T] },
      { dtype: "i64" as const, shape: [B, T] },
    ],
  );
  const idT = hostTensor("i64", [B, T], BigInt64Array.from(IDS.flat(), BigInt));
  const maskT = hostTensor("i64", [B, T], BigInt64Array.from((BATCH.attentionMask as number[][]).flat(), BigInt));
  const [logits] = interpret(g, [...names.map((n) => weights.get(n) as HostTensor), idT, maskT], { precision: "f64" });
  const [, , V] = logits.shape;
  const z = logits.data as Float64Array;
  const labels = BATCH.labels as number[][];
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

test("graft: one mask update with lr 1 is −∂L/∂S of L(θ_pre + γ(S)⊙τ), by central differences (float64)", async () => {
  const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
  try {
    const names = graftableWeights(model, ["q_proj", "down_proj"]);
    assert.ok(names.length >= 2 && names.every((n) => /\.(q_proj|down_proj)\.weight$/.test(n)), names.join(", "));
    const rng = new Rng(11);
    const b = 0.3;
    const g = names.map((n) => {
      const w = model.weights.get(n) as HostTensor;
      const size = w.data.length;
      return {
        name: n,
        shape: w.shape,
        pre: Float64Array.from(w.data as Float32Array),
        tau: Float32Array.from({ length: size }, () => 0.05 * rng.normal()),
        gamma0: Uint8Array.from({ length: size }, () => (rng.next() < 0.3 ? 1 : 0)),
        scores: Float32Array.from({ length: size }, () => rng.uniform(-1, 1)),
      };
    });
    // θ(S) = θ_pre + γ(S)⊙τ in float64 (the interpreter takes f64 data under an f32 declaration).
    const at = (perturb?: { t: number; i: number; h: number }) =>
      new Map(
        [...model.weights].map(([n, w]) => {
          const k = names.indexOf(n);
          if (k < 0) return [n, hostTensor("f64", w.shape, Float64Array.from(w.data as Float32Array))];
          const x = g[k];
          const out = new Float64Array(x.pre.length);
          for (let i = 0; i < out.length; i++) {
            const s = x.scores[i] + (perturb && perturb.t === k && perturb.i === i ? perturb.h : 0);
            out[i] = x.pre[i] + gammaOf(x.gamma0[i], s, b) * x.tau[i];
          }
          return [n, hostTensor("f64", w.shape, out)];
        }),
      );
    const grads = await GraftGradients.create(model, names, { backend: "interpreter", precision: "f64" });
    const { grads: mean, loss } = await grads.mean(at(), [BATCH]);
    await grads.release();
    assert.ok(Math.abs(loss - lossF64(model, at())) < 1e-9, `the gradient graph's loss ${loss}`);
    const h = 1e-4;
    let checked = 0;
    for (let k = 0; k < g.length; k++) {
      const x = g[k];
      const next = Float32Array.from(x.scores);
      updateScores(next, x.gamma0, mean[k], x.tau, 1, b);
      for (const i of [0, 5, Math.floor(x.scores.length / 2) + 1, x.scores.length - 1]) {
        const fd = (lossF64(model, at({ t: k, i, h })) - lossF64(model, at({ t: k, i, h: -h }))) / (2 * h);
        const step = -(next[i] - x.scores[i]);
        // The update is stored in f32: compare within its rounding, and the FD truncation.
        assert.ok(
          Math.abs(step - fd) <= 1e-6 * Math.abs(fd) + 2e-7 * Math.abs(x.scores[i]) + 1e-10,
          `${x.name}[${i}]: update ${step} vs ∂L/∂S ${fd}`,
        );
        if (Math.abs(fd) > 1e-8) checked++;
      }
    }
    assert.ok(checked >= 12, `non-trivial derivatives checked: ${checked}`);
  } finally {
    await model.release();
  }
});
