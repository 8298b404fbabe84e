/** The persistent compile cache: hits skip ORT's optimizer, results match, corruption, cap, concurrency, CLI. */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { OrtExecutor, ortCompileStats } from "../engine/exec/onnx/session.js";
import { hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import { spec, trace } from "../engine/trace/trace.js";
import { cacheLocation, DiskCompileCache, decodeEntry, encodeEntry } from "./compile-cache.js";

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, "../cli/main.js");
const tmp = () => fs.mkdtempSync(join(tmpdir(), "peftkit-cc-"));

/** A graph ORT's optimizer rewrites (Transpose→MatMul fusion, Gelu/LayerNorm fusions). */
const block = (x: Tensor, w: Tensor, g: Tensor) => {
  const h = x.matmul(w.transpose());
  const m = h.sub(h.mean([-1], true));
  const y = m.mul(m.square().mean([-1], true).add(1e-5).rsqrt()).mul(g);
  return [y.mul(y.mul(0.7978845608).tanh().add(1)).mul(0.5).sum(-1)];
};
const specs = [spec("f32", ["batch", 16], "x"), spec("f32", [24, 16], "w"), spec("f32", [24], "g")];
const feeds = () => {
  let s = 7;
  const next = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648) * 2 - 1;
  };
  const r = (n: number) => Float32Array.from({ length: n }, next);
  return [hostTensor("f32", [5, 16], r(80)), hostTensor("f32", [24, 16], r(384)), hostTensor("f32", [24], r(24))];
};

/** Runs `fn` and returns what it wrote to stderr. */
async function captureStderr(fn: () => Promise<void>): Promise<string> {
  const orig = process.stderr.write.bind(process.stderr);
  let out = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    out += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = orig;
  }
  return out;
}

async function runOnce(cache: DiskCompileCache | null): Promise<Float32Array> {
  const e = await OrtExecutor.create(trace(block, specs), { cache, threads: 1 });
  try {
    return (await e.run(feeds()))[0].data as Float32Array;
  } finally {
    await e.release(); // frees the in-process session, so the next create goes to ORT or the disk cache
  }
}

test("a cache hit loads ORT's optimized model instead of optimizing, and computes the same bits", async () => {
  const dir = tmp();
  const cache = new DiskCompileCache(dir);
  const uncached = await runOnce(null);
  const s0 = ortCompileStats();
  const first = await runOnce(cache);
  const s1 = ortCompileStats();
  assert.deepEqual(s1, { optimized: s0.optimized + 1, fromCache: s0.fromCache }, "a miss optimizes");
  assert.equal(cache.entries().length, 1, "the optimized model was stored");
  const second = await runOnce(cache);
  const s2 = ortCompileStats();
  assert.deepEqual(s2, { optimized: s1.optimized, fromCache: s1.fromCache + 1 }, "a hit skips the optimizer");
  assert.deepEqual(Buffer.from(first.buffer), Buffer.from(uncached.buffer));
  assert.deepEqual(Buffer.from(second.buffer), Buffer.from(uncached.buffer), "cached session differs from an uncached one");
  assert.deepEqual(
    fs.readdirSync(dir).filter((n) => !n.endsWith(".ortm")),
    [],
    "no scratch or temporary file left behind",
  );
});

test("staticShapes: one cached model per shape, created at the first run; a known shape hits, a new one compiles; same bits as symbolic dims", async () => {
  const dir = tmp();
  const cache = new DiskCompileCache(dir);
  const feedsAt = (batch: number) => {
    const [x, w, g] = feeds();
    return [hostTensor("f32", [batch, 16], (x.data as Float32Array).slice(0, batch * 16)), w, g];
  };
  const symbolic = await OrtExecutor.create(trace(block, specs), { cache: null, threads: 1 });
  const want = new Map<number, Buffer>();
  for (const b of [5, 3, 2]) want.set(b, Buffer.from(((await symbolic.run(feedsAt(b)))[0].data as Float32Array).buffer));
  await symbolic.release();

  const s0 = ortCompileStats();
  const e = await OrtExecutor.create(trace(block, specs), { cache, threads: 1, staticShapes: true });
  assert.deepEqual(ortCompileStats(), s0, "no session before the first run");
  assert.equal(cache.entries().length, 0);
  for (const b of [5, 3, 5]) {
    const got = (await e.run(feedsAt(b)))[0];
    assert.deepEqual(got.shape, [b]);
    assert.deepEqual(Buffer.from((got.data as Float32Array).buffer), want.get(b), `batch ${b}`);
  }
  assert.deepEqual(ortCompileStats(), { optimized: s0.optimized + 2, fromCache: s0.fromCache }, "one compile per shape, reused");
  assert.equal(cache.entries().length, 2, "the shape is part of the key");
  await e.release();

  // a later process: a known shape loads from the cache, a new one compiles its own entry
  const f = await OrtExecutor.create(trace(block, specs), { cache, threads: 1, staticShapes: true });
  assert.deepEqual(Buffer.from(((await f.run(feedsAt(3)))[0].data as Float32Array).buffer), want.get(3));
  assert.deepEqual(ortCompileStats(), { optimized: s0.optimized + 2, fromCache: s0.fromCache + 1 }, "batch 3 is a hit");
  assert.deepEqual(Buffer.from(((await f.run(feedsAt(2)))[0].data as Float32Array).buffer), want.get(2));
  assert.deepEqual(ortCompileStats(), { optimized: s0.optimized + 3, fromCache: s0.fromCache + 1 }, "batch 2 compiles");
  assert.equal(cache.entries().length, 3);
  await f.release();
});

test("a corrupt entry (flipped byte, truncated, or a model ORT rejects) is dropped with a warning naming it, and rebuilt", async () => {
  const dir = tmp();
  const cache = new DiskCompileCache(dir);
  const want = await runOnce(cache);
  const [entry] = cache.entries();
  const good = fs.readFileSync(entry.path);
  const damage: [string, Buffer][] = [
    ["flipped byte", Buffer.from(good.map((b, i) => (i === good.length - 100 ? b ^ 0x10 : b)))],
    ["truncated", good.subarray(0, good.length - 33)],
    ["header", Buffer.from("not a cache entry")],
    ["garbage model with a valid checksum", Buffer.concat(encodeEntry(new Uint8Array(4096).fill(7)))],
  ];
  for (const [what, bytes] of damage) {
    fs.writeFileSync(entry.path, bytes);
    const before = ortCompileStats();
    let got: Float32Array = new Float32Array();
    const err = await captureStderr(async () => {
      got = await runOnce(cache);
    });
    assert.match(err, /^peftkit: warning: compile cache entry .*\.ortm is corrupt or stale \(.+\); compiling it again\n$/, what);
    assert.ok(err.includes(entry.path), `${what}: the warning names the entry`);
    assert.equal(err.trim().split("\n").length, 1, `${what}: one line`);
    assert.equal(ortCompileStats().optimized, before.optimized + 1, `${what}: rebuilt`);
    assert.deepEqual(Buffer.from(got.buffer), Buffer.from(want.buffer), what);
    const again = decodeEntry(fs.readFileSync(entry.path));
    assert.ok("payload" in again, `${what}: the rebuilt entry is valid`);
  }
});

test("the size cap evicts least recently used entries; a hit counts as a use", () => {
  const dir = tmp();
  const entryBytes = 1000 + 48;
  const cache = new DiskCompileCache(dir, 2 * entryBytes + 10);
  const key = (c: string) => c.repeat(64);
  const age = (k: string, secondsAgo: number) => {
    const t = new Date(Date.now() - secondsAgo * 1000);
    fs.utimesSync(cache.entryPath(key(k)), t, t);
  };
  cache.put(key("a"), new Uint8Array(1000).fill(1));
  age("a", 30);
  cache.put(key("b"), new Uint8Array(1000).fill(2));
  age("b", 20);
  assert.ok(cache.get(key("a")), "a is stored");
  // a was just read, so b is now the least recently used
  cache.put(key("c"), new Uint8Array(1000).fill(3));
  assert.deepEqual(
    cache
      .entries()
      .map((e) => e.key)
      .sort(),
    [key("a"), key("c")],
  );
  assert.equal(cache.get(key("b")), undefined);
  assert.ok(cache.entries().reduce((n, e) => n + e.bytes, 0) <= cache.maxBytes);
});

test("two processes writing and reading the same entries concurrently never see a torn one", async () => {
  const dir = tmp();
  const mod = resolve(here, "compile-cache.js");
  // Each child rewrites the same shared key and reads it back many times; any torn read would be
  // reported as a corrupt entry on stderr (and dropped).
  const child = (id: number) =>
    new Promise<{ code: number | null; err: string }>((done) => {
      const code = `
        const { DiskCompileCache } = await import(${JSON.stringify(mod)});
        const c = new DiskCompileCache(${JSON.stringify(dir)});
        const key = "ab".repeat(32);
        let hits = 0;
        for (let i = 0; i < 40; i++) {
          c.put(key, new Uint8Array(2_000_000 + ${id} * 1000 + i).fill(${id} + i));
          const got = c.get(key);
          if (got) { hits++; if (!got.every((v) => v === got[0])) { console.error("mixed entry"); process.exit(3); } }
        }
        if (hits === 0) process.exit(4);
      `;
      const p = spawn(process.execPath, ["--input-type=module", "-e", code], { stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      p.stderr.on("data", (d) => {
        err += d;
      });
      p.on("close", (c) => done({ code: c, err }));
    });
  const results = await Promise.all([child(1), child(2)]);
  for (const r of results) {
    assert.equal(r.err, "");
    assert.equal(r.code, 0);
  }
  const left = fs.readdirSync(dir);
  assert.deepEqual(left, [`${"ab".repeat(32)}.ortm`], "one entry, no temporaries");
  assert.ok("payload" in decodeEntry(fs.readFileSync(join(dir, left[0]))));
});

test("PEFTKIT_CACHE picks the folder, 'off' disables, default is the user's cache folder; a bad cap is one clear error", () => {
  assert.equal(cacheLocation({ PEFTKIT_CACHE: "/x/y" }).dir, join("/x/y", "compile"));
  assert.equal(cacheLocation({ PEFTKIT_CACHE: "off" }).dir, null);
  assert.equal(cacheLocation({ XDG_CACHE_HOME: "/c" }).root, join("/c", "peftkit"));
  assert.ok(cacheLocation({}).root?.endsWith(join(".cache", "peftkit")));
  assert.equal(cacheLocation({ PEFTKIT_CACHE_MAX_MB: "1.5" }).maxBytes, 1.5 * 1024 * 1024);
  assert.throws(
    () => cacheLocation({ PEFTKIT_CACHE_MAX_MB: "lots" }),
    /^CompileCacheError: PEFTKIT_CACHE_MAX_MB must be a positive number of megabytes, got "lots"$/,
  );
  assert.throws(() => cacheLocation({ PEFTKIT_CACHE_MAX_MB: "0" }), /PEFTKIT_CACHE_MAX_MB/);
});

test("peftkit cache info|clear", () => {
  const root = tmp();
  const cli = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [CLI, "cache", ...args], { encoding: "utf8", env: { ...process.env, PEFTKIT_CACHE: root, ...env } });
  let r = cli(["info", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    enabled: true,
    location: join(root, "compile"),
    entries: 0,
    bytes: 0,
    max_bytes: 2048 * 1024 * 1024,
  });
  const cache = new DiskCompileCache(join(root, "compile"));
  cache.put("12".repeat(32), new Uint8Array(500));
  cache.put("34".repeat(32), new Uint8Array(700));
  fs.writeFileSync(join(root, "compile", "keep-me.txt"), "not ours");
  r = cli(["info", "--json"], { PEFTKIT_CACHE_MAX_MB: "10" });
  assert.deepEqual(JSON.parse(r.stdout), {
    enabled: true,
    location: join(root, "compile"),
    entries: 2,
    bytes: 1200 + 96,
    max_bytes: 10 * 1024 * 1024,
  });
  r = cli(["info"]);
  assert.match(r.stdout, /^location: .*compile \(PEFTKIT_CACHE\)\nentries: 2\nsize: 0\.0 MB of 2048\.0 MB/);
  r = cli(["clear"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^removed 2 file\(s\)/);
  assert.deepEqual(fs.readdirSync(join(root, "compile")), ["keep-me.txt"], "clear removes only the cache's own files");
  r = cli(["info"], { PEFTKIT_CACHE: "off" });
  assert.equal(r.stdout.trim(), "the compile cache is off (PEFTKIT_CACHE=off)");
  r = cli(["info"], { PEFTKIT_CACHE_MAX_MB: "-3" });
  assert.equal(r.status, 2);
  assert.equal(r.stderr, 'peftkit: PEFTKIT_CACHE_MAX_MB must be a positive number of megabytes, got "-3"\n');
  r = cli(["purge"]);
  assert.equal(r.status, 2);
});
