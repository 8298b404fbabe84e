/**
 * Where a warm start's session creation goes: times reading and verifying compile cache entries
 * and ORT's InferenceSession.create on them (and on emitted models) at given optimisation levels,
 * in wall and CPU seconds (session creation runs on one thread, so CPU time is robust to other
 * jobs). Models come from PEFTKIT_DUMP_ONNX (emitted) and PEFTKIT_CACHE (optimized, .ortm):
 *
 *   PEFTKIT_CACHE=/tmp/c PEFTKIT_DUMP_ONNX=/tmp/d peftkit bench train --config bench/configs/smollm2-135m.json --steps 1 --peak 1 [--static-shapes]
 *   node dist/bench/startup-phases.js all:/tmp/d/<model>.onnx disabled:/tmp/c/compile/<key>.ortm basic:/tmp/c/compile/<key>.ortm
 */
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { decodeEntry } from "../src/io/compile-cache.js";

type Level = "disabled" | "basic" | "extended" | "all";

async function timeCreate(level: Level, file: string): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const raw = readFileSync(file);
  let model: Uint8Array = raw;
  if (file.endsWith(".ortm")) {
    const got = decodeEntry(raw);
    if ("error" in got) throw new Error(`${file}: ${got.error}`);
    model = got.payload;
  }
  const readMs = performance.now() - t0;
  const readCpu = process.cpuUsage(c0);
  const c1 = process.cpuUsage();
  const t1 = performance.now();
  const s = await ort.InferenceSession.create(model, {
    executionProviders: ["cpu"],
    intraOpNumThreads: 2,
    interOpNumThreads: 1,
    executionMode: "sequential",
    enableMemPattern: false,
    graphOptimizationLevel: level,
    logSeverityLevel: 3,
  });
  const createMs = performance.now() - t1;
  const cpu = process.cpuUsage(c1);
  await s.release();
  return {
    file,
    level,
    bytes: model.byteLength,
    read_ms: readMs,
    read_cpu_ms: (readCpu.user + readCpu.system) / 1000,
    create_ms: createMs,
    create_cpu_ms: (cpu.user + cpu.system) / 1000,
  };
}

for (const arg of process.argv.slice(2)) {
  const k = arg.indexOf(":");
  const level = arg.slice(0, k) as Level;
  console.log(JSON.stringify(await timeCreate(level, arg.slice(k + 1))));
}
