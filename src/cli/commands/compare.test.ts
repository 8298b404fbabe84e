/**
 * peftkit compare end to end on the embedded model: a small smoke compare (CI), exact resumption
 * after the compare is killed mid-run, and one-line errors for bad input.
 */
import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { CompareRow } from "../../compare/rows.js";
import { runCli } from "../../testing/cli.js";
import { REPO_ROOT } from "../../testing/paths.js";

const _CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-compare-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const run = (args: string[], env: Record<string, string> = {}) => runCli(["compare", ...args], env);

const KINDS: Record<string, string> = {
  dog: "animal",
  cat: "animal",
  oak: "tree",
  rose: "flower",
  car: "vehicle",
  boat: "vehicle",
  apple: "fruit",
  lion: "animal",
};
const WORDS = Object.keys(KINDS);
const jsonl = (rows: object[]) => `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`;
const file = (name: string, text: string) => {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
};
const TRAIN = file(
  "train.jsonl",
  jsonl(Array.from({ length: 24 }, (_, i) => ({ prompt: `a ${WORDS[i % 8]} is a kind of`, completion: ` ${KINDS[WORDS[i % 8]]}` }))),
);
const EVAL = file("eval.jsonl", jsonl(WORDS.map((w) => ({ prompt: `a ${w} is a kind of`, completion: ` ${KINDS[w]}` }))));
file("ctrain.jsonl", jsonl(Array.from({ length: 24 }, (_, i) => ({ text: `the ${WORDS[i % 8]}`, label: KINDS[WORDS[i % 8]] }))));
file("ceval.jsonl", jsonl(WORDS.map((w) => ({ text: `the ${w}`, label: KINDS[w] }))));
file("ceval-nolabel.jsonl", jsonl(WORDS.map((w) => ({ text: `the ${w}` }))));
const SUITE = file(
  "suite.yaml",
  `name: tiny\ntasks:\n  - name: kinds-cls\n    description: word → its kind\n    model: ${MODEL}\n    train: ctrain.jsonl\n    eval: ceval.jsonl\n    metric: accuracy\n    chance: 0.25\n`,
);
const FAST = ["--max-steps", "3", "--batch-size", "4", "--max-length", "32", "--threads", "1"];

/** The rows written so far (none before the first run finishes). */
const rowsOf = (dir: string) =>
  (existsSync(join(dir, "rows.jsonl")) ? readFileSync(join(dir, "rows.jsonl"), "utf8") : "")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as CompareRow);

describe("peftkit compare", () => {
  test("smoke: one task, two methods, a few steps → rows, report.md and plots", () => {
    const out = join(tmp, "smoke");
    const r = run([
      "--model",
      MODEL,
      "--data",
      TRAIN,
      "--eval-data",
      EVAL,
      "--methods",
      "lora,ia3",
      "--budgets",
      "r=4",
      ...FAST,
      "--output-dir",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const rows = rowsOf(out);
    assert.deepEqual(
      rows.map((x) => [x.task, x.method, x.config, x.seed, x.metric]),
      [
        ["task", "lora", "r=4", 0, "exact_match"],
        ["task", "ia3", "default", 0, "exact_match"],
      ],
    );
    for (const x of rows) {
      assert.equal(x.steps, 3);
      assert.ok(x.trainable_params > 0 && x.trainable_params < x.total_params);
      assert.ok(x.metric_value >= 0 && x.metric_value <= 1 && Number.isFinite(x.eval_metrics.eval_loss));
      assert.ok(x.wall_s > 0 && x.tokens_per_s > 0 && x.peak_rss_mb > 50, JSON.stringify(x));
      assert.equal(x.peftkit_version, "0.1.0");
      assert.ok(Date.parse(x.finished_at) >= Date.parse(x.started_at));
    }
    // LoRA r=4 on 4 layers × 7 linear modules of the 256-wide model: r·(in + out) each.
    assert.equal(rows[0].trainable_params, 4 * 4 * (2 * (256 + 256) + 2 * (256 + 128) + 2 * (256 + 688) + (688 + 256)));
    const report = readFileSync(join(out, "report.md"), "utf8");
    assert.match(report, /\| method \| config \| exact_match \| n \|/);
    assert.match(report, /\| (★ )?lora \| r=4 \| \d\.\d{4} \| 1 \|/);
    for (const f of ["task-pareto.svg", "task-cost.svg"]) assert.match(readFileSync(join(out, "plots", f), "utf8"), /^<svg[\s\S]*<\/svg>$/);

    // Same arguments again: nothing to run, rows unchanged.
    const again = run([
      "--model",
      MODEL,
      "--data",
      TRAIN,
      "--eval-data",
      EVAL,
      "--methods",
      "lora,ia3",
      "--budgets",
      "r=4",
      ...FAST,
      "--output-dir",
      out,
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /2 already done, 0 to run/);
    assert.deepEqual(rowsOf(out), rows);
  });

  test("killed mid-run (SIGKILL), rerun with the same arguments: no duplicate and no missing row", () => {
    const out = join(tmp, "resume");
    const args = ["--suite", SUITE, "--methods", "ia3,lora", "--budgets", "r=2,4", ...FAST, "--output-dir", out];
    // Dies while run 2's child sits between training and evaluation.
    const k = run(args, { PEFTKIT_FAULT_AT: "compare-run-trained#2" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    const first = rowsOf(out);
    assert.equal(first.length, 1);
    const ids = readdirSync(join(out, "runs")).sort();
    assert.equal(ids.length, 2, "the unfinished run's folder is left behind");
    const unfinished = ids.find((id) => id !== first[0].run_id) as string;
    assert.ok(existsSync(join(out, "runs", unfinished, "adapter", "adapter_config.json")));
    assert.ok(!existsSync(join(out, "runs", unfinished, "result.json")));
    // A crash while appending leaves a torn line behind: it must be dropped, not kept or fatal.
    appendFileSync(join(out, "rows.jsonl"), `{"run_id":"${unfinished}","task":"kin`);

    // Killed again right after run 2's row is written: that row must not be redone.
    const k2 = run(args, { PEFTKIT_FAULT_AT: "compare-row-written#1" });
    assert.equal(k2.signal, "SIGKILL", k2.stderr);
    assert.match(k2.stderr, /dropped a torn last line/);
    assert.equal(rowsOf(out).length, 2);

    const done = run(args);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /2 already done, 1 to run/);
    const rows = rowsOf(out);
    assert.deepEqual(
      rows.map((r) => `${r.method} ${r.config}`),
      ["ia3 default", "lora r=2", "lora r=4"],
    );
    assert.equal(new Set(rows.map((r) => r.run_id)).size, 3);
    assert.deepEqual(rows[0], first[0], "the finished row is kept as it was");
    assert.equal(rows[1].run_id, unfinished);
    for (const r of rows) assert.equal(r.metric, "accuracy");
    assert.match(readFileSync(join(out, "report.md"), "utf8"), /chance 0\.250/);
    assert.ok(!existsSync(join(out, ".compare.lock")));
  });

  test("--jobs 2: killed with two runs in flight, rerun: no duplicate and no missing row", () => {
    const out = join(tmp, "resume-jobs");
    const args = ["--suite", SUITE, "--methods", "ia3,lora", "--budgets", "r=2,4", ...FAST, "--jobs", "2", "--output-dir", out];
    const planned = run([...args, "--dry-run"])
      .stdout.trim()
      .split("\n")
      .map((l) => l.split(" ")[1])
      .sort();
    assert.equal(planned.length, 3);
    // Dies right after starting the third run, which always finds the same state: one row written
    // (the first of the two runs started together to end), the other of those mid-way, and the
    // third's process still loading, too early to notice the compare is gone. Neither may go on
    // alone into a folder the rerun redoes.
    const k = run(args, { PEFTKIT_FAULT_AT: "compare-run-spawned#3" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    const first = rowsOf(out);
    assert.equal(first.length, 1);
    // The folder of each unfinished run names its process from the moment it was spawned, so the
    // rerun can end it first (the third's own code has not run yet).
    for (const id of planned.filter((id) => id !== first[0].run_id))
      assert.match(readFileSync(join(out, "runs", id, "worker.pid"), "utf8"), /^[1-9]\d*\n$/, id);
    // Killed again right after a row is written (both unfinished runs start together).
    const k2 = run(args, { PEFTKIT_FAULT_AT: "compare-row-written#1" });
    assert.equal(k2.signal, "SIGKILL", k2.stderr);
    assert.equal(rowsOf(out).length, 2);
    const done = run(args);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /2 already done, 1 to run/);
    // One whole progress line per finished run, whatever order they end in.
    for (const l of done.stdout.split("\n").filter((x) => x.startsWith("[")))
      assert.match(l, /^\[\d\/\d\] kinds-cls\.\S+ \(lr [\d.e-]+\) \.\.\. accuracy \d\.\d{4}, /);
    const rows = rowsOf(out);
    assert.deepEqual(rows.map((r) => r.run_id).sort(), planned, "every planned run once");
    assert.deepEqual(rows.slice(0, first.length), first, "finished rows are kept as they were");
    assert.ok(!existsSync(join(out, ".compare.lock")));
  });

  test("--budgets params=N picks the configuration nearest in trainable parameters (--dry-run)", () => {
    const r = run([
      "--model",
      MODEL,
      "--data",
      TRAIN,
      "--eval-data",
      EVAL,
      "--methods",
      "lora,prompt,ia3",
      "--budgets",
      "params=10k,150k",
      "--dry-run",
      "--output-dir",
      join(tmp, "dry"),
    ]);
    assert.equal(r.code, 0, r.stderr);
    // LoRA on wordnet-llama: 18,496 parameters per unit of rank (see the smoke test), so 10k → r=1
    // (ratio 1.85 against 2 × 18,496 = 3.7) and 150k → r=8 (147,968). Prompt tuning: 256 per
    // virtual token, so 10k → 32 (8,192) and 150k → 256 (the largest candidate, 65,536).
    const lines = r.stdout.trim().split("\n");
    assert.deepEqual(
      lines.map((l) => l.replace(/\.[0-9a-f]{6} /, " ")),
      [
        "todo task.lora.r=1.s0 lr=0.002 steps=100 batch=8 max_length=256 (params=10000)",
        "todo task.lora.r=8.s0 lr=0.002 steps=100 batch=8 max_length=256 (params=150000)",
        "todo task.prompt.tokens=32.s0 lr=0.05 steps=100 batch=8 max_length=256 (params=10000)",
        "todo task.prompt.tokens=256.s0 lr=0.05 steps=100 batch=8 max_length=256 (params=150000)",
        "todo task.ia3.default.s0 lr=0.05 steps=100 batch=8 max_length=256",
      ],
    );
  });

  test("--dry-run: a task's own settings win; max length stops at the model's positions (wordnet-bert: 128, minus soft tokens)", () => {
    const suite = file(
      "own.yaml",
      `name: own\ntasks:\n  - name: enc\n    model: ${join(REPO_ROOT, "models/wordnet-bert")}\n    train: ctrain.jsonl\n    eval: ceval.jsonl\n    metric: accuracy\n    max_steps: 7\n    batch_size: 2\n  - name: dec\n    model: ${MODEL}\n    train: ctrain.jsonl\n    eval: ceval.jsonl\n    metric: accuracy\n    max_length: 64\n`,
    );
    const r = run(["--suite", suite, "--methods", "ia3,prompt", "--dry-run", "--output-dir", join(tmp, "own")]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      r.stdout
        .trim()
        .split("\n")
        .map((l) => l.replace(/\.[0-9a-f]{6} /, " ")),
      [
        "todo enc.ia3.default.s0 lr=0.05 steps=7 batch=2 max_length=128",
        // Prompt tuning's 20 soft tokens take positions too.
        "todo enc.prompt.tokens=20.s0 lr=0.05 steps=7 batch=2 max_length=108",
        "todo dec.ia3.default.s0 lr=0.05 steps=100 batch=8 max_length=64",
        "todo dec.prompt.tokens=20.s0 lr=0.05 steps=100 batch=8 max_length=64",
      ],
    );
  });

  test("full fine-tuning takes the head of the record format (token tags on the encoder, chat exact match)", () => {
    const tags = WORDS.map((w) => ({ tokens: ["a", w, "is", "here"], tags: ["O", "WORD", "O", "O"] }));
    const chat = WORDS.map((w) => ({
      messages: [
        { role: "user", content: `what kind of thing is a ${w}?` },
        { role: "assistant", content: KINDS[w] },
      ],
    }));
    const suite = file(
      "heads.yaml",
      `name: heads\ntasks:\n  - name: tags\n    model: ${join(REPO_ROOT, "models/wordnet-bert")}\n    train: ${file("tags.jsonl", jsonl(tags))}\n    eval: ${join(tmp, "tags.jsonl")}\n    metric: token_accuracy\n  - name: chat\n    model: ${MODEL}\n    train: ${file("chat.jsonl", jsonl(chat))}\n    eval: ${join(tmp, "chat.jsonl")}\n    metric: exact_match\n`,
    );
    const out = join(tmp, "heads");
    const r = run(["--suite", suite, "--methods", "full", ...FAST, "--max-steps", "2", "--output-dir", out]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const rows = rowsOf(out);
    assert.deepEqual(rows.map((row) => `${row.task}:${row.metric}`).sort(), ["chat:exact_match", "tags:token_accuracy"]);
  });

  test("bad input: one line naming the method, suite, field, file or folder", () => {
    const out = join(tmp, "bad");
    const own = ["--model", MODEL, "--data", TRAIN, "--eval-data", EVAL];
    const cases: [string[], RegExp][] = [
      [[...own, "--methods", "lora,qlora", "--output-dir", out], /--methods: unknown method "qlora" \(methods: lora, .*full\)/],
      [["--suite", "glue", "--output-dir", out], /--suite glue: unknown suite \(built-in suites: /],
      [
        ["--suite", "wordnet-bench", "--tasks", "kind-of,glue-sst2", "--dry-run", "--output-dir", out],
        /--tasks: unknown task "glue-sst2" in suite wordnet-bench \(tasks: lexname, /,
      ],
      [[...own, "--tasks", "kind-of", "--output-dir", out], /--tasks picks tasks of a --suite/],
      [
        ["--suite", file("bad.yaml", "name: b\ntasks:\n  - name: x\n    model: .\n    metric: accuracy\n"), "--output-dir", out],
        /bad\.yaml: tasks\[0\]\.train: missing/,
      ],
      [
        [
          "--suite",
          file(
            "bad2.yaml",
            `name: b\ntasks:\n  - name: x\n    model: ${MODEL}\n    train: ctrain.jsonl\n    eval: ceval.jsonl\n    metric: f1\n`,
          ),
          "--output-dir",
          out,
        ],
        /bad2\.yaml: tasks\[0\]\.metric: must be one of/,
      ],
      [
        ["--model", MODEL, "--data", join(tmp, "ctrain.jsonl"), "--eval-data", join(tmp, "ceval-nolabel.jsonl"), "--output-dir", out],
        /ceval-nolabel\.jsonl: line 1: no "label" field, but the task is classification/,
      ],
      [[...own, "--output-dir", join(TRAIN, "out")], /--output-dir .*train\.jsonl\/out: not a writable folder \(ENOTDIR\)/],
      [[...own, "--budgets", "rank=4", "--output-dir", out], /--budgets rank=4: unknown knob/],
      [[...own, "--seeds", "0", "--output-dir", out], /--seeds must be in \[1, 1000\], got 0/],
      [["--suite", SUITE, ...own, "--output-dir", out], /either --suite or --model/],
    ];
    for (const [args, re] of cases) {
      const r = run(args);
      assert.equal(r.code, 2, `${args.join(" ")}\n${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    mkdirSync(out, { recursive: true });
  });
});
