/**
 * One LLaMA-style decoder block (RMSNorm, rotary, grouped-query causal attention, SwiGLU MLP)
 * with frozen weights and a rank-r low-rank update on each linear layer: the workload of the
 * engine benchmark. Written against the engine directly; the model library comes later.
 */
import { type HostTensor, hostTensor } from "../src/engine/ir/host.js";
import type { TensorDecl, TrainStepDefinition } from "../src/engine/optim/train-step.js";
import { rmsNorm } from "../src/engine/trace/composites.js";
import { concat, iota, type Tensor, where } from "../src/engine/trace/tensor.js";

export interface BlockShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  batch: number;
  seq: number;
  rank: number;
}

export const SMOLLM_BLOCK: BlockShape = { hidden: 576, heads: 9, kvHeads: 3, intermediate: 1536, batch: 4, seq: 256, rank: 16 };

const LINEARS = ["q", "k", "v", "o", "gate", "up", "down"] as const;

function linearDims(s: BlockShape): Record<(typeof LINEARS)[number], [number, number]> {
  const hd = s.hidden / s.heads;
  return {
    q: [s.hidden, s.hidden],
    k: [s.kvHeads * hd, s.hidden],
    v: [s.kvHeads * hd, s.hidden],
    o: [s.hidden, s.hidden],
    gate: [s.intermediate, s.hidden],
    up: [s.intermediate, s.hidden],
    down: [s.hidden, s.intermediate],
  };
}

/** Analytic FLOPs of one training step: forward, input gradients, attention backward, low-rank gradients. */
export function blockStepFlops(s: BlockShape): number {
  const n = s.batch * s.seq;
  const hd = s.hidden / s.heads;
  let linear = 0;
  let lora = 0;
  for (const [out, inp] of Object.values(linearDims(s))) {
    linear += 2 * n * out * inp;
    lora += 2 * n * s.rank * (out + inp);
  }
  const attention = 2 * 2 * s.batch * s.heads * s.seq * s.seq * hd;
  // forward (1×) + backward: input gradients of frozen linears (1×), attention (2×),
  // low-rank: input gradient and the two weight gradients (3× their forward)
  return linear * 2 + attention * 3 + lora * 4;
}

function rand(shape: number[], scale: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (Math.random() * 2 - 1) * scale;
  return hostTensor("f32", shape, d);
}

function rotate(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const half = x.dim(-1) / 2;
  const [x1, x2] = x.split([half, half], -1);
  return x.mul(cos).add(concat([x2.neg(), x1], -1).mul(sin));
}

export function blockDefinition(s: BlockShape): TrainStepDefinition {
  const dims = linearDims(s);
  const hd = s.hidden / s.heads;
  const params: Record<string, TensorDecl> = {};
  const frozen: Record<string, TensorDecl> = {
    ln1: { dtype: "f32", shape: [s.hidden] },
    ln2: { dtype: "f32", shape: [s.hidden] },
    cos: { dtype: "f32", shape: [s.seq, hd] },
    sin: { dtype: "f32", shape: [s.seq, hd] },
  };
  for (const [name, [out, inp]] of Object.entries(dims)) {
    frozen[name] = { dtype: "f32", shape: [out, inp] };
    params[`${name}.A`] = { dtype: "f32", shape: [s.rank, inp] };
    params[`${name}.B`] = { dtype: "f32", shape: [out, s.rank] };
  }
  const scaling = 2;
  return {
    params,
    frozen,
    batch: { x: { dtype: "f32", shape: [s.batch, s.seq, s.hidden] }, target: { dtype: "f32", shape: [s.batch, s.seq, s.hidden] } },
    optimizer: { kind: "adamw" },
    loss: ({ params: p, frozen: f, batch }) => {
      const lin = (name: string, x: Tensor) =>
        x.matmul(f[name].transpose()).add(x.matmul(p[`${name}.A`].transpose()).matmul(p[`${name}.B`].transpose()).mul(scaling));
      const x = batch.x;
      const h = rmsNorm(x, f.ln1, 1e-5);
      const group = s.heads / s.kvHeads;
      // q: [B, kv, group, T, hd]; k, v: [B, kv, 1, T, hd] so matmul broadcasts instead of repeating KV heads.
      const q = rotate(lin("q", h).reshape([s.batch, s.seq, s.kvHeads, group, hd]).permute([0, 2, 3, 1, 4]), f.cos, f.sin);
      const k = rotate(lin("k", h).reshape([s.batch, s.seq, s.kvHeads, 1, hd]).permute([0, 2, 3, 1, 4]), f.cos, f.sin);
      const v = lin("v", h).reshape([s.batch, s.seq, s.kvHeads, 1, hd]).permute([0, 2, 3, 1, 4]);
      const scores = q.matmul(k.transpose(-1, -2)).mul(1 / Math.sqrt(hd));
      const future = iota([s.seq, s.seq], 1).gt(iota([s.seq, s.seq], 0));
      const attn = where(future, -1e9, scores).softmax(-1).matmul(v);
      const merged = attn.permute([0, 3, 1, 2, 4]).reshape([s.batch, s.seq, s.hidden]);
      const x1 = x.add(lin("o", merged));
      const h2 = rmsNorm(x1, f.ln2, 1e-5);
      const mlp = lin("down", lin("gate", h2).silu().mul(lin("up", h2)));
      const y = x1.add(mlp);
      return y.sub(batch.target).square().mean();
    },
  };
}

export function blockInit(s: BlockShape): {
  params: Record<string, HostTensor>;
  frozen: Record<string, HostTensor>;
  batch: Record<string, HostTensor>;
} {
  const dims = linearDims(s);
  const hd = s.hidden / s.heads;
  const params: Record<string, HostTensor> = {};
  const frozen: Record<string, HostTensor> = { ln1: rand([s.hidden], 1), ln2: rand([s.hidden], 1) };
  const cos = new Float32Array(s.seq * hd);
  const sin = new Float32Array(s.seq * hd);
  for (let t = 0; t < s.seq; t++) {
    for (let i = 0; i < hd; i++) {
      const freq = 1 / 10000 ** ((2 * (i % (hd / 2))) / hd);
      cos[t * hd + i] = Math.cos(t * freq);
      sin[t * hd + i] = Math.sin(t * freq);
    }
  }
  frozen.cos = hostTensor("f32", [s.seq, hd], cos);
  frozen.sin = hostTensor("f32", [s.seq, hd], sin);
  for (const [name, [out, inp]] of Object.entries(dims)) {
    frozen[name] = rand([out, inp], 1 / Math.sqrt(inp));
    params[`${name}.A`] = rand([s.rank, inp], 1 / Math.sqrt(inp));
    params[`${name}.B`] = rand([out, s.rank], 0.01);
  }
  const batch = { x: rand([s.batch, s.seq, s.hidden], 1), target: rand([s.batch, s.seq, s.hidden], 1) };
  return { params, frozen, batch };
}
