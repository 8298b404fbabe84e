/**
 * `npm run bench:engine` / `peftkit bench engine [--json]`:
 *  1. matmul GFLOP/s through the engine (trace → emit → OrtExecutor) against the same MatMul as a
 *     bare single-node ORT session, at several sizes; the best engine figure is the "matmul peak";
 *  2. one LLaMA-style block (hidden 576, 9 heads, 3 KV heads, seq 256, batch 4), frozen weights,
 *     rank-16 low-rank updates on every linear layer: forward + backward + AdamW as one session,
 *     as GFLOP/s (analytic) and as a fraction of the matmul peak.
 */
import { availableParallelism, cpus } from "node:os";
import * as ort from "onnxruntime-node";
import { compileGraph } from "../src/engine/exec/backend.js";
import { encodeModel } from "../src/engine/exec/onnx/onnx-proto.js";
import { hostTensor } from "../src/engine/ir/host.js";
import { TrainStep } from "../src/engine/optim/train-step.js";
import { trace } from "../src/engine/trace/trace.js";
import { blockDefinition, blockInit, blockStepFlops, SMOLLM_BLOCK } from "./block.js";

export interface BenchRow {
  bench: string;
  case: string;
  ms: number;
  gflops: number;
  [k: string]: string | number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Times two runs interleaved after warming both, alternating which goes first in each pair, so
 * clock-frequency and thread-pool drift land on both sides equally. Returns both medians and the
 * median of the per-pair ratios b/a (robust to drift across the whole measurement).
 */
async function timePair(a: () => Promise<unknown>, b: () => Promise<unknown>, runs: number): Promise<[number, number, number]> {
  for (let i = 0; i < 3; i++) {
    await a();
    await b();
  }
  const ta: number[] = [];
  const tb: number[] = [];
  const timeOne = async (f: () => Promise<unknown>) => {
    const t = performance.now();
    await f();
    return performance.now() - t;
  };
  for (let i = 0; i < runs; i++) {
    if (i % 2 === 0) {
      ta.push(await timeOne(a));
      tb.push(await timeOne(b));
    } else {
      tb.push(await timeOne(b));
      ta.push(await timeOne(a));
    }
  }
  return [median(ta), median(tb), median(ta.map((x, i) => tb[i] / x))];
}

async function timeIt(run: () => Promise<unknown>, minRuns: number, minMs: number): Promise<number> {
  await run();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minRuns || performance.now() - start < minMs) {
    const t = performance.now();
    await run();
    times.push(performance.now() - t);
  }
  return median(times);
}

function randomF32(n: number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
}

export async function matmulRows(threads: number, sizes: readonly number[] = [1024, 2048, 4096]): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const n of sizes) {
    const flops = 2 * n ** 3;
    const a = hostTensor("f32", [n, n], randomF32(n * n));
    const b = hostTensor("f32", [n, n], randomF32(n * n));
    const g = trace(
      (x, y) => x.matmul(y),
      [
        { dtype: "f32", shape: [n, n] },
        { dtype: "f32", shape: [n, n] },
      ],
    );
    const exec = await compileGraph(g, { threads });

    const model = encodeModel({
      name: "bare",
      nodes: [{ opType: "MatMul", inputs: ["a", "b"], outputs: ["c"] }],
      initializers: [],
      inputs: [
        { name: "a", dtype: "f32", shape: [n, n] },
        { name: "b", dtype: "f32", shape: [n, n] },
      ],
      outputs: [{ name: "c", dtype: "f32", shape: [n, n] }],
    });
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
    });
    const feeds = {
      a: new ort.Tensor("float32", a.data as Float32Array, [n, n]),
      b: new ort.Tensor("float32", b.data as Float32Array, [n, n]),
    };
    const [engineMs, bareMs, ratio] = await timePair(
      () => exec.run([a, b]),
      () => session.run(feeds),
      n >= 4096 ? 6 : n >= 2048 ? 20 : 60,
    );
    await session.release();
    await exec.release();
    rows.push({
      bench: "matmul",
      case: `${n}^3`,
      ms: engineMs,
      gflops: flops / engineMs / 1e6,
      bare_ms: bareMs,
      bare_gflops: flops / bareMs / 1e6,
      engine_vs_bare: ratio,
    });
  }
  return rows;
}

async function blockRow(threads: number, peak: number, steps: number): Promise<BenchRow> {
  const shape = SMOLLM_BLOCK;
  const init = blockInit(shape);
  const t0 = performance.now();
  const step = await TrainStep.create(blockDefinition(shape), { params: init.params, frozen: init.frozen }, { threads });
  const compileMs = performance.now() - t0;
  const ms = await timeIt(() => step.step(init.batch, { lr: 1e-4 }), steps, 0);
  await step.release();
  const flops = blockStepFlops(shape);
  const gflops = flops / ms / 1e6;
  return {
    bench: "block_step",
    case: `hidden ${shape.hidden}, heads ${shape.heads}/${shape.kvHeads}, seq ${shape.seq}, batch ${shape.batch}, lora r=${shape.rank}`,
    ms,
    gflops,
    analytic_gflop: flops / 1e9,
    peak_gflops: peak,
    fraction_of_peak: gflops / peak,
    compile_ms: compileMs,
    tokens_per_s: (shape.batch * shape.seq) / (ms / 1000),
  };
}

export async function runEngineBench(opts: { json?: boolean; threads?: number; steps?: number } = {}): Promise<BenchRow[]> {
  const threads = opts.threads ?? Math.min(2, availableParallelism());
  const mm = await matmulRows(threads);
  const peak = Math.max(...mm.map((r) => r.gflops));
  const block = await blockRow(threads, peak, opts.steps ?? 10);
  const rows = [...mm, block];
  const meta = { date: new Date().toISOString(), cpu: cpus()[0]?.model ?? "unknown", threads, node: process.version };
  if (opts.json) {
    for (const r of rows) console.log(JSON.stringify({ ...meta, ...r }));
  } else {
    console.log(`engine benchmark — ${meta.cpu}, ${threads} threads, ${meta.date}`);
    console.log("| case | engine ms | engine GFLOP/s | bare ORT GFLOP/s | engine/bare |");
    console.log("|---|---|---|---|---|");
    for (const r of mm) {
      console.log(
        `| matmul ${r.case} | ${r.ms.toFixed(2)} | ${r.gflops.toFixed(1)} | ${(r.bare_gflops as number).toFixed(1)} | ${(r.engine_vs_bare as number).toFixed(3)} |`,
      );
    }
    console.log(`\nmatmul peak (best engine matmul): ${peak.toFixed(1)} GFLOP/s`);
    console.log(
      `block step (${block.case}): ${block.ms.toFixed(1)} ms, ${(block.analytic_gflop as number).toFixed(2)} GFLOP, ` +
        `${block.gflops.toFixed(1)} GFLOP/s = ${((block.fraction_of_peak as number) * 100).toFixed(1)}% of peak, ` +
        `${(block.tokens_per_s as number).toFixed(0)} tokens/s, compile ${(block.compile_ms as number).toFixed(0)} ms`,
    );
  }
  return rows;
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\/dist\//, "/dist/"));
if (isMain) {
  runEngineBench({ json: process.argv.includes("--json") }).catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
