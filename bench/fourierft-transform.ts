/**
 * FourierFT's inverse transform inside a training step, three ways, in onnxruntime-node: what one
 * layer's step computes for ΔW = scaling·Re(ifft2(S)) (S: n coefficients scattered into [out, in])
 * and for the spectrum's gradient from a cotangent G = ∂L/∂ΔW.
 *
 *   factored  (peftkit's graph) ΔW = [cos θ ⊙ s, −sin θ ⊙ s]·[cos φ; sin φ], inner size 2n;
 *             ∂s = Σ_rows (G·[cos φ; sin φ]ᵀ) against [cos θ, −sin θ]
 *   dense     S scattered, ΔW = C_M·S·C_N − S_M·S·S_N with the full [out, out] and [in, in] DFT
 *             matrices; ∂S = C_M·G·C_N − S_M·G·S_N gathered at the n positions
 *   dft       ONNX DFT (opset 17/18, inverse=1) along both axes, real part; ∂S = Re(DFT(G))/(out·in)
 *
 * The three graphs are built by hand (ONNX protobuf, src/engine/exec/onnx/onnx-proto.ts): the IR has
 * no DFT op, and adding one (derivative rule, interpreter kernel, lowering, gradient check) only pays
 * if this says it is faster. Outputs of the three are checked equal before timing.
 *
 *   npx tsc -p tsconfig.json
 *   node dist/bench/fourierft-transform.js [--n 1000] [--rounds 5] [--reps 20] [--threads 1] [--shapes 256x256,688x256,1024x1024]
 *
 * Rounds alternate the three routes (a, b, c, a, b, c, …) so load from other processes spreads over
 * all of them; each round times --reps runs; the median round per route is reported, in CPU ms of
 * this process per run (process.cpuUsage, user + system, all threads: on a shared machine wall time
 * mostly measures the other processes).
 */
import * as ort from "onnxruntime-node";
import { encodeModel, type NodeSpec, type TensorSpec } from "../src/engine/exec/onnx/onnx-proto.js";
import { spectrumIndices } from "../src/tuners/fourierft/layers.js";
import { Rng } from "../src/util/rng.js";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ""), process.argv[i + 1]);
const N_FREQ = Number(args.get("n") ?? 1000);
const ROUNDS = Number(args.get("rounds") ?? 5);
const REPS = Number(args.get("reps") ?? 20);
const THREADS = Number(args.get("threads") ?? 1);
const SHAPES = (args.get("shapes") ?? "256x256,688x256,256x688,1024x1024")
  .split(",")
  .map((s) => s.split("x").map(Number) as [number, number]);
const SCALING = 150;

const f32 = (name: string, dims: number[], data: Float32Array): TensorSpec => ({ name, dtype: "f32", dims, data });
const i64 = (name: string, dims: number[], data: ArrayLike<number>): TensorSpec => ({
  name,
  dtype: "i64",
  dims,
  data: BigInt64Array.from(Array.from(data, (v) => BigInt(v))),
});
const node = (opType: string, inputs: string[], outputs: string[], attrs?: NodeSpec["attrs"]): NodeSpec => ({
  opType,
  inputs,
  outputs,
  attrs,
});

function trig(rows: number, cols: number, period: number, f: (x: number) => number, at: (r: number, c: number) => number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = f((2 * Math.PI * (at(r, c) % period)) / period);
  return out;
}

interface Route {
  nodes: NodeSpec[];
  inits: TensorSpec[];
}

function factored(M: number, N: number, rows: Int32Array, cols: Int32Array): Route {
  const n = rows.length;
  const ct = trig(M, n, M, Math.cos, (p, k) => p * rows[k]);
  const st = trig(M, n, M, Math.sin, (p, k) => p * rows[k]);
  const r = new Float32Array(2 * n * N);
  const rt = new Float32Array(N * 2 * n);
  for (let k = 0; k < n; k++)
    for (let q = 0; q < N; q++) {
      const a = (2 * Math.PI * ((cols[k] * q) % N)) / N;
      r[k * N + q] = Math.cos(a);
      r[(n + k) * N + q] = Math.sin(a);
      rt[q * 2 * n + k] = Math.cos(a);
      rt[q * 2 * n + n + k] = Math.sin(a);
    }
  return {
    inits: [
      f32("ct", [M, n], ct),
      f32("st", [M, n], st),
      f32("r", [2 * n, N], r),
      f32("rt", [N, 2 * n], rt),
      f32("k", [], Float32Array.of(SCALING / (M * N))),
      i64("split", [2], [n, n]),
      i64("ax0", [1], [0]),
    ],
    nodes: [
      node("Mul", ["s", "k"], ["ss"]),
      node("Mul", ["ct", "ss"], ["a"]),
      node("Mul", ["st", "ss"], ["b"]),
      node("Neg", ["b"], ["bn"]),
      node("Concat", ["a", "bn"], ["l"], [{ name: "axis", type: "int", i: 1 }]),
      node("MatMul", ["l", "r"], ["dw"]),
      node("MatMul", ["g", "rt"], ["gl"]),
      node("Split", ["gl", "split"], ["ga", "gb"], [{ name: "axis", type: "int", i: 1 }]),
      node("Mul", ["ga", "ct"], ["x1"]),
      node("Mul", ["gb", "st"], ["x2"]),
      node("Sub", ["x1", "x2"], ["x3"]),
      node("ReduceSum", ["x3", "ax0"], ["x4"], [{ name: "keepdims", type: "int", i: 0 }]),
      node("Mul", ["x4", "k"], ["gs"]),
    ],
  };
}

function positions(rows: Int32Array, cols: Int32Array): TensorSpec {
  const idx: number[] = [];
  for (let k = 0; k < rows.length; k++) idx.push(rows[k], cols[k]);
  return i64("idx", [rows.length, 2], idx);
}

function dense(M: number, N: number, rows: Int32Array, cols: Int32Array): Route {
  return {
    inits: [
      f32(
        "cm",
        [M, M],
        trig(M, M, M, Math.cos, (a, b) => a * b),
      ),
      f32(
        "sm",
        [M, M],
        trig(M, M, M, Math.sin, (a, b) => a * b),
      ),
      f32(
        "cn",
        [N, N],
        trig(N, N, N, Math.cos, (a, b) => a * b),
      ),
      f32(
        "sn",
        [N, N],
        trig(N, N, N, Math.sin, (a, b) => a * b),
      ),
      f32("zeros", [M, N], new Float32Array(M * N)),
      f32("k", [], Float32Array.of(SCALING / (M * N))),
      positions(rows, cols),
    ],
    nodes: [
      node("Mul", ["s", "k"], ["ss"]),
      node("ScatterND", ["zeros", "idx", "ss"], ["sd"]),
      node("MatMul", ["cm", "sd"], ["p1"]),
      node("MatMul", ["sm", "sd"], ["p2"]),
      node("MatMul", ["p1", "cn"], ["q1"]),
      node("MatMul", ["p2", "sn"], ["q2"]),
      node("Sub", ["q1", "q2"], ["dw"]),
      // The DFT matrices are symmetric: the adjoint uses them untransposed.
      node("MatMul", ["g", "cn"], ["r1"]),
      node("MatMul", ["g", "sn"], ["r2"]),
      node("MatMul", ["cm", "r1"], ["t1"]),
      node("MatMul", ["sm", "r2"], ["t2"]),
      node("Sub", ["t1", "t2"], ["gd"]),
      node("GatherND", ["gd", "idx"], ["gn"]),
      node("Mul", ["gn", "k"], ["gs"]),
    ],
  };
}

function dft(M: number, N: number, rows: Int32Array, cols: Int32Array): Route {
  const inv = (x: number) => [{ name: "inverse", type: "int" as const, i: x }];
  const axis = (x: number) => ({ name: "axis", type: "int" as const, i: x });
  return {
    inits: [
      f32("zeros", [M, N], new Float32Array(M * N)),
      f32("k", [], Float32Array.of(SCALING)),
      f32("kb", [], Float32Array.of(SCALING / (M * N))),
      positions(rows, cols),
      i64("shape4", [4], [1, M, N, 1]),
      i64("zero1", [1], [0]),
      i64("one1", [1], [1]),
      i64("three1", [1], [3]),
      i64("shape2", [2], [M, N]),
    ],
    nodes: [
      node("ScatterND", ["zeros", "idx", "s"], ["sd"]),
      node("Reshape", ["sd", "shape4"], ["s4"]),
      node("DFT", ["s4"], ["f1"], [...inv(1), axis(1)]),
      node("DFT", ["f1"], ["f2"], [...inv(1), axis(2)]),
      node("Slice", ["f2", "zero1", "one1", "three1"], ["re"]),
      node("Reshape", ["re", "shape2"], ["re2"]),
      node("Mul", ["re2", "k"], ["dw"]),
      node("Reshape", ["g", "shape4"], ["g4"]),
      node("DFT", ["g4"], ["h1"], [...inv(0), axis(1)]),
      node("DFT", ["h1"], ["h2"], [...inv(0), axis(2)]),
      node("Slice", ["h2", "zero1", "one1", "three1"], ["hr"]),
      node("Reshape", ["hr", "shape2"], ["hr2"]),
      node("GatherND", ["hr2", "idx"], ["gn"]),
      node("Mul", ["gn", "kb"], ["gs"]),
    ],
  };
}

async function session(name: string, M: number, N: number, n: number, r: Route): Promise<ort.InferenceSession> {
  const bytes = encodeModel({
    name,
    nodes: r.nodes,
    initializers: r.inits,
    inputs: [
      { name: "s", dtype: "f32", shape: [n] },
      { name: "g", dtype: "f32", shape: [M, N] },
    ],
    outputs: [
      { name: "dw", dtype: "f32", shape: [M, N] },
      { name: "gs", dtype: "f32", shape: [n] },
    ],
  });
  return ort.InferenceSession.create(bytes, { intraOpNumThreads: THREADS, interOpNumThreads: 1, graphOptimizationLevel: "all" });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const rng = new Rng(1);
  console.log(
    `n = ${N_FREQ}, ${ROUNDS} alternating rounds × ${REPS} runs, intra-op threads ${THREADS}; CPU ms per forward+backward of one layer's transform`,
  );
  console.log("shape        factored    dense      dft     dense/factored  dft/factored   max|ΔW diff|  max|∂s diff|");
  for (const [M, N] of SHAPES) {
    const n = Math.min(N_FREQ, M * N);
    const { rows, cols } = spectrumIndices(M, N, n, 777);
    const feeds = {
      s: new ort.Tensor(
        "float32",
        Float32Array.from({ length: n }, () => rng.normal()),
        [n],
      ),
      g: new ort.Tensor(
        "float32",
        Float32Array.from({ length: M * N }, () => rng.normal()),
        [M, N],
      ),
    };
    const routes = [
      await session("factored", M, N, n, factored(M, N, rows, cols)),
      await session("dense", M, N, n, dense(M, N, rows, cols)),
      await session("dft", M, N, n, dft(M, N, rows, cols)),
    ];
    const outs = [];
    for (const s of routes) outs.push(await s.run(feeds));
    const diff = (a: ort.Tensor, b: ort.Tensor) => {
      const x = a.data as Float32Array;
      const y = b.data as Float32Array;
      let m = 0;
      for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
      return m;
    };
    const dW = Math.max(diff(outs[0].dw, outs[1].dw), diff(outs[0].dw, outs[2].dw));
    const dS = Math.max(diff(outs[0].gs, outs[1].gs), diff(outs[0].gs, outs[2].gs));
    const times: number[][] = routes.map(() => []);
    for (let round = 0; round < ROUNDS; round++)
      for (let i = 0; i < routes.length; i++) {
        await routes[i].run(feeds);
        const t0 = process.cpuUsage();
        for (let k = 0; k < REPS; k++) await routes[i].run(feeds);
        const t = process.cpuUsage(t0);
        times[i].push((t.user + t.system) / 1e3 / REPS);
      }
    const [a, b, c] = times.map(median);
    console.log(
      `${`${M}x${N}`.padEnd(12)} ${a.toFixed(3).padStart(8)} ${b.toFixed(3).padStart(8)} ${c.toFixed(3).padStart(8)}   ${(b / a).toFixed(2).padStart(12)}  ${(c / a).toFixed(2).padStart(12)}   ${dW.toExponential(2).padStart(12)}  ${dS.toExponential(2).padStart(12)}`,
    );
    for (const s of routes) await s.release();
  }
}

await main();
