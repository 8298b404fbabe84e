/**
 * Numeric flag bounds: every numeric flag of every command declares one, parseFlags enforces it
 * for the command line and --config alike, and the CLI turns a violation into one line and exit 2.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { COMMON_FLAGS, type CommandSpec, type FlagSpec, hasBounds, helpText, parseFlags, UsageError } from "./args.js";
import { COMMANDS } from "./main.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-args-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const numeric = (s: FlagSpec) => s.type === "number" || s.type === "int";
const cmd = (flags: FlagSpec[]): CommandSpec => ({ name: "t", summary: "", usage: "", flags, run: async () => 0 });

describe("flag specs", () => {
  const all: [string, FlagSpec][] = [
    ...COMMANDS.flatMap((c) => c.flags.map((f): [string, FlagSpec] => [c.name, f])),
    ...COMMON_FLAGS.map((f): [string, FlagSpec] => ["(common)", f]),
  ];

  test("every numeric flag of every command declares a bound", () => {
    assert.ok(all.filter(([, f]) => numeric(f)).length > 40, "the walk found the commands' numeric flags");
    const missing = all.filter(([, f]) => numeric(f) && !hasBounds(f)).map(([c, f]) => `${c} --${f.name}`);
    assert.deepEqual(missing, [], `numeric flags without min/max/exclusiveMin/exclusiveMax: ${missing.join(", ")}`);
  });

  test("bounds are well formed and only on numeric flags; defaults satisfy them", () => {
    for (const [c, f] of all) {
      const what = `${c} --${f.name}`;
      if (!numeric(f)) assert.ok(!hasBounds(f), `${what}: bounds on a ${f.type} flag`);
      assert.ok(f.min === undefined || f.exclusiveMin === undefined, `${what}: both min and exclusiveMin`);
      assert.ok(f.max === undefined || f.exclusiveMax === undefined, `${what}: both max and exclusiveMax`);
      if (typeof f.default === "number") {
        const argv = [`--${f.name}`, String(f.default)];
        assert.doesNotThrow(() => parseFlags(argv, cmd([f])), `${what}: default ${f.default} is out of its bounds`);
      }
    }
  });

  test("help shows the bounds", () => {
    const generate = COMMANDS.find((c) => c.name === "generate") as CommandSpec;
    const text = helpText(generate);
    assert.match(text, /--max-new-tokens N .*\(>= 1; default: 64\)/);
    assert.match(text, /--top-p P .*\(in \(0, 1\]; default: 1\)/);
    assert.match(text, /--threads N .*\(>= 1\)/);
  });
});

describe("parseFlags bounds", () => {
  const spec = cmd([
    { name: "n", type: "int", help: "", min: 1 },
    { name: "p", type: "number", help: "", exclusiveMin: 0, max: 1 },
    { name: "f", type: "number", help: "", min: 0, exclusiveMax: 1 },
    { name: "x", type: "number", help: "", exclusiveMin: 0 },
  ]);
  const rejects = (argv: string[], message: string) =>
    assert.throws(
      () => parseFlags(argv, spec),
      (e: unknown) => e instanceof UsageError && e.message === message,
    );

  test("inclusive and exclusive ends, at and beyond them", () => {
    assert.deepEqual(parseFlags(["--n", "1", "--p", "1", "--f", "0", "--x", "1e-9"], spec), { n: 1, p: 1, f: 0, x: 1e-9 });
    rejects(["--n", "0"], "peftkit t: --n must be >= 1, got 0");
    rejects(["--n=-3"], "peftkit t: --n must be >= 1, got -3");
    rejects(["--p", "0"], "peftkit t: --p must be in (0, 1], got 0");
    rejects(["--p", "1.5"], "peftkit t: --p must be in (0, 1], got 1.5");
    rejects(["--f", "1"], "peftkit t: --f must be in [0, 1), got 1");
    rejects(["--f", "-0.1"], "peftkit t: --f must be in [0, 1), got -0.1");
    rejects(["--x", "0"], "peftkit t: --x must be > 0, got 0");
  });

  test("type errors come before range errors; integers must be exact", () => {
    rejects(["--n", "abc"], 'peftkit t: --n must be a number, got "abc"');
    rejects(["--n", "-1.5"], 'peftkit t: --n must be an integer, got "-1.5"');
    rejects(["--n", "1e20"], `peftkit t: --n must be an integer of at most ${Number.MAX_SAFE_INTEGER} in magnitude, got "1e20"`);
  });

  test("a value from --config is checked and the message names the file", () => {
    const file = join(tmp, "bounds.yaml");
    writeFileSync(file, "n: 2\np: 0\n");
    rejects(["--config", file], `--config ${file}: --p must be in (0, 1], got 0`);
  });
});

describe("CLI: out-of-range numbers exit 2 with one line, before any work", () => {
  const check = (args: string[], message: string) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, FORCE_COLOR: "0" } });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, `peftkit: ${message}\n`);
  };
  const gen = ["generate", "--model", MODEL, "--prompt", "a dog is a kind of"];
  test("generate --max-new-tokens -3", () =>
    check([...gen, "--max-new-tokens", "-3"], "peftkit generate: --max-new-tokens must be >= 1, got -3"));
  test("generate --temperature -1", () => check([...gen, "--temperature", "-1"], "peftkit generate: --temperature must be >= 0, got -1"));
  test("generate --top-p 0", () => check([...gen, "--top-p", "0"], "peftkit generate: --top-p must be in (0, 1], got 0"));
  test("--threads 0 (a common flag)", () => check([...gen, "--threads", "0"], "peftkit generate: --threads must be >= 1, got 0"));
  test("train --lr 0", () => {
    const out = join(tmp, "lr0");
    check(["train", "--model", MODEL, "--data", "x.jsonl", "--output-dir", out, "--lr", "0"], "peftkit train: --lr must be > 0, got 0");
  });
  test("train --eval-fraction 1", () => {
    const out = join(tmp, "ef1");
    check(
      ["train", "--model", MODEL, "--data", "x.jsonl", "--output-dir", out, "--eval-fraction", "1"],
      "peftkit train: --eval-fraction must be in [0, 1), got 1",
    );
  });
  test("eval --batch-size 0", () =>
    check(["eval", "--model", MODEL, "--data", "x.jsonl", "--batch-size", "0"], "peftkit eval: --batch-size must be >= 1, got 0"));
  test("bench train --steps 0", () => check(["bench", "train", "--steps", "0"], "peftkit bench: --steps must be >= 1, got 0"));
  test("train with a bad value in a --config YAML file", () => {
    const file = join(tmp, "train.yaml");
    writeFileSync(file, `model: ${MODEL}\ndata: x.jsonl\noutput_dir: ${join(tmp, "cfg")}\nwarmup: -5\n`);
    check(["train", "--config", file], `--config ${file}: --warmup must be >= 0, got -5`);
  });
});
