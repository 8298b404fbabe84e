import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";

const SOURCE = join(REPO_ROOT, "src/examples/quickstart.ts");

test("the README's library example is src/examples/quickstart.ts, character for character", () => {
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
  assert.equal(blocks.length, 1, "README.md should have exactly one ```ts block (the quickstart)");
  assert.equal(blocks[0], readFileSync(SOURCE, "utf8"));
});

test("the quickstart runs as a user would run it: training lowers the loss, the saved adapter reloads, merges and generates", () => {
  // The example uses paths relative to the working directory, as a user's script would.
  const cwd = mkdtempSync(join(tmpdir(), "peftkit-qs-"));
  try {
    symlinkSync(join(REPO_ROOT, "models"), join(cwd, "models"));
    const out = execFileSync(process.execPath, [join(REPO_ROOT, "dist/src/examples/quickstart.js")], { cwd, encoding: "utf8" });
    const lines = out.trim().split("\n");

    // The parameter count printed is the one the example's comment shows.
    const promised = /printTrainableParameters\(\); \/\/ (.*)$/m.exec(readFileSync(SOURCE, "utf8"))?.[1];
    assert.equal(lines[0], promised);

    const losses = lines.filter((l) => l.startsWith("step ")).map((l) => Number(l.split("loss ")[1]));
    assert.equal(losses.length, 5);
    for (let i = 1; i < losses.length; i++) assert.ok(losses[i] < losses[i - 1], `losses ${losses.join(", ")}`);

    assert.ok(existsSync(join(cwd, "runs/quickstart/adapter_config.json")));
    assert.ok(existsSync(join(cwd, "runs/quickstart/adapter_model.safetensors")));
    const generated = lines.at(-1) ?? "";
    assert.ok(generated.startsWith("a poodle is a kind of") && generated.length > "a poodle is a kind of".length, generated);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
