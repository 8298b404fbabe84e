/**
 * Shared pieces of the `peftkit train` end-to-end tests: the embedded model, a self-cleaning temp
 * folder, the tiny "a X is a kind of" data set, and the two checks nearly every tuner's CLI test
 * makes (the saved adapter changes the outputs; a SIGKILLed run resumed with --resume ends on the
 * adapter of an uninterrupted run). Kept in one place so a tuner test only states what is specific
 * to its method, and so a tolerance or a check cannot silently drift between copies.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import { PeftModel } from "../tuners/peft-model.js";
import { type CliRun, runCli, writeJsonl } from "./cli.js";
import { REPO_ROOT } from "./paths.js";

/** The embedded 4-layer model every CLI training test trains on (fast, and ships with the repo). */
export const MODEL = join(REPO_ROOT, "models/wordnet-llama");

/** A fresh temporary folder, removed when the test file's tests are done (node:test `after`). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The eight examples ("a dog is a kind of" → " animal", …): small enough for a batch of 4 to cycle quickly. */
const KIND_OF = ["dog animal", "oak tree", "rose flower", "car vehicle", "pear fruit", "bus vehicle", "cat animal", "tulip flower"];

/**
 * Writes the first `count` kind-of examples (all eight by default) as `train.jsonl`
 * (prompt/completion) in `dir`; returns its path.
 */
export function writeKindOfData(dir: string, count = KIND_OF.length): string {
  return writeJsonl(
    dir,
    "train.jsonl",
    KIND_OF.slice(0, count).map((s) => {
      const [w, k] = s.split(" ");
      return { prompt: `a ${w} is a kind of`, completion: ` ${k}` };
    }),
  );
}

/** The flags such tests start with: the embedded model on `data`, batches of 4, no eval split (all examples train). */
export const kindOfTrainArgs = (data: string): string[] => ["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0"];

/** `peftkit train ARGS EXTRA --output-dir OUT` for a test's fixed flags `args`. */
export const trainWith =
  (args: readonly string[]) =>
  (extra: readonly string[], out: string, env: Record<string, string> = {}): CliRun =>
    runCli(["train", ...args, ...extra, "--output-dir", out], env);

/** What `assertAdapterChangesOutputs` checks beyond its defaults. */
export interface AdapterChangeCheck {
  /** Some logit must move by more than this (default 1e-5; methods whose run is short or damped use 1e-4). */
  moreThan?: number;
  /** The assertion's message (default "the adapter changes the outputs"). */
  message?: string;
  /** Called with the loaded model before the forward passes, for checks on what was loaded. */
  inspect?: (peft: PeftModel) => void;
}

/**
 * Asserts that the adapter in `adapterDir`, loaded onto `modelDir`, moves some logit of a fixed
 * prompt by more than `moreThan`: a saved folder that loads but holds a no-op (zeroed or dropped
 * tensors) would pass every shape check.
 */
export async function assertAdapterChangesOutputs(modelDir: string, adapterDir: string, check: AdapterChangeCheck = {}): Promise<void> {
  const { moreThan = 1e-5, message = "the adapter changes the outputs", inspect } = check;
  const base = await AutoModelForCausalLM.fromPretrained(modelDir);
  try {
    const peft = PeftModel.fromPretrained(base, adapterDir);
    inspect?.(peft);
    const ids = [[5, 17, 99, 300, 42, 7]];
    const out = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const off = (await peft.disableAdapter(() => peft.forward({ inputIds: ids }))).logits?.data as Float32Array;
    assert.ok(
      out.some((v, i) => Math.abs(v - off[i]) > moreThan),
      message,
    );
  } finally {
    await base.release();
  }
}

/** The largest |a[i] − b[i]| (integer and bigint tensors compared as numbers); NaN if any entry is NaN. */
export function maxAbsDifference(a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(Number(a[i]) - Number(b[i])));
  return worst;
}

/**
 * Asserts two safetensors files hold the same tensor names and shapes and, per tensor,
 * max |got − want| ≤ `tolerance(name)` (the exact-resume check: `want` is the uninterrupted run,
 * `got` the one killed and resumed). A NaN anywhere fails. `label` starts each message.
 */
export function assertSafetensorsClose(wantPath: string, gotPath: string, tolerance: (name: string) => number, label = ""): void {
  const want = readSafetensors(wantPath).tensors;
  const got = readSafetensors(gotPath).tensors;
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const [key, t] of Object.entries(want)) {
    assert.deepEqual(got[key].shape, t.shape, key);
    const worst = maxAbsDifference(t.data as ArrayLike<number | bigint>, got[key].data as ArrayLike<number | bigint>);
    assert.ok(worst <= tolerance(key), `${label}${key}: max |resumed − uninterrupted| ${worst}`);
  }
}

/**
 * Two-phase runs (LT-SFT, DSEE pruning) killed by SIGKILL in each phase, then resumed: the killed run
 * leaves only `left` (a checkpoint), a fresh run into its folder is refused, and `--resume` finishes
 * it with the uninterrupted run's result (`assertSameAsStraight`). `hit` is the step count across
 * both phases at which PEFTKIT_FAULT_AT kills the run.
 */
export function assertTwoPhaseKillResume(
  train: (out: string, extra?: string[], env?: Record<string, string>) => CliRun,
  dir: string,
  kills: readonly (readonly [phase: "phase1" | "phase2", hit: number, left: string])[],
  assertSameAsStraight: (phase: string, out: string) => void,
): void {
  for (const [phase, hit, left] of kills) {
    const out = join(dir, `killed-${phase}`);
    const k = train(out, [], { PEFTKIT_FAULT_AT: `train:step#${hit}` });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(out, left)) && !existsSync(join(out, "adapter_config.json")), `${phase}: ${left} left`);
    const fresh = train(out);
    assert.equal(fresh.code, 1, "a fresh run into the folder is refused");
    assert.match(fresh.stderr, /--resume/);
    const r = train(out, ["--resume"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, phase === "phase1" ? /resuming from .*phase1.checkpoint-2/ : /phase 1 already finished/);
    assertSameAsStraight(phase, out);
  }
}
