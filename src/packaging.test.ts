/**
 * What `npm pack` would ship: everything a user needs (library, CLI, demo model, README) and no
 * tests or test helpers. Lists the tarball with `npm pack --dry-run` (no build, no archive), so it
 * sees package.json's "files" exactly as npm applies it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, posix } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "./testing/paths.js";

interface PackEntry {
  path: string;
}

function packedPaths(): string[] {
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts", "--loglevel=error"], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  const [report] = JSON.parse(out) as { files: PackEntry[] }[];
  return report.files.map((f) => f.path);
}

/** Files that exist only for the tests: test files, their helpers and the test data paths. */
const TEST_ONLY = [
  /\.test\./, // foo.test.js and its .d.ts/.map
  /\.test-util\./, // parquet-writer.test-util.js
  /(^|\/)test-util\./, // engine/exec/onnx/test-util.js
  /(^|\/)testing(\.|\/)/, // <folder>/testing.js, src/testing/
  /(^|\/)conformance\./, // the tuner conformance suite (imports node:test)
  /(^|\/)autodiff\/cases\./, // gradient-check cases
  /^(dist\/)?(scripts|test)\//, // build scripts, goldens
  /^bench\/(?!configs\/)/, // benchmark sources (their compiled modules ship: `peftkit bench` runs them)
  /^dist\/bench\/run\./, // `npm run bench`, which writes BENCHMARKS.md in a clone
  /^bench\/peer\//, // the PyTorch peer
];

/** Relative module specifiers in a compiled .js or .d.ts file. */
function relativeImports(source: string): string[] {
  const specs: string[] = [];
  for (const m of source.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"']+)["']/g)) specs.push(m[1]);
  return specs;
}

test("npm pack ships the library, the CLI, the embedded models and the README, and no tests or test helpers", () => {
  const paths = packedPaths();
  const shipped = new Set(paths);

  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
    main: string;
    types: string;
    bin: Record<string, string>;
  };
  const needed = [
    "package.json",
    "README.md",
    pkg.main,
    pkg.types,
    ...Object.values(pkg.bin),
    "models/wordnet-llama/config.json",
    "models/wordnet-llama/model.safetensors",
    "models/wordnet-llama/tokenizer.json",
    "models/wordnet-bert/config.json",
    "models/wordnet-bert/model.safetensors",
    "models/wordnet-bert/tokenizer.json",
    "bench/configs/smollm2-135m.json",
  ].map((p) => posix.normalize(p));
  for (const p of needed) assert.ok(shipped.has(p), `${p} is missing from the tarball`);

  const testOnly = paths.filter((p) => TEST_ONLY.some((re) => re.test(p)));
  assert.deepEqual(testOnly, [], `test files in the tarball (${testOnly.length}): ${testOnly.slice(0, 5).join(", ")}`);

  for (const p of paths.filter((x) => /\.(js|d\.ts)$/.test(x))) {
    const source = readFileSync(join(REPO_ROOT, p), "utf8");
    assert.ok(!/["']node:(test|assert)(\/strict)?["']/.test(source), `${p} imports node:test or node:assert`);
    // Excluding a helper must not break a shipped file that imports it.
    for (const spec of relativeImports(source)) {
      const target = posix.normalize(posix.join(posix.dirname(p), spec));
      const candidates = p.endsWith(".d.ts") ? [target.replace(/\.js$/, ".d.ts"), target] : [target];
      assert.ok(
        candidates.some((c) => shipped.has(c)),
        `${p} imports ${spec}, which is not in the tarball`,
      );
    }
  }
});
