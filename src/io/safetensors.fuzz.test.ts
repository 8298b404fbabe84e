/**
 * Fuzzes the safetensors reader: thousands of randomly damaged files must each either read cleanly
 * or fail with a SafetensorsError, never with another exception and never by hanging. The loop runs
 * in a worker thread so that a hang (which a synchronous loop cannot notice itself) is caught by a
 * timeout in the main thread and the worker terminated.
 *
 * Reproduce a failure with PEFTKIT_FUZZ_SEED=<seed printed in the failure>.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { hostTensor } from "../engine/ir/host.js";
import { SAFETENSORS_DTYPES, SafetensorsError, SafetensorsFile, serializeSafetensors } from "./safetensors.js";

const ITERATIONS = 3000;
// A hang detector, not a speed target: generous, so a loaded machine does not trip it.
const TIME_LIMIT_MS = 90_000;

interface FuzzInput {
  seed: number;
  iterations: number;
  dir: string;
}

interface FuzzFailure {
  iteration: number;
  mutations: string[];
  header: string;
  error: string;
}

interface FuzzResult {
  accepted: number;
  rejected: number;
  slowestMs: number;
  failures: FuzzFailure[];
  rejectReasons: Record<string, number>;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.byteLength, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

function baseFiles(): Uint8Array[] {
  const u16 = (vals: number[]) => new Uint8Array(Uint16Array.from(vals).buffer);
  const files: Uint8Array[] = [
    concat(
      serializeSafetensors(
        {
          "model.w": hostTensor("f32", [2, 3], [1, 2, 3, 4, 5, 6]),
          "model.step": hostTensor("i64", [], [7]),
        },
        { format: "pt" },
      ),
    ),
    concat(
      serializeSafetensors({
        h: hostTensor("f16", [4], Uint16Array.from([0x3c00, 0x4000, 0xc000, 0x0001])),
        b: { dtype: "BF16", shape: [2, 2], data: u16([0x3f80, 0x4000, 0xbf80, 0x7f80]) },
        m: hostTensor("bool", [3], Uint8Array.from([1, 0, 1])),
        u: { dtype: "U8", shape: [5], data: Uint8Array.from([0, 1, 2, 254, 255]) },
        s: { dtype: "I16", shape: [2], data: u16([0xffff, 5]) },
        q: { dtype: "U32", shape: [1], data: Uint8Array.from([1, 2, 3, 4]) },
      }),
    ),
    concat(
      serializeSafetensors(
        {
          e: hostTensor("f32", [0, 3], []),
          z: hostTensor("f64", [], [Math.PI]),
          v: hostTensor("f64", [2], [-1, 1e300]),
          n: hostTensor("i32", [2, 0], []),
        },
        { a: "1", "b c": "ü" },
      ),
    ),
    concat(
      serializeSafetensors(
        Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`layers.${i}.bias`, hostTensor("i32", [i % 3], Array(i % 3).fill(i))])),
      ),
    ),
    concat(serializeSafetensors({})),
  ];
  // written by hand: header order differs from data order, no padding
  const header = '{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}';
  const h = new TextEncoder().encode(header);
  const hand = new Uint8Array(8 + h.length + 8);
  new DataView(hand.buffer).setBigUint64(0, BigInt(h.length), true);
  hand.set(h, 8);
  hand.set([1, 0, 2, 0, 0, 0, 0x80, 0x3f], 8 + h.length);
  files.push(hand);
  return files;
}

const NUMBERS = ["0", "1", "2", "-1", "1.5", "1e3", "8", "16", "4294967296", "9007199254740993", "99999999999999999999", "1e400", "-0"];
const DTYPE_NAMES = [...SAFETENSORS_DTYPES, "F8_E4M3", "F8_E5M2", "C64", "garbage", "", "f32"];
const SNIPPETS = [",", "{", "}", "[", "]", '"', ":", "null", "true", " ", "\\", '"__metadata__":{"k":1},', '"x":{},', "\u00e9", "\ud800"];
const HEADER_CHARS = '{}[]":,0123456789-.eE \\a_';

function runFuzz(input: FuzzInput): FuzzResult {
  const rand = mulberry32(input.seed);
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const bases = baseFiles();
  const file = path.join(input.dir, "fuzz.safetensors");
  const result: FuzzResult = { accepted: 0, rejected: 0, slowestMs: 0, failures: [], rejectReasons: {} };

  for (let it = 0; it < input.iterations; it++) {
    let bytes: Uint8Array = bases[int(bases.length)].slice();
    const mutations: string[] = [];
    const rounds = 1 + int(3);
    for (let r = 0; r < rounds; r++) {
      const hlen = bytes.length >= 8 ? Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)) : 0;
      const sane = bytes.length >= 8 && hlen <= bytes.length - 8;
      const kind = int(sane ? 10 : 5);
      switch (kind) {
        case 0: {
          if (!bytes.length) break;
          const i = int(bytes.length);
          bytes[i] ^= 1 << int(8);
          mutations.push(`flip bit at ${i}`);
          break;
        }
        case 1: {
          const i = int(Math.min(8, bytes.length));
          bytes[i] = rand() < 0.5 ? int(256) : bytes[i] + pick([1, -1, 8, -8]);
          mutations.push(`prefix byte ${i} = ${bytes[i]}`);
          break;
        }
        case 2: {
          const n = int(bytes.length + 1);
          bytes = bytes.slice(0, n);
          mutations.push(`truncate to ${n}`);
          break;
        }
        case 3: {
          const add = Uint8Array.from({ length: 1 + int(16) }, () => (rand() < 0.5 ? 0 : int(256)));
          bytes = concat([bytes, add]);
          mutations.push(`extend by ${add.length}`);
          break;
        }
        case 4: {
          if (bytes.length <= 8) break;
          const i = 8 + int(bytes.length - 8);
          bytes[i] = rand() < 0.5 ? HEADER_CHARS.charCodeAt(int(HEADER_CHARS.length)) : int(256);
          mutations.push(`byte ${i} = ${bytes[i]}`);
          break;
        }
        default: {
          // Structural edits of the header text; usually the length prefix is fixed up afterwards so
          // the damage reaches the validation past JSON parsing.
          const header = Buffer.from(bytes.subarray(8, 8 + hlen)).toString("latin1");
          const data = bytes.subarray(8 + hlen);
          let h = header;
          const op = int(7);
          if (op === 0) {
            const runs = [...h.matchAll(/-?\d+(\.\d+)?/g)];
            if (runs.length) {
              const m = pick(runs);
              const rep = rand() < 0.5 ? pick(NUMBERS) : String(Number(m[0]) + pick([1, -1, 2, -2, 4, -4, 8, -8]));
              h = h.slice(0, m.index) + rep + h.slice(m.index + m[0].length);
              mutations.push(`number ${m[0]}@${m.index} -> ${rep}`);
            }
          } else if (op === 1) {
            const ds = [...h.matchAll(/"dtype":"([^"]*)"/g)];
            if (ds.length) {
              const m = pick(ds);
              const rep = pick(DTYPE_NAMES);
              h = `${h.slice(0, m.index)}"dtype":"${rep}"${h.slice(m.index + m[0].length)}`;
              mutations.push(`dtype ${m[1]} -> ${rep}`);
            }
          } else if (op === 2 || op === 3) {
            const es = [...h.matchAll(/"[^"]*":\{[^{}]*\}/g)];
            if (es.length) {
              const m = pick(es);
              const end = m.index + m[0].length;
              if (op === 2) {
                h = `${h.slice(0, end)},${m[0]}${h.slice(end)}`;
                mutations.push(`duplicate entry ${m[0].slice(0, 30)}`);
              } else {
                const start = h[m.index - 1] === "," ? m.index - 1 : m.index;
                const stop = start === m.index && h[end] === "," ? end + 1 : end;
                h = h.slice(0, start) + h.slice(stop);
                mutations.push(`delete entry ${m[0].slice(0, 30)}`);
              }
            }
          } else if (op === 4) {
            const keys = [...h.matchAll(/"([^"]*)":\{/g)];
            if (keys.length >= 2) {
              const a = pick(keys);
              const b = pick(keys);
              h = `${h.slice(0, a.index)}"${b[1]}":{${h.slice(a.index + a[0].length)}`;
              mutations.push(`rename key ${a[1]} -> ${b[1]}`);
            }
          } else if (op === 5) {
            const offs = [...h.matchAll(/"data_offsets":\[\d+,\d+\]/g)];
            const shapes = [...h.matchAll(/"shape":\[[\d,]*\]/g)];
            const pool = rand() < 0.5 ? offs : shapes;
            if (pool.length >= 2) {
              const i = int(pool.length);
              let j = int(pool.length);
              if (j === i) j = (j + 1) % pool.length;
              const [x, y] = i < j ? [pool[i], pool[j]] : [pool[j], pool[i]];
              h = h.slice(0, x.index) + y[0] + h.slice(x.index + x[0].length, y.index) + x[0] + h.slice(y.index + y[0].length);
              mutations.push(`swap ${x[0]} <-> ${y[0]}`);
            }
          } else {
            const at = int(h.length + 1);
            const s = pick(SNIPPETS);
            h = h.slice(0, at) + s + h.slice(at);
            mutations.push(`insert ${JSON.stringify(s)} at ${at}`);
          }
          const hb = Buffer.from(h, [...h].some((c) => c.charCodeAt(0) > 0xff) ? "utf8" : "latin1");
          const out = new Uint8Array(8 + hb.length + data.length);
          const fix = rand() < 0.85;
          new DataView(out.buffer).setBigUint64(0, fix ? BigInt(hb.length) : BigInt(hlen), true);
          out.set(hb, 8);
          out.set(data, 8 + hb.length);
          bytes = out;
          if (!fix) mutations.push("keep old length prefix");
        }
      }
    }

    fs.writeFileSync(file, bytes);
    const t0 = performance.now();
    let f: SafetensorsFile | undefined;
    try {
      f = SafetensorsFile.open(file);
      let total = 0;
      for (const e of f.entries) {
        const raw = f.readRaw(e.name);
        if (raw.length !== e.byteLength) throw new Error(`readRaw gave ${raw.length} bytes for "${e.name}", entry says ${e.byteLength}`);
        const t = f.read(e.name);
        const numel = t.shape.reduce((a, b) => a * b, 1);
        if (t.data.length !== numel) throw new Error(`tensor "${e.name}" has ${t.data.length} values for shape [${t.shape}]`);
        total += e.byteLength;
      }
      if (total !== f.fileSize - f.dataStart) throw new Error(`entries cover ${total} bytes of a ${f.fileSize - f.dataStart}-byte buffer`);
      result.accepted++;
    } catch (e) {
      if (e instanceof SafetensorsError) {
        result.rejected++;
        // bucket by which check fired: the text before any detail after a colon, names and numbers masked
        const reason = e.message
          .slice(file.length + 2)
          .replace(/"[^"]*"/g, "…")
          .replace(/\d+/g, "N")
          .split(":")[0]
          .slice(0, 40);
        result.rejectReasons[reason] = (result.rejectReasons[reason] ?? 0) + 1;
      } else if (result.failures.length < 3) {
        const n = bytes.length >= 8 ? Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)) : 0;
        result.failures.push({
          iteration: it,
          mutations,
          header: Buffer.from(bytes.subarray(8, 8 + Math.min(n, 2000))).toString("latin1"),
          error: e instanceof Error ? (e.stack ?? e.message) : String(e),
        });
      }
    } finally {
      f?.close();
    }
    result.slowestMs = Math.max(result.slowestMs, performance.now() - t0);
  }
  return result;
}

if (!isMainThread) {
  parentPort!.postMessage(runFuzz(workerData as FuzzInput));
} else {
  const { test } = await import("node:test");
  test(`safetensors reader survives ${ITERATIONS} mutated files`, { timeout: TIME_LIMIT_MS + 10_000 }, async (t) => {
    const envSeed = process.env.PEFTKIT_FUZZ_SEED;
    const seed = envSeed !== undefined ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "peftkit-st-fuzz-"));
    const worker = new Worker(new URL(import.meta.url), { workerData: { seed, iterations: ITERATIONS, dir } satisfies FuzzInput });
    let timer: NodeJS.Timeout | undefined;
    const started = performance.now();
    try {
      const result = await new Promise<FuzzResult>((resolve, reject) => {
        timer = setTimeout(() => {
          void worker.terminate();
          reject(new Error(`fuzz (seed ${seed}) did not finish within ${TIME_LIMIT_MS} ms: a hang or a very slow path`));
        }, TIME_LIMIT_MS);
        worker.once("message", resolve);
        worker.once("error", reject);
        worker.once("exit", (code) => reject(new Error(`fuzz worker (seed ${seed}) exited with code ${code} before reporting`)));
      });
      const elapsed = performance.now() - started;
      const report = `seed ${seed}: ${result.accepted} accepted, ${result.rejected} rejected, slowest iteration ${result.slowestMs.toFixed(1)} ms, total ${elapsed.toFixed(0)} ms`;
      t.diagnostic(report);
      t.diagnostic(`rejections by check: ${JSON.stringify(result.rejectReasons)}`);
      if (result.failures.length) {
        const detail = result.failures
          .map((f) => `iteration ${f.iteration} after [${f.mutations.join("; ")}]\nheader: ${f.header}\n${f.error}`)
          .join("\n\n");
        assert.fail(`${report}\nnon-SafetensorsError exceptions (rerun with PEFTKIT_FUZZ_SEED=${seed}):\n${detail}`);
      }
      assert.equal(result.accepted + result.rejected, ITERATIONS, report);
      assert.ok(result.accepted >= ITERATIONS / 50, `too few mutated files accepted; the mutations may be too destructive. ${report}`);
      assert.ok(result.rejected >= ITERATIONS / 4, `too few mutated files rejected. ${report}`);
      assert.ok(
        Object.keys(result.rejectReasons).length >= 12,
        `rejections hit few distinct checks: ${JSON.stringify(result.rejectReasons)}`,
      );
      assert.ok(result.slowestMs < 1000, `an iteration took ${result.slowestMs} ms. ${report}`);
    } finally {
      clearTimeout(timer);
      worker.removeAllListeners();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
