import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../ir/host.js";
import { dropout } from "../trace/composites.js";
import type { OptimizerConfig } from "./optimizers.js";
import { type LossContext, TrainStep, traceTrainStep } from "./train-step.js";

function rand(shape: number[], scale = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return hostTensor(
    "f32",
    shape,
    Float32Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale),
  );
}

/** Independent JS reference of the optimizers on L = Σ (p − t)², whose gradient is 2(p − t). */
function referenceRun(cfg: OptimizerConfig, p0: Float32Array, t: Float32Array, lrs: number[], clip?: number): Float64Array {
  const p = Float64Array.from(p0);
  const m = new Float64Array(p.length);
  const v = new Float64Array(p.length);
  lrs.forEach((lr, s) => {
    const step = s + 1;
    let g = Array.from(p, (x, i) => 2 * (x - t[i]));
    if (clip !== undefined) {
      const norm = Math.sqrt(g.reduce((a, x) => a + x * x, 0));
      const scale = Math.min(1, clip / (norm + 1e-6));
      g = g.map((x) => x * scale);
    }
    for (let i = 0; i < p.length; i++) {
      if (cfg.kind === "adamw") {
        const b1 = cfg.beta1 ?? 0.9;
        const b2 = cfg.beta2 ?? 0.999;
        const eps = cfg.eps ?? 1e-8;
        p[i] -= lr * (cfg.weightDecay ?? 0) * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        const mh = m[i] / (1 - b1 ** step);
        const vh = v[i] / (1 - b2 ** step);
        p[i] -= (lr * mh) / (Math.sqrt(vh) + eps);
      } else {
        const gi = g[i] + (cfg.weightDecay ?? 0) * p[i];
        const mu = cfg.momentum ?? 0;
        let d = gi;
        if (mu) {
          m[i] = mu * m[i] + gi;
          d = cfg.nesterov ? gi + mu * m[i] : m[i];
        }
        p[i] -= lr * d;
      }
    }
  });
  return p;
}

describe("in-graph optimizers match an independent JS implementation", () => {
  const cases: [string, OptimizerConfig, number | undefined][] = [
    ["adamw", { kind: "adamw", weightDecay: 0.1, beta1: 0.8, beta2: 0.95 }, undefined],
    ["adamw + clipping", { kind: "adamw" }, 0.5],
    ["sgd", { kind: "sgd" }, undefined],
    ["sgd momentum + wd", { kind: "sgd", momentum: 0.9, weightDecay: 0.01 }, undefined],
    ["sgd nesterov + clipping", { kind: "sgd", momentum: 0.5, nesterov: true }, 1.0],
  ];
  for (const [name, cfg, clip] of cases) {
    for (const backend of ["ort", "interpreter"] as const) {
      test(`${name} on ${backend}`, async () => {
        const p0 = rand([3, 5]);
        const target = rand([3, 5]);
        const step = await TrainStep.create(
          {
            params: { p: { dtype: "f32", shape: [3, 5] } },
            batch: { t: { dtype: "f32", shape: [3, 5] } },
            loss: ({ params, batch }) => params.p.sub(batch.t).square().sum(),
            optimizer: cfg,
            clipNorm: clip,
          },
          { params: { p: p0 } },
          { backend },
        );
        const lrs = [0.1, 0.05, 0.2, 0.1];
        for (const lr of lrs) await step.step({ t: target }, { lr });
        const want = referenceRun(cfg, p0.data as Float32Array, target.data as Float32Array, lrs, clip);
        const got = step.getParams().p.data as Float32Array;
        want.forEach((w, i) => {
          assert.ok(Math.abs(w - got[i]) <= 1e-5 * Math.max(1, Math.abs(w)), `${name}: p[${i}] = ${got[i]}, want ${w}`);
        });
      });
    }
  }
});

describe("the step graph does no work for frozen weights", () => {
  test("a LoRA-style layer stack has no weight-gradient matmul for frozen W", () => {
    const g = traceTrainStep({
      params: { a1: { dtype: "f32", shape: [8, 2] }, b1: { dtype: "f32", shape: [2, 8] } },
      frozen: { w1: { dtype: "f32", shape: [8, 8] }, w2: { dtype: "f32", shape: [8, 8] } },
      batch: { x: { dtype: "f32", shape: [4, 8] } },
      loss: ({ params: p, frozen: f, batch }) => {
        const h = batch.x.matmul(f.w1);
        const h1 = h.add(h.matmul(p.a1).matmul(p.b1));
        return h1.matmul(f.w2).square().sum();
      },
      optimizer: { kind: "adamw" },
    });
    const matmuls = g.nodes.filter((n) => n.op === "matmul").length;
    // forward: x·W1, h·A, (hA)·B, h1·W2 = 4. backward: g·W2ᵀ (input gradient), (hA)ᵀ·g for B,
    // g·Bᵀ, hᵀ·g for A = 4. A gradient for W1, W2 or x would add more.
    assert.equal(matmuls, 8);
  });

  test("the gradient of a weight used as x·Wᵀ comes out in W's layout: only the narrow operand is transposed", () => {
    // LoRA's A is [r, in] and enters as x·Aᵀ with x [B, T, in]: its gradient should be gᵀ·x
    // ([r, B·T]·[B·T, in]), not (xᵀ·g)ᵀ, which transposes the activations and then the result.
    const g = traceTrainStep({
      params: { a: { dtype: "f32", shape: [2, 8] } },
      frozen: {},
      batch: { x: { dtype: "f32", shape: [3, 5, 8] } },
      loss: ({ params: p, batch }) => batch.x.matmul(p.a.transpose()).square().sum(),
      optimizer: { kind: "sgd" },
    });
    const live = new Set<number>(g.outputs.map((o) => o.id));
    for (let i = g.nodes.length - 1; i >= 0; i--) {
      if (g.nodes[i].outputs.some((o) => live.has(o))) for (const x of g.nodes[i].inputs) live.add(x);
    }
    const transposed = g.nodes
      .filter((n) => n.op === "transpose" && n.outputs.some((o) => live.has(o)))
      .map((n) => g.type(n.inputs[0]).shape.join("x"));
    // Aᵀ in the forward and gᵀ ([15, 2]) in the backward; never x ([15, 8]) or a [8, 2] gradient.
    assert.deepEqual(transposed.sort(), ["15x2", "2x8"]);
  });

  test("only params, optimizer state and the batch are outputs/changing inputs", () => {
    const g = traceTrainStep({
      params: { a: { dtype: "f32", shape: [4] } },
      frozen: { w: { dtype: "f32", shape: [4] } },
      batch: { x: { dtype: "f32", shape: ["batch", 4] } },
      loss: ({ params: p, frozen: f, batch }) => batch.x.mul(f.w).mul(p.a).sum(),
      optimizer: { kind: "adamw" },
    });
    assert.deepEqual(
      g.outputs.map((o) => o.name),
      ["loss", "grad_norm", "p.a", "s.exp_avg", "s.exp_avg_sq"],
    );
    assert.deepEqual(
      g.inputs.map((o) => o.name),
      ["p.a", "s.exp_avg", "s.exp_avg_sq", "step", "lr", "f.w", "b.x", "seed"],
    );
  });
});

test("ORT and interpreter agree on several steps of a small network with dropout", async () => {
  const params = { w: rand([6, 4], 0.5), b: rand([4], 0.1) };
  const frozen = { e: rand([6, 6]) };
  const def = {
    params: { w: { dtype: "f32" as const, shape: [6, 4] }, b: { dtype: "f32" as const, shape: [4] } },
    frozen: { e: { dtype: "f32" as const, shape: [6, 6] } },
    batch: { x: { dtype: "f32" as const, shape: ["batch", 6] } },
    loss: ({ params: p, frozen: f, batch, seed }: LossContext) => {
      const h = batch.x.matmul(f.e).gelu();
      const keep = dropout(h, 0.25, seed);
      return keep.matmul(p.w).add(p.b).softmax(-1).square().mean();
    },
    optimizer: { kind: "adamw" as const },
  };
  const a = await TrainStep.create(def, { params, frozen });
  const b = await TrainStep.create(def, { params, frozen }, { backend: "interpreter" });
  const x = rand([5, 6]);
  for (let i = 0; i < 3; i++) {
    const ra = await a.step({ x }, { lr: 0.05, seed: 100 + i });
    const rb = await b.step({ x }, { lr: 0.05, seed: 100 + i });
    assert.ok(Math.abs(ra.loss - rb.loss) <= 1e-5 * Math.max(1, Math.abs(rb.loss)), `loss ${ra.loss} vs ${rb.loss}`);
  }
  const pa = a.getParams().w.data as Float32Array;
  const pb = b.getParams().w.data as Float32Array;
  pa.forEach((v, i) => {
    assert.ok(Math.abs(v - pb[i]) <= 1e-5, `w[${i}] ${v} vs ${pb[i]}`);
  });
});

test("gradient accumulation over micro-batches equals one step on the concatenated batch", async () => {
  const w0 = rand([4, 3], 0.5);
  const def = {
    params: { w: { dtype: "f32" as const, shape: [4, 3] } },
    batch: { x: { dtype: "f32" as const, shape: ["batch", 4] } },
    loss: ({ params: p, batch }: LossContext) => batch.x.matmul(p.w).tanh().square().mean(),
    optimizer: { kind: "adamw" as const },
    clipNorm: 0.5,
  };
  const x1 = rand([3, 4]);
  const x2 = rand([3, 4]);
  const both = hostTensor("f32", [6, 4], Float32Array.from([...(x1.data as Float32Array), ...(x2.data as Float32Array)]));
  const fused = await TrainStep.create(def, { params: { w: w0 } });
  const accum = await TrainStep.create(def, { params: { w: w0 } });
  for (let i = 0; i < 3; i++) {
    await fused.step({ x: both }, { lr: 0.05 });
    const l1 = await accum.accumulate({ x: x1 });
    const l2 = await accum.accumulate({ x: x2 });
    assert.ok(Number.isFinite(l1.loss + l2.loss));
    await accum.apply({ lr: 0.05 });
  }
  const a = fused.getParams().w.data as Float32Array;
  const b = accum.getParams().w.data as Float32Array;
  // Equal-size micro-batches: the mean of the two means is the mean over the whole batch.
  a.forEach((v, i) => {
    assert.ok(Math.abs(v - b[i]) < 1e-6, `w[${i}] ${v} vs ${b[i]}`);
  });
  assert.equal(accum.stepCount, 3);
  await fused.release();
  await accum.release();
});

describe("what controllers read and write between steps", () => {
  const def = (clip?: number) => ({
    params: { p: { dtype: "f32" as const, shape: [2, 3] }, q: { dtype: "f32" as const, shape: [4] } },
    batch: { t: { dtype: "f32" as const, shape: [2, 3] } },
    // L = Σ (p − t)² + Σ q², so ∂L/∂p = 2(p − t) and ∂L/∂q = 2q.
    loss: ({ params, batch }: LossContext) => params.p.sub(batch.t).square().sum().add(params.q.square().sum()),
    optimizer: { kind: "sgd" } as OptimizerConfig,
    clipNorm: clip,
    gradientOutputs: ["p"],
  });

  test("getGradients returns the gradient the update used (clipped), for the params asked for only", async () => {
    const p0 = rand([2, 3]);
    const q0 = rand([4]);
    const t = rand([2, 3]);
    const step = await TrainStep.create(def(0.5), { params: { p: p0, q: q0 } });
    await step.step({ t }, { lr: 0.1 });
    const g = step.getGradients();
    assert.deepEqual(Object.keys(g), ["p"]);
    const raw = Array.from(p0.data as Float32Array, (x, i) => 2 * (x - (t.data as Float32Array)[i]));
    const rawQ = Array.from(q0.data as Float32Array, (x) => 2 * x);
    const norm = Math.sqrt([...raw, ...rawQ].reduce((a, x) => a + x * x, 0));
    const scale = Math.min(1, 0.5 / (norm + 1e-6));
    raw.forEach((w, i) => {
      assert.ok(Math.abs(w * scale - (g.p.data as Float32Array)[i]) < 1e-6, `g[${i}]`);
    });
  });

  test("with accumulation the gradient is the micro-batches' mean", async () => {
    const p0 = rand([2, 3]);
    const [t1, t2] = [rand([2, 3]), rand([2, 3])];
    const step = await TrainStep.create(def(), { params: { p: p0, q: rand([4]) } });
    await step.accumulate({ t: t1 });
    await step.accumulate({ t: t2 });
    await step.apply({ lr: 0.1 });
    const g = step.getGradients().p.data as Float32Array;
    const [a, b] = [t1.data as Float32Array, t2.data as Float32Array];
    (p0.data as Float32Array).forEach((x, i) => {
      assert.ok(Math.abs((2 * (x - a[i]) + 2 * (x - b[i])) / 2 - g[i]) < 1e-5, `g[${i}]`);
    });
  });

  test("setParams replaces values and keeps the optimizer state", async () => {
    const cfg = { ...def(), optimizer: { kind: "sgd", momentum: 0.9 } as OptimizerConfig };
    const p0 = rand([2, 3]);
    const q0 = rand([4]);
    const t = rand([2, 3]);
    const step = await TrainStep.create(cfg, { params: { p: p0, q: q0 } });
    await step.step({ t }, { lr: 0.1 });
    const momentumBefore = step.getState().tensors;
    const zero = hostTensor("f32", [4]);
    step.setParams({ q: zero });
    assert.deepEqual(step.getState().tensors, momentumBefore);
    await step.step({ t }, { lr: 0.1 });
    // q's momentum after step 1 is 2·q0; at q = 0 the gradient is 0, so q = −0.1·0.9·2·q0.
    const q = step.getParams().q.data as Float32Array;
    (q0.data as Float32Array).forEach((x, i) => {
      assert.ok(Math.abs(q[i] - -0.1 * 0.9 * 2 * x) < 1e-6, `q[${i}] = ${q[i]}`);
    });
    assert.throws(() => step.setParams({ q: hostTensor("f32", [5]) }), /parameter "q"/);
    assert.throws(() => step.setParams({ r: zero }), /unexpected parameter "r"/);
  });
});

describe("probes: statistics of an intermediate value and its gradient", () => {
  // L = Σ (x·Wᵀ − t)² with W = B·A: ∂L/∂W = 2 (x·Wᵀ − t)ᵀ·x, the gradient IncreLoRA scores with.
  const def = {
    params: { a: { dtype: "f32" as const, shape: [2, 3] }, b: { dtype: "f32" as const, shape: [4, 2] } },
    batch: { x: { dtype: "f32" as const, shape: [5, 3] }, t: { dtype: "f32" as const, shape: [5, 4] } },
    loss: ({ params, batch, probe }: LossContext) => {
      const w = params.b.matmul(params.a);
      probe("score", w, (v, g) => v.abs().mul(g).abs().sum());
      probe("grad", w, (_v, g) => g);
      probe("first_grad", w, (_v, g) => g, { combine: "first" });
      return batch.x.matmul(w.transpose()).sub(batch.t).square().sum();
    },
    optimizer: { kind: "sgd" } as OptimizerConfig,
  };
  function reference(a: Float32Array, b: Float32Array, x: Float32Array, t: Float32Array): { w: number[]; g: number[] } {
    const w = Array.from({ length: 12 }, (_, k) => b[Math.floor(k / 3) * 2] * a[k % 3] + b[Math.floor(k / 3) * 2 + 1] * a[3 + (k % 3)]);
    const g = new Array(12).fill(0);
    for (let n = 0; n < 5; n++)
      for (let o = 0; o < 4; o++) {
        let y = -t[n * 4 + o];
        for (let i = 0; i < 3; i++) y += x[n * 3 + i] * w[o * 3 + i];
        for (let i = 0; i < 3; i++) g[o * 3 + i] += 2 * y * x[n * 3 + i];
      }
    return { w, g };
  }

  for (const backend of ["ort", "interpreter"] as const) {
    test(`a step returns reduce(value, ∂L/∂value) on ${backend}`, async () => {
      const [a, b, x, t] = [rand([2, 3]), rand([4, 2]), rand([5, 3]), rand([5, 4])];
      const step = await TrainStep.create(def, { params: { a, b } }, { backend });
      await step.step({ x, t }, { lr: 0.01 });
      const st = step.getStatistics();
      const ref = reference(a.data as Float32Array, b.data as Float32Array, x.data as Float32Array, t.data as Float32Array);
      const score = ref.w.reduce((s, w, k) => s + Math.abs(w) * Math.abs(ref.g[k]), 0);
      assert.ok(Math.abs((st.score.data as Float32Array)[0] - score) < 1e-4 * score, `${st.score.data[0]} vs ${score}`);
      assert.deepEqual(st.grad.shape, [4, 3]);
      ref.g.forEach((g, k) => {
        assert.ok(Math.abs((st.grad.data as Float32Array)[k] - g) < 1e-4 * Math.max(1, Math.abs(g)), `g[${k}]`);
      });
    });
  }

  test("with accumulation a statistic is the micro-batches' mean", async () => {
    const [a, b] = [rand([2, 3]), rand([4, 2])];
    const batches = [0, 1, 2].map(() => ({ x: rand([5, 3]), t: rand([5, 4]) }));
    const step = await TrainStep.create(def, { params: { a, b } });
    for (const bt of batches) await step.accumulate(bt);
    await step.apply({ lr: 0.01 });
    const want = batches
      .map((bt) => {
        const r = reference(a.data as Float32Array, b.data as Float32Array, bt.x.data as Float32Array, bt.t.data as Float32Array);
        return r.w.reduce((s, w, k) => s + Math.abs(w) * Math.abs(r.g[k]), 0);
      })
      .reduce((s, v) => s + v / 3, 0);
    const got = (step.getStatistics().score.data as Float32Array)[0];
    assert.ok(Math.abs(got - want) < 1e-4 * want, `${got} vs ${want}`);
    // combine "first": the first micro-batch's value, not the mean.
    const first = reference(
      a.data as Float32Array,
      b.data as Float32Array,
      batches[0].x.data as Float32Array,
      batches[0].t.data as Float32Array,
    );
    const fg = step.getStatistics().first_grad.data as Float32Array;
    first.g.forEach((g, k) => {
      assert.ok(Math.abs(fg[k] - g) < 1e-4 * Math.max(1, Math.abs(g)), `first_grad[${k}]: ${fg[k]} vs ${g}`);
    });
  });
});

describe("gated updates: what trains changes between steps without a recompile", () => {
  // L = Σ (p − t)² + Σ (q − u)²; q is frozen for the first two steps, then trains.
  const def = {
    params: { p: { dtype: "f32" as const, shape: [3] }, q: { dtype: "f32" as const, shape: [2] } },
    batch: { t: { dtype: "f32" as const, shape: [3] }, u: { dtype: "f32" as const, shape: [2] } },
    loss: ({ params, batch }: LossContext) => params.p.sub(batch.t).square().sum().add(params.q.sub(batch.u).square().sum()),
    optimizer: { kind: "adamw", weightDecay: 0.1 } as OptimizerConfig,
    clipNorm: 0.7,
    gatedUpdates: true,
  };

  /** AdamW with per-tensor step counts; frozen tensors have no gradient (not in the clipping norm). */
  function reference(p0: number[][], t: number[][], trainsAt: boolean[][], lr: number): number[][] {
    const p = p0.map((x) => [...x]);
    const m = p0.map((x) => x.map(() => 0));
    const v = p0.map((x) => x.map(() => 0));
    const count = p0.map(() => 0);
    trainsAt.forEach((on) => {
      const g = p.map((x, j) => (on[j] ? x.map((xi, i) => 2 * (xi - t[j][i])) : null));
      const norm = Math.sqrt(g.flat().reduce((a: number, x) => a + (x ?? 0) ** 2, 0));
      const scale = Math.min(1, 0.7 / (norm + 1e-6));
      p.forEach((x, j) => {
        const gj = g[j];
        if (!gj) return;
        count[j]++;
        x.forEach((_, i) => {
          const gi = gj[i] * scale;
          x[i] -= lr * 0.1 * x[i];
          m[j][i] = 0.9 * m[j][i] + 0.1 * gi;
          v[j][i] = 0.999 * v[j][i] + 0.001 * gi * gi;
          x[i] -= (lr * (m[j][i] / (1 - 0.9 ** count[j]))) / (Math.sqrt(v[j][i] / (1 - 0.999 ** count[j])) + 1e-8);
        });
      });
    });
    return p;
  }

  for (const backend of ["ort", "interpreter"] as const) {
    test(`a tensor gated off stays bit-identical, then trains with its own bias correction, on ${backend}`, async () => {
      const [p0, q0, t, u] = [rand([3]), rand([2]), rand([3]), rand([2])];
      const step = await TrainStep.create(def, { params: { p: p0, q: q0 } }, { backend });
      step.setUpdateGate("q", false);
      for (let s = 0; s < 2; s++) await step.step({ t, u }, { lr: 0.1 });
      assert.deepEqual(step.getParams().q.data, q0.data);
      step.setUpdateGate("q", true);
      for (let s = 0; s < 3; s++) await step.step({ t, u }, { lr: 0.1 });
      const on = [
        [true, false],
        [true, false],
        [true, true],
        [true, true],
        [true, true],
      ];
      const want = reference(
        [[...(p0.data as Float32Array)], [...(q0.data as Float32Array)]],
        [[...(t.data as Float32Array)], [...(u.data as Float32Array)]],
        on,
        0.1,
      );
      const got = [[...(step.getParams().p.data as Float32Array)], [...(step.getParams().q.data as Float32Array)]];
      want.flat().forEach((w, i) => {
        assert.ok(Math.abs(w - got.flat()[i]) < 1e-5, `element ${i}: ${got.flat()[i]} vs ${w}`);
      });
    });
  }

  test("a gate above 0 multiplies the element's learning rate (SGD: Δp = −lr·gate·∂L/∂p)", async () => {
    const [p0, q0, t, u] = [rand([3]), rand([2]), rand([3]), rand([2])];
    const step = await TrainStep.create({ ...def, optimizer: { kind: "sgd" }, clipNorm: undefined }, { params: { p: p0, q: q0 } });
    step.setUpdateGate("p", hostTensor("f32", [3], [0.5, 0, 2]));
    step.setUpdateGate("q", 0.25);
    await step.step({ t, u }, { lr: 0.1 });
    const want = [
      ...Array.from(p0.data as Float32Array, (x, i) => x - 0.1 * [0.5, 0, 2][i] * 2 * (x - (t.data as Float32Array)[i])),
      ...Array.from(q0.data as Float32Array, (x, i) => x - 0.1 * 0.25 * 2 * (x - (u.data as Float32Array)[i])),
    ];
    const got = [...(step.getParams().p.data as Float32Array), ...(step.getParams().q.data as Float32Array)];
    want.forEach((w, i) => {
      assert.ok(Math.abs(w - got[i]) < 1e-6, `element ${i}: ${got[i]} vs ${w}`);
    });
    assert.throws(() => step.setUpdateGate("q", -1), /update gate of "q": -1 is not a finite value >= 0/);
  });

  test("an element mask freezes part of a tensor; gates travel with the optimizer state", async () => {
    const [p0, q0, t, u] = [rand([3]), rand([2]), rand([3]), rand([2])];
    const step = await TrainStep.create(def, { params: { p: p0, q: q0 } });
    step.setUpdateGate("p", hostTensor("f32", [3], [1, 0, 1]));
    await step.step({ t, u }, { lr: 0.1 });
    const p = step.getParams().p.data as Float32Array;
    assert.equal(p[1], (p0.data as Float32Array)[1]);
    assert.notEqual(p[0], (p0.data as Float32Array)[0]);
    assert.deepEqual([...(step.getState().tensors["s.update_gate"].data as Float32Array)], [1, 0, 1, 1, 1]);
    assert.throws(() => step.setUpdateGate("p", hostTensor("f32", [2], [1, 1])), /update gate of "p": expected 3 elements, got 2/);
  });

  test("one tensor's optimizer state reads and writes by slot; a reset element restarts as on a first step", async () => {
    const [p0, q0, t, u] = [rand([3]), rand([2]), rand([3]), rand([2])];
    const step = await TrainStep.create(def, { params: { p: p0, q: q0 } });
    await step.step({ t, u }, { lr: 0.1 });
    await step.step({ t, u }, { lr: 0.1 });
    const all = step.getState().tensors;
    const q = step.parameterState("q");
    assert.deepEqual(Object.keys(q).sort(), ["exp_avg", "exp_avg_sq", "update_count", "update_gate"]);
    assert.deepEqual([...(q.exp_avg.data as Float32Array)], [...(all["s.exp_avg"].data as Float32Array).slice(3, 5)]);
    assert.deepEqual(q.exp_avg.shape, [2]);
    // Element 1 of p: moments and step count back to 0, as a newly regrown SpIEL entry.
    const ps = step.parameterState("p");
    const fresh = (slot: string) => {
      const d = Float32Array.from(ps[slot].data as Float32Array);
      d[1] = 0;
      return hostTensor("f32", [3], d);
    };
    step.setParameterState("p", { exp_avg: fresh("exp_avg"), exp_avg_sq: fresh("exp_avg_sq"), update_count: fresh("update_count") });
    assert.deepEqual([...(step.parameterState("q").exp_avg.data as Float32Array)], [...(q.exp_avg.data as Float32Array)]);
    const before = (step.getParams().p.data as Float32Array)[1];
    await step.step({ t, u }, { lr: 0.1 });
    const after = (step.getParams().p.data as Float32Array)[1];
    // First AdamW step of that element: m̂ = g, v̂ = g², so Δ = −lr·(wd·p + g/|g|) whatever the clipping.
    const g = 2 * (before - (t.data as Float32Array)[1]);
    assert.ok(Math.abs(after - (before - 0.1 * (0.1 * before + Math.sign(g)))) < 1e-5, `${after}`);
    assert.throws(
      () => step.setParameterState("p", { exp_avg: hostTensor("f32", [2]) }),
      /optimizer state "exp_avg" of "p": expected 3 elements, got 2/,
    );
    assert.throws(() => step.setParameterState("p", { momentum: hostTensor("f32", [3]) }), /no optimizer state "momentum"/);
  });
});
