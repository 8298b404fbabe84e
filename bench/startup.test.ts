/** `peftkit bench train --startup`: the warm process loads every session from the compile cache the cold one filled. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

const startup = (...extra: string[]) => {
  const r = spawnSync(
    process.execPath,
    [
      resolve(root, "dist/src/cli/main.js"),
      "bench",
      "train",
      "--config",
      "test/golden/models/llama_basic/config.json",
      "--seq",
      "8",
      "--batch",
      "2",
      "--startup",
      "--json",
      ...extra,
    ],
    { cwd: root, encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as Record<string, number>;
};

test("bench train --startup: cold optimizes, warm loads from the cache; both report start to end of first step", () => {
  const row = startup();
  assert.ok(row.cold_sessions_optimized >= 1);
  assert.equal(row.cold_sessions_from_cache, 0);
  assert.equal(row.warm_sessions_optimized, 0, "the warm process compiled again");
  assert.equal(row.warm_sessions_from_cache, row.cold_sessions_optimized);
  for (const k of ["cold", "warm"]) assert.ok(row[`${k}_start_to_first_step_ms`] > row[`${k}_first_step_ms`]);
  // --static-shapes: the same, with the step compiled for this batch and seq, and the same loss
  const fixed = startup("--static-shapes");
  assert.ok(fixed.cold_sessions_optimized >= 1);
  assert.equal(fixed.warm_sessions_optimized, 0, "the warm process compiled again (static shapes)");
  assert.equal(fixed.warm_sessions_from_cache, fixed.cold_sessions_optimized);
  assert.ok(Number.isFinite(row.warm_loss));
  for (const k of ["cold", "warm"]) assert.equal(fixed[`${k}_loss`], row[`${k}_loss`], `${k}: static shapes changed the loss`);
});
