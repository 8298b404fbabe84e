import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { type TensorDecl, TrainStep } from "../engine/optim/train-step.js";
import { crossEntropy } from "../engine/trace/composites.js";
import { matrix } from "../linalg/matrix.js";
import { svd } from "../linalg/svd.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { WeightContext } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { prepareBatch, stepBatchDecls, stepModelInputs } from "../tuners/train.js";
import { GradNormTrainer } from "./gradnorm-lorp.js";
import { GradNormError } from "./gradnorm-projector.js";

const CONFIG = JSON.parse(readFileSync(join(GOLDEN_MODELS, "llama_basic", "config.json"), "utf8"));
const TARGETS = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"];
const IDS = [
  [5, 17, 99, 3, 42, 7, 7, 120, 64, 1],
  [9, 8, 200, 31, 4, 4, 18, 77, 2, 250],
];

/** ∂L/∂W of the targets at the model's current weights: the engine's plain full-gradient step (SGD, lr 0). */
async function gradients(model: PreTrainedModel, names: readonly string[], ids: number[][]): Promise<Map<string, Float64Array>> {
  const params: Record<string, TensorDecl> = {};
  const init: Record<string, HostTensor> = {};
  const frozen: Record<string, TensorDecl> = {};
  const frozenInit: Record<string, HostTensor> = {};
  for (const [k, t] of model.weights) {
    if (names.includes(k)) {
      params[k] = { dtype: t.dtype, shape: t.shape };
      init[k] = t;
    } else {
      frozen[k] = { dtype: t.dtype, shape: t.shape };
      frozenInit[k] = t;
    }
  }
  const step = await TrainStep.create(
    {
      params,
      frozen,
      batch: stepBatchDecls(model.head, false),
      optimizer: { kind: "sgd" },
      gradientOutputs: [...names],
      loss: ({ params: p, frozen: f, batch }) => {
        const ctx = new WeightContext((n) => p[n] ?? f[n], new Set(model.weights.keys()));
        const out = model.traceForward(ctx, stepModelInputs(batch));
        return crossEntropy(out.logits as NonNullable<typeof out.logits>, batch.labels, { ignoreIndex: -100 });
      },
    },
    { params: init, frozen: frozenInit },
  );
  await step.step(prepareBatch(model.head, { inputIds: ids, labels: ids }), { lr: 0 });
  const g = step.getGradients();
  await step.release();
  return new Map(names.map((k) => [k, Float64Array.from(g[k].data as Float32Array)]));
}

interface RefState {
  m: number;
  n: number;
  V: Float64Array;
  g: Float64Array;
  P: Float64Array;
  mv: Float64Array;
  sv: Float64Array;
  mg: Float64Array;
  sg: Float64Array;
}

/**
 * Float64 reference of the two update rules, written from the paper's formulas and from
 * LowRankWeightNormAdamW.step (spec §4.2), keeping V itself (not its row norms) and a plain
 * GaLore projector from an exact SVD.
 */
class Reference {
  readonly s = new Map<string, RefState>();
  t = 0;
  constructor(
    model: PreTrainedModel,
    readonly o: { rank: number; gap: number; scale: number; compat: boolean; b1: number; b2: number; eps: number },
  ) {
    for (const k of TARGETS) {
      const w = model.weights.get(k) as HostTensor;
      const [m, n] = w.shape as [number, number];
      const V = Float64Array.from(w.data as Float32Array);
      const g = new Float64Array(m);
      for (let i = 0; i < m; i++) g[i] = Math.hypot(...V.subarray(i * n, i * n + n));
      const lr = m >= n ? m * o.rank : o.rank * n;
      const z = () => new Float64Array(lr);
      this.s.set(k, {
        m,
        n,
        V,
        g,
        P: new Float64Array(m >= n ? o.rank * n : m * o.rank),
        mv: z(),
        sv: z(),
        mg: new Float64Array(m),
        sg: new Float64Array(m),
      });
    }
  }

  weight(k: string): Float64Array {
    const { m, n, V, g } = this.s.get(k) as RefState;
    const w = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      const row = V.subarray(i * n, i * n + n);
      const norm = Math.hypot(...row);
      for (let j = 0; j < n; j++) w[i * n + j] = (g[i] * row[j]) / norm;
    }
    return w;
  }

  step(grads: Map<string, Float64Array>, lr: number): void {
    const { rank: r, gap, scale, compat, b1, b2, eps } = this.o;
    const refresh = this.t % gap === 0;
    this.t++;
    const alpha = (lr * Math.sqrt(1 - b2 ** this.t)) / (1 - b1 ** this.t);
    for (const k of TARGETS) {
      const st = this.s.get(k) as RefState;
      const { m, n, V } = st;
      const G = grads.get(k) as Float64Array;
      const nv = new Float64Array(m);
      for (let i = 0; i < m; i++) nv[i] = Math.hypot(...V.subarray(i * n, i * n + n));
      const g = compat ? nv.slice() : st.g;
      const gGrad = new Float64Array(m);
      const GV = new Float64Array(m * n);
      for (let i = 0; i < m; i++) {
        let d = 0;
        for (let j = 0; j < n; j++) d += (G[i * n + j] * V[i * n + j]) / nv[i];
        gGrad[i] = d;
        for (let j = 0; j < n; j++)
          GV[i * n + j] = compat ? (G[i * n + j] * g[i]) / nv[i] : (g[i] / nv[i]) * (G[i * n + j] - (V[i * n + j] / nv[i]) * d);
      }
      const right = m >= n;
      if (refresh) {
        // top-r singular vectors, each signed so that its largest-magnitude entry is positive
        const d = svd(matrix(m, n, GV));
        const side = right ? d.v : d.u;
        for (let a = 0; a < r; a++) {
          const col = Array.from({ length: side.rows }, (_, i) => side.data[i * side.cols + a]);
          const big = col.reduce((x, y) => (Math.abs(y) > Math.abs(x) ? y : x), 0);
          col.forEach((x, i) => {
            if (right) st.P[a * n + i] = big < 0 ? -x : x;
            else st.P[i * r + a] = big < 0 ? -x : x;
          });
        }
      }
      // R = GV·Qᵀ (m×r) or Pᵀ·GV (r×n)
      const R = new Float64Array(st.mv.length);
      if (right)
        for (let i = 0; i < m; i++) for (let a = 0; a < r; a++) for (let j = 0; j < n; j++) R[i * r + a] += GV[i * n + j] * st.P[a * n + j];
      else
        for (let a = 0; a < r; a++) for (let j = 0; j < n; j++) for (let i = 0; i < m; i++) R[a * n + j] += st.P[i * r + a] * GV[i * n + j];
      const U = new Float64Array(R.length);
      for (let q = 0; q < R.length; q++) {
        st.mv[q] = b1 * st.mv[q] + (1 - b1) * R[q];
        st.sv[q] = b2 * st.sv[q] + (1 - b2) * R[q] * R[q];
        U[q] = st.mv[q] / (Math.sqrt(st.sv[q]) + eps);
      }
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let b = 0;
          if (right) for (let a = 0; a < r; a++) b += U[i * r + a] * st.P[a * n + j];
          else for (let a = 0; a < r; a++) b += st.P[i * r + a] * U[a * n + j];
          V[i * n + j] -= alpha * scale * b;
        }
      for (let i = 0; i < m; i++) {
        st.mg[i] = b1 * st.mg[i] + (1 - b1) * gGrad[i];
        st.sg[i] = b2 * st.sg[i] + (1 - b2) * gGrad[i] * gGrad[i];
        st.g[i] = g[i] - (alpha * st.mg[i]) / (Math.sqrt(st.sg[i]) + eps);
      }
    }
  }
}

async function parity(compat: boolean): Promise<void> {
  const model = PreTrainedModel.fromConfig(CONFIG, "causal_lm", { seed: 3 });
  const refModel = PreTrainedModel.fromConfig(CONFIG, "causal_lm", { seed: 3 });
  const o = { rank: 3, gap: 2, scale: 0.5, compat, b1: 0.9, b2: 0.999, eps: 1e-6 };
  const trainer = GradNormTrainer.create(model, TARGETS, {
    rank: o.rank,
    updateProjGap: o.gap,
    scale: o.scale,
    compat: compat ? "authors-2025-01" : null,
    svd: "exact",
  });
  const ref = new Reference(refModel, o);
  const w0 = new Map(TARGETS.map((k) => [k, Float64Array.from((model.weights.get(k) as HostTensor).data as Float32Array)]));
  const lr = 5e-3;
  let refreshes = 0;
  for (let s = 0; s < 5; s++) {
    const grads = await gradients(refModel, TARGETS, IDS);
    ref.step(grads, lr);
    for (const k of TARGETS)
      refModel.weights.set(k, { ...(refModel.weights.get(k) as HostTensor), data: Float32Array.from(ref.weight(k)) });
    const res = await trainer.train({ inputIds: IDS, labels: IDS }, { lr });
    if (res.refresh) refreshes++;
    for (const k of TARGETS) {
      const w = (model.weights.get(k) as HostTensor).data as Float32Array;
      const wr = ref.weight(k);
      const base = w0.get(k) as Float64Array;
      let err = 0;
      let size = 0;
      for (let i = 0; i < w.length; i++) {
        err = Math.max(err, Math.abs(w[i] - wr[i]));
        size = Math.max(size, Math.abs(wr[i] - base[i]));
      }
      assert.ok(size > 1e-4, `${k} step ${s + 1}: the update is too small to compare (${size})`);
      assert.ok(err < 2e-3 * size, `${k} step ${s + 1} (compat ${compat}): |W − W_ref| ${err} vs |ΔW_ref| ${size}`);
    }
  }
  assert.equal(refreshes, 3, "refreshes at steps 0, 2, 4");
  await trainer.release();
  await model.release();
  await refModel.release();
}

test("gradnorm_lorp (paper form) matches a float64 reference over 5 steps with projector refreshes at 0, 2, 4", async () => {
  await parity(false);
});

test("gradnorm_lorp --gradnorm-compat authors-2025-01 matches a float64 LowRankWeightNormAdamW.step", async () => {
  await parity(true);
});

test("within a projector period ΔV lies in the projector's span; untargeted tensors stay bit-identical", async () => {
  const model = PreTrainedModel.fromConfig(CONFIG, "causal_lm", { seed: 4 });
  const before = new Map(model.weights);
  const trainer = GradNormTrainer.create(model, TARGETS, { rank: 2, updateProjGap: 10, svd: "exact" });
  // V = W·‖V‖/g, row-wise, from the trainer's saved state
  const vOf = (k: string) => {
    const st = trainer.checkpointState();
    const w = model.weights.get(k) as HostTensor;
    const [m, n] = w.shape as [number, number];
    const v = new Float64Array(m * n);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++)
        v[i * n + j] = (Number(w.data[i * n + j]) * Number(st[`vnorm.${k}`].data[i])) / Number(st[`magnitude.${k}`].data[i]);
    return v;
  };
  const v0 = new Map(TARGETS.map((k) => [k, vOf(k)]));
  for (let s = 0; s < 3; s++) await trainer.train({ inputIds: IDS, labels: IDS }, { lr: 1e-2 });
  const st = trainer.checkpointState();
  for (const k of TARGETS) {
    const [m, n] = (model.weights.get(k) as HostTensor).shape as [number, number];
    const P = st[`projector.${k}`].data as Float32Array;
    const dv = vOf(k).map((x, i) => x - (v0.get(k) as Float64Array)[i]);
    // residual of ΔV outside the span: right ΔV(I − QᵀQ), left (I − PPᵀ)ΔV
    let res = 0;
    let size = 0;
    const r = 2;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let proj = 0;
        if (m >= n) for (let a = 0; a < r; a++) for (let l = 0; l < n; l++) proj += dv[i * n + l] * P[a * n + l] * P[a * n + j];
        else for (let a = 0; a < r; a++) for (let l = 0; l < m; l++) proj += P[i * r + a] * P[l * r + a] * dv[l * n + j];
        res = Math.max(res, Math.abs(dv[i * n + j] - proj));
        size = Math.max(size, Math.abs(dv[i * n + j]));
      }
    assert.ok(size > 1e-4 && res < 1e-3 * size, `${k}: ΔV outside the span ${res} of ${size}`);
  }
  for (const [k, t] of before) if (!TARGETS.includes(k)) assert.equal(model.weights.get(k), t, `${k} changed`);
  // optimizer state: low-rank, far below AdamW's 2 × trained elements
  assert.ok(trainer.optimizerElements() < 0.3 * 2 * trainer.trainedParameters(), `${trainer.optimizerElements()} state elements`);
  await trainer.release();
  await model.release();
});

test("bad input: rank, refresh gap and a non-2-D target are refused with one line naming the flag or tensor", async () => {
  const model = PreTrainedModel.fromConfig(CONFIG, "causal_lm", { seed: 1 });
  assert.throws(
    () => GradNormTrainer.create(model, TARGETS, { rank: 0 }),
    (e: Error) => e instanceof GradNormError && /^--r: .*>= 1/.test(e.message),
  );
  assert.throws(
    () => GradNormTrainer.create(model, TARGETS, { rank: 33 }),
    (e: Error) =>
      e instanceof GradNormError &&
      /^--r: rank 33 exceeds min\(32, 32\) of tensor "model.layers.0.self_attn.q_proj.weight"/.test(e.message),
  );
  assert.throws(
    () => GradNormTrainer.create(model, TARGETS, { updateProjGap: 0 }),
    (e: Error) => /^--gradnorm-update-gap: /.test(e.message),
  );
  assert.throws(
    () => GradNormTrainer.create(model, ["model.norm.weight"], { rank: 1 }),
    (e: Error) => e instanceof GradNormError && /tensor "model.norm.weight" is 1-D \[32\]; only 2-D weights/.test(e.message),
  );
  for (const e of [
    () => GradNormTrainer.create(model, TARGETS, { rank: 0 }),
    () => GradNormTrainer.create(model, ["model.norm.weight"], { rank: 1 }),
  ])
    assert.throws(e, (x: Error) => !x.message.includes("\n"));
  await model.release();
});
