import assert from "node:assert/strict";
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { durabilityProblems, traceFs } from "../testing/fs-trace.js";
import { loadTestModel } from "../tuners/conformance.js";
import { PeftModel } from "../tuners/peft-model.js";
import { PeftTrainer } from "../tuners/train.js";
import { CheckpointMismatchError, latestCheckpoint } from "./checkpoint.js";
import type { EvalBatch } from "./evaluate.js";
import { Progress } from "./progress.js";
import { type BatchSource, NonFiniteLossError, Trainer, type TrainerArgs } from "./trainer.js";

const root = mkdtempSync(join(tmpdir(), "peftkit-trainer-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** A fixed pseudo-random dataset: the same (epoch, index) always gives the same batch. */
function source(n: number, vocab: number): BatchSource {
  return {
    batchesPerEpoch: n,
    batch: (epoch, index) => {
      let x = (epoch * 7919 + index * 104729 + 17) >>> 0;
      const ids = Array.from({ length: 2 }, () =>
        Array.from({ length: 6 }, () => {
          x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
          return 2 + (x % (vocab - 2));
        }),
      );
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
}

const EVAL_IDS = [
  [5, 9, 13, 2, 7, 7],
  [7, 7, 1, 2, 9, 13],
];
const EVAL_BATCH: EvalBatch = { inputIds: EVAL_IDS, labels: EVAL_IDS, attentionMask: EVAL_IDS.map((r) => r.map(() => 1)) };

const quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);

async function makeTarget(seed: number, r = 4) {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, { peftType: "LORA", r, loraAlpha: 2 * r, loraDropout: 0.1, targetModules: "all-linear" }, { seed });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw", weightDecay: 0.01 }, clipNorm: 1 });
  return { trainer, peft, causal: true, classification: false, model };
}

describe("Trainer", () => {
  test("an interrupted and resumed run ends with the same adapter as an uninterrupted one", async () => {
    const args = (dir: string): TrainerArgs => ({
      outputDir: dir,
      maxSteps: 6,
      gradAccum: 2,
      lr: 5e-3,
      schedule: "cosine",
      warmup: 2,
      seed: 11,
      saveSteps: 2,
    });
    const a = await makeTarget(1);
    const full = await new Trainer(a, source(5, 200), null, args(join(root, "full")), quiet()).run();
    assert.equal(full.steps, 6);

    const b = await makeTarget(1);
    const dir = join(root, "interrupted");
    const first = new Trainer(b, source(5, 200), null, args(dir), quiet());
    // Stop after the third optimizer step, between the every-2-steps checkpoints.
    const orig = b.trainer.apply.bind(b.trainer);
    let applied = 0;
    b.trainer.apply = async (o) => {
      const r = await orig(o);
      if (++applied === 3) first.requestStop();
      return r;
    };
    const part = await first.run();
    assert.equal(part.stoppedBy, "interrupted");
    assert.equal(part.steps, 3);
    assert.ok(latestCheckpoint(dir)?.endsWith("checkpoint-3"));

    const c = await makeTarget(99); // different init: everything must come from the checkpoint
    const rest = await new Trainer(c, source(5, 200), null, { ...args(dir), resume: true }, quiet()).run();
    assert.equal(rest.steps, 6);
    const want = a.peft.adapter("default").tensors;
    const got = c.peft.adapter("default").tensors;
    for (const [k, t] of want) {
      const g = got.get(k)?.data as Float32Array;
      (t.data as Float32Array).forEach((v, i) => {
        assert.ok(Math.abs(v - g[i]) <= 1e-6, `${k}[${i}]: ${v} vs ${g[i]}`);
      });
    }
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });

  test("metrics.jsonl records every step; checkpoints are complete folders", async () => {
    const t = await makeTarget(2);
    const dir = join(root, "metrics");
    await new Trainer(t, source(4, 200), null, { outputDir: dir, maxSteps: 4, lr: 1e-3, saveSteps: 2, saveTotalLimit: 1 }, quiet()).run();
    const lines = readFileSync(join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.step),
      [1, 2, 3, 4],
    );
    const cks = readdirSync(dir).filter((n) => n.startsWith("checkpoint-"));
    assert.deepEqual(cks, ["checkpoint-4"]);
    assert.ok(existsSync(join(dir, "checkpoint-4", "adapter_model.safetensors")));
    assert.ok(existsSync(join(dir, "checkpoint-4", "optimizer.safetensors")));
    await t.trainer.release();
    await t.model.release();
  });

  test("a non-finite loss stops training with a clear error and keeps the last good checkpoint", async () => {
    const t = await makeTarget(3);
    const dir = join(root, "nan");
    const orig = t.trainer.train.bind(t.trainer);
    let calls = 0;
    t.trainer.train = async (b, o) => {
      const r = await orig(b, o);
      return ++calls >= 3 ? { ...r, loss: Number.NaN } : r;
    };
    await assert.rejects(
      new Trainer(t, source(4, 200), null, { outputDir: dir, maxSteps: 5, lr: 1e-3, saveSteps: 1 }, quiet()).run(),
      (e: unknown) => e instanceof NonFiniteLossError && /step 3/.test(e.message) && /checkpoint-2/.test(e.message),
    );
    assert.ok(latestCheckpoint(dir)?.endsWith("checkpoint-2"));
    await t.trainer.release();
    await t.model.release();
  });

  test("a stop requested during the last step, its eval or the final save finishes the run with a final checkpoint", async () => {
    // Without --save-steps, as in issue 10: an interrupt at step 3 of 3 used to leave no checkpoint.
    for (const when of ["step", "eval"] as const) {
      const t = await makeTarget(5);
      const dir = join(root, `last-step-${when}`);
      const loop = new Trainer(
        t,
        source(4, 200),
        { batches: [EVAL_BATCH] },
        { outputDir: dir, maxSteps: 3, lr: 1e-3, evalSteps: 3 },
        quiet(),
      );
      if (when === "step") {
        const orig = t.trainer.train.bind(t.trainer);
        let calls = 0;
        t.trainer.train = async (b, o) => {
          if (++calls === 3) loop.requestStop();
          return orig(b, o);
        };
      } else {
        const orig = loop.evaluate.bind(loop);
        loop.evaluate = async () => {
          loop.requestStop();
          return orig();
        };
      }
      const r = await loop.run();
      assert.equal(r.steps, 3, when);
      assert.equal(r.stoppedBy, "max_steps", when);
      assert.ok(r.lastCheckpoint?.endsWith("checkpoint-3"), `${when}: ${r.lastCheckpoint}`);
      assert.equal(latestCheckpoint(dir), r.lastCheckpoint);
      await t.trainer.release();
      await t.model.release();
    }
  });

  test("a stop requested mid-run without --save-steps saves a checkpoint at that step", async () => {
    const t = await makeTarget(5);
    const dir = join(root, "mid-stop");
    const loop = new Trainer(t, source(4, 200), null, { outputDir: dir, maxSteps: 4, lr: 1e-3 }, quiet());
    const orig = t.trainer.train.bind(t.trainer);
    let calls = 0;
    t.trainer.train = async (b, o) => {
      if (++calls === 2) loop.requestStop();
      return orig(b, o);
    };
    const r = await loop.run();
    assert.equal(r.stoppedBy, "interrupted");
    assert.ok(r.lastCheckpoint?.endsWith("checkpoint-2"));
    assert.equal(latestCheckpoint(dir), r.lastCheckpoint);
    await t.trainer.release();
    await t.model.release();
  });

  test("a resumed run keeps metrics.jsonl to one record per step (no steps past the checkpoint twice)", async () => {
    const dir = join(root, "metrics-resume");
    const a = await makeTarget(6);
    await new Trainer(a, source(4, 200), null, { outputDir: dir, maxSteps: 5, lr: 1e-3, saveSteps: 2 }, quiet()).run();
    // As if killed after step 5 was logged but before its checkpoint, mid-way through a line.
    rmSync(join(dir, "checkpoint-5"), { recursive: true });
    appendFileSync(join(dir, "metrics.jsonl"), '{"step": 6, "lo');
    const b = await makeTarget(6);
    const r = await new Trainer(
      b,
      source(4, 200),
      null,
      { outputDir: dir, maxSteps: 5, lr: 1e-3, saveSteps: 2, resume: true },
      quiet(),
    ).run();
    assert.equal(r.steps, 5);
    const steps = readFileSync(join(dir, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).step);
    assert.deepEqual(steps, [1, 2, 3, 4, 5]);
    for (const x of [a, b]) {
      await x.trainer.release();
      await x.model.release();
    }
  });

  test("resuming with another --r or --seed names the field, the checkpoint's value and the flag", async () => {
    const dir = join(root, "mismatch");
    const a = await makeTarget(7, 4);
    await new Trainer(a, source(4, 200), null, { outputDir: dir, maxSteps: 2, lr: 1e-3, seed: 3 }, quiet()).run();
    const b = await makeTarget(7, 8);
    await assert.rejects(
      new Trainer(b, source(4, 200), null, { outputDir: dir, maxSteps: 4, lr: 1e-3, seed: 3, resume: true }, quiet()).run(),
      (e: unknown) =>
        e instanceof CheckpointMismatchError &&
        /checkpoint-2 was made with .*\br=4 \(this run: 8\)/.test(e.message) &&
        /resume with .*--r 4\b/.test(e.message) &&
        /resume with .*--alpha 8\b/.test(e.message),
    );
    await assert.rejects(
      new Trainer(a, source(4, 200), null, { outputDir: dir, maxSteps: 4, lr: 1e-3, seed: 4, resume: true }, quiet()).run(),
      (e: unknown) => e instanceof CheckpointMismatchError && /seed=3 \(this run: 4\).*--seed 3/.test(e.message),
    );
    for (const x of [a, b]) {
      await x.trainer.release();
      await x.model.release();
    }
  });

  test("every file of a run and its checkpoints is written fsync-then-rename, folders fsynced", async () => {
    const dir = join(root, "durable");
    const t = await makeTarget(8);
    const args: TrainerArgs = { outputDir: dir, maxSteps: 4, lr: 1e-3, saveSteps: 2, saveTotalLimit: 1 };
    const first = await traceFs(() => new Trainer(t, source(4, 200), null, args, quiet()).run());
    rmSync(join(dir, "checkpoint-4"), { recursive: true });
    const resumed = await traceFs(() => new Trainer(t, source(4, 200), null, { ...args, resume: true }, quiet()).run());
    for (const { events } of [first, resumed]) {
      assert.ok(events.some((e) => e.op === "rename" && e.to?.endsWith("checkpoint-4")));
      assert.deepEqual(durabilityProblems(events, dir, [join(dir, "metrics.jsonl")]), []);
    }
    assert.deepEqual(readdirSync(dir).sort(), ["checkpoint-4", "metrics.jsonl"]);
    await t.trainer.release();
    await t.model.release();
  });

  test("bad arguments are rejected", async () => {
    const t = await makeTarget(4);
    assert.throws(
      () => new Trainer(t, source(2, 200), null, { outputDir: root, maxSteps: 2, lr: -1 }, quiet()),
      /learning rate must be > 0/,
    );
    assert.throws(() => new Trainer(t, source(2, 200), null, { outputDir: root, lr: 1e-3 }, quiet()), /epochs or maxSteps/);
    await t.trainer.release();
    await t.model.release();
  });
});
