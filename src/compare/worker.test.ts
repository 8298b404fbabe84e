import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { WorkerSpec } from "./worker.js";

const WORKER = fileURLToPath(new URL("./worker.js", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "peftkit-worker-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

test("a run process whose compare is gone before its code runs stops at once and writes nothing", async () => {
  const runDir = join(tmp, "run");
  mkdirSync(runDir);
  const spec: WorkerSpec = {
    kind: "peft",
    runDir,
    trainArgs: ["--model", join(tmp, "no-model"), "--data", join(tmp, "no-data.jsonl"), "--method", "lora"],
    model: join(tmp, "no-model"),
    train: join(tmp, "no-data.jsonl"),
    eval: join(tmp, "no-data.jsonl"),
    maxLength: 16,
    batchSize: 1,
    lr: 1e-3,
    maxSteps: 1,
    warmup: 0,
    runSeconds: null,
    seed: 0,
  };
  const specPath = join(runDir, "spec.json");
  writeFileSync(specPath, JSON.stringify(spec));
  const child = spawn(process.execPath, [WORKER, specPath], { stdio: ["ignore", "pipe", "pipe", "ipc"] });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d));
  child.stderr?.on("data", (d: Buffer) => (out += d));
  // The channel closes while the worker is still loading its modules, as when a compare is killed
  // right after spawning it: "disconnect" fires before the worker can listen for it.
  child.disconnect();
  const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
  assert.equal(code, 137, `the orphan went on with the run:\n${out}`);
  assert.deepEqual(readdirSync(runDir), ["spec.json"]);
});
