/**
 * The benchmark is reproducible from a clone: the PyTorch peer and the configs it needs are in the
 * repository, and the peer runs at 1 thread and at every core (when Debian's python3-torch is here).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join, normalize } from "node:path";
import { test } from "node:test";
import { benchCommand } from "../src/cli/commands/bench.js";
import { REPO_ROOT } from "../src/testing/paths.js";

const PEER = "bench/peer/torch_lora_peer.py";

function insideRepo(path: string): boolean {
  const p = normalize(path);
  return !isAbsolute(p) && !p.startsWith("..") && existsSync(join(REPO_ROOT, p));
}

test("`npm run bench` runs the peer from inside the repository", () => {
  const run = readFileSync(join(REPO_ROOT, "bench/run.ts"), "utf8");
  const scripts = [...run.matchAll(/["']([^"']*\.py)["']/g)].map((m) => m[1]);
  assert.deepEqual(scripts, [PEER]);
  assert.ok(insideRepo(PEER));
});

test("the configs in `peftkit bench` examples are files of the repository", () => {
  const configs = (benchCommand.examples ?? []).flatMap((e) => [...e.matchAll(/--config (\S+)/g)].map((m) => m[1]));
  assert.ok(configs.length > 0);
  for (const c of configs) assert.ok(insideRepo(c), `${c} (in a peftkit bench example) is not a file of the repository`);
});

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;

test("the PyTorch peer runs at 1 thread and at every core and reports its faster run", {
  skip: !hasTorch && !process.env.CI && "no python3-torch (CI installs it and fails without it)",
}, () => {
  const config = join(REPO_ROOT, "test/golden/models/llama_basic/config.json");
  const r = spawnSync("/usr/bin/python3", [join(REPO_ROOT, PEER), config, "2", "8", "1", "4"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "") as {
    threads: number;
    step_s: number;
    tokens_per_s: number;
    loss: number;
    peak_rss_mb: number;
    runs: { threads: number; step_s: number }[];
  };
  const cores = availableCores();
  assert.deepEqual(
    out.runs.map((x) => x.threads),
    [...new Set([1, cores])].sort((a, b) => a - b),
  );
  assert.equal(out.step_s, Math.min(...out.runs.map((x) => x.step_s)));
  assert.equal(out.threads, out.runs.find((x) => x.step_s === out.step_s)?.threads);
  // Random weights, 256-token vocabulary: the first loss is near ln 256.
  assert.ok(Math.abs(out.loss - Math.log(256)) < 0.5, `loss ${out.loss}`);
  assert.ok(out.peak_rss_mb > 0 && out.tokens_per_s > 0);
});

/** The cores this process may run on (what the peer's os.sched_getaffinity sees). */
function availableCores(): number {
  const r = spawnSync("/usr/bin/python3", ["-c", "import os; print(len(os.sched_getaffinity(0)))"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}
