import assert from "node:assert/strict";
import { test } from "node:test";
import { hostTensor } from "../ir/host.js";
import { TrainStep } from "./train-step.js";

/**
 * Gradient surgery: with L = Σ p·x and a term T = ½Σ p², the loss's gradient is x and the
 * term's is p; a combination g = x·p (element-wise) must be what SGD applies to "p", while "q"
 * (not combined) keeps the loss's gradient.
 */
test("gradient surgery: each term gets its own backward, combine sets what the optimizer applies", async () => {
  const p0 = [0.5, -2, 3];
  const x = [1.5, 4, -1];
  const q0 = [1, 2];
  const step = await TrainStep.create(
    {
      params: { p: { dtype: "f32", shape: [3] }, q: { dtype: "f32", shape: [2] } },
      batch: { x: { dtype: "f32", shape: [3] } },
      optimizer: { kind: "sgd" },
      gradientOutputs: ["p", "q"],
      loss: ({ params, batch }) => {
        const loss = params.p.mul(batch.x).sum().add(params.q.sum().mul(3));
        const half = params.p.square().sum().mul(0.5);
        return {
          loss,
          surgery: { terms: { half }, combine: (g) => ({ p: g.loss.p.mul(g.terms.half.p) }) },
        };
      },
    },
    { params: { p: hostTensor("f32", [3], p0), q: hostTensor("f32", [2], q0) } },
  );
  const res = await step.step({ x: hostTensor("f32", [3], x) }, { lr: 0.1 });
  assert.ok(Math.abs(res.loss - (0.75 - 8 - 3 + 9)) < 1e-5);
  const g = step.getGradients();
  assert.deepEqual([...(g.p.data as Float32Array)], [0.75, -8, -3]);
  assert.deepEqual([...(g.q.data as Float32Array)], [3, 3]);
  const p = step.getParams().p.data as Float32Array;
  p0.forEach((v, i) => {
    assert.ok(Math.abs(p[i] - (v - 0.1 * v * x[i])) < 1e-6, `p[${i}]`);
  });
  await step.release();
});

test("gradient surgery: a combined gradient for an unknown parameter is refused", async () => {
  await assert.rejects(
    TrainStep.create(
      {
        params: { p: { dtype: "f32", shape: [2] } },
        batch: {},
        optimizer: { kind: "sgd" },
        loss: ({ params }) => ({
          loss: params.p.sum(),
          surgery: { terms: {}, combine: (g) => ({ r: g.loss.p }) },
        }),
      },
      { params: { p: hostTensor("f32", [2], [1, 2]) } },
    ),
    /surgery combined "r", which is not a parameter/,
  );
});
