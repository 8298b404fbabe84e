/** The two-spirals toy task and a small tanh MLP: the engine's demo and its end-to-end test. */
import { type CompileOptions, compileGraph } from "../engine/exec/backend.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { TrainStep } from "../engine/optim/train-step.js";
import { crossEntropy } from "../engine/trace/composites.js";
import type { Tensor } from "../engine/trace/tensor.js";
import { trace } from "../engine/trace/trace.js";

/** Two interleaved spirals, n points per class, with a little noise. Labels are i64 0/1. */
export function twoSpirals(n: number): { x: HostTensor; y: HostTensor } {
  const x = new Float32Array(4 * n);
  const y: number[] = [];
  for (let c = 0; c < 2; c++) {
    for (let i = 0; i < n; i++) {
      const t = (i / n) * 3 * Math.PI + 0.3;
      const r = t / (3 * Math.PI);
      const sgn = c === 0 ? 1 : -1;
      const k = c * n + i;
      x[2 * k] = sgn * r * Math.cos(t) + (Math.random() - 0.5) * 0.02;
      x[2 * k + 1] = sgn * r * Math.sin(t) + (Math.random() - 0.5) * 0.02;
      y.push(c);
    }
  }
  return { x: hostTensor("f32", [2 * n, 2], x), y: hostTensor("i64", [2 * n], y) };
}

function uniform(shape: number[], scale: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return hostTensor(
    "f32",
    shape,
    Float32Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale),
  );
}

export type MlpParams = Record<"w1" | "b1" | "w2" | "b2" | "w3" | "b3", HostTensor>;

export function initMlp(hidden: number): MlpParams {
  return {
    w1: uniform([2, hidden], 1.5),
    b1: uniform([hidden], 0.5),
    w2: uniform([hidden, hidden], 1 / Math.sqrt(hidden)),
    b2: uniform([hidden], 0),
    w3: uniform([hidden, 2], 1 / Math.sqrt(hidden)),
    b3: uniform([2], 0),
  };
}

export function mlp(p: Record<string, Tensor>, x: Tensor): Tensor {
  const h = x.matmul(p.w1).add(p.b1).tanh();
  const h2 = h.matmul(p.w2).add(p.b2).tanh();
  return h2.matmul(p.w3).add(p.b3);
}

export async function createMlpTrainer(params: MlpParams, opts: CompileOptions = {}): Promise<TrainStep> {
  const decl = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, { dtype: "f32" as const, shape: v.shape }]));
  return TrainStep.create(
    {
      params: decl,
      batch: { x: { dtype: "f32", shape: ["batch", 2] }, y: { dtype: "i64", shape: ["batch"] } },
      loss: ({ params: p, batch }) => crossEntropy(mlp(p, batch.x), batch.y),
      optimizer: { kind: "adamw", weightDecay: 1e-4 },
      clipNorm: 5,
    },
    { params },
    opts,
  );
}

/** Fraction of points whose predicted class is right, computed on ORT. */
export async function mlpAccuracy(params: Record<string, HostTensor>, data: { x: HostTensor; y: HostTensor }): Promise<number> {
  const names = Object.keys(params);
  const fwd = trace(
    (x, ...ps) => mlp(Object.fromEntries(names.map((k, i) => [k, ps[i]])), x).argmax(1),
    [{ dtype: "f32", shape: ["batch", 2] }, ...names.map((k) => ({ dtype: params[k].dtype, shape: params[k].shape }))],
  );
  const exec = await compileGraph(fwd);
  const [pred] = await exec.run([data.x, ...names.map((k) => params[k])]);
  const yp = pred.data as BigInt64Array;
  const yt = data.y.data as BigInt64Array;
  let correct = 0;
  for (let i = 0; i < yt.length; i++) if (yp[i] === yt[i]) correct++;
  return correct / yt.length;
}
