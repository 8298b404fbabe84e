import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { quickstart } from "./quickstart.js";

test("the README's worked example runs: training lowers the loss, save/reload/merge agree", async () => {
  const out = mkdtempSync(join(tmpdir(), "peftkit-qs-"));
  try {
    const r = await quickstart(join(REPO_ROOT, "models/wordnet-llama"), out);
    assert.ok(r.after < r.before, `loss ${r.before} → ${r.after}`);
    assert.ok(r.mergedMatches);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
