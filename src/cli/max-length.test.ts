/**
 * --max-length against the model's position table (models/wordnet-bert: 128 usable positions):
 * above it is a one-line usage error, and the default is clamped to it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { runCli, writeJsonl } from "../testing/cli.js";
import { REPO_ROOT } from "../testing/paths.js";

const BERT = join(REPO_ROOT, "models/wordnet-bert");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-max-length-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
// Longer than 128 tokens, so an unclamped 512 would index past the position table.
const long = (w: string) => Array.from({ length: 200 }, () => w).join(" ");
const DATA = writeJsonl(tmp, "long.jsonl", [
  { text: long("dog"), label: "animal" },
  { text: long("oak"), label: "tree" },
]);
const LIMIT =
  /--max-length 256: the model .*wordnet-bert takes at most 128 tokens \(.*wordnet-bert\/config\.json: max_position_embeddings 130 − padding_idx 1 − 1\)/;

test("train and eval: --max-length above the model's positions is a one-line usage error", () => {
  for (const args of [
    ["train", "--model", BERT, "--data", DATA, "--method", "ia3", "--max-length", "256", "--output-dir", join(tmp, "a")],
    ["eval", "--model", BERT, "--data", DATA, "--max-length", "256"],
  ]) {
    const r = runCli(args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, LIMIT);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

test("train, prompt tuning: the soft tokens take positions too", () => {
  const r = runCli([
    "train",
    "--model",
    BERT,
    "--data",
    DATA,
    "--method",
    "prompt",
    "--num-virtual-tokens",
    "20",
    "--max-length",
    "128",
    "--output-dir",
    join(tmp, "c"),
  ]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(
    r.stderr,
    /--max-length 128: the model .*wordnet-bert takes at most 128 tokens, 20 of them taken by --num-virtual-tokens \(/,
  );
});

test("train without --max-length clamps the default to the model's positions (minus prompt tokens)", () => {
  const p = runCli([
    "train",
    "--model",
    BERT,
    "--data",
    DATA,
    "--method",
    "prompt",
    "--num-virtual-tokens",
    "20",
    "--max-steps",
    "1",
    "--batch-size",
    "2",
    "--threads",
    "1",
    "--eval-fraction",
    "0",
    "--output-dir",
    join(tmp, "p"),
  ]);
  assert.equal(p.code, 0, p.stderr);
  // eval reads the adapter's soft tokens from its adapter_config.json.
  const e = runCli(["eval", "--model", BERT, "--adapter", join(tmp, "p"), "--data", DATA, "--threads", "1"]);
  assert.equal(e.code, 0, e.stderr);
  const out = join(tmp, "b");
  const r = runCli([
    "train",
    "--model",
    BERT,
    "--data",
    DATA,
    "--method",
    "ia3",
    "--max-steps",
    "1",
    "--batch-size",
    "2",
    "--threads",
    "1",
    "--eval-fraction",
    "0",
    "--output-dir",
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
});
