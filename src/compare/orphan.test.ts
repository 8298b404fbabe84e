import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { endOrphan } from "./orphan.js";

const tmp = mkdtempSync(join(tmpdir(), "peftkit-orphan-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

test("a live worker of an earlier compare in the run folder is ended; another process is left alone", async () => {
  const fake = join(tmp, "worker.js");
  writeFileSync(fake, "setInterval(() => {}, 1000);\n");
  const other = join(tmp, "other.js");
  writeFileSync(other, "setInterval(() => {}, 1000);\n");
  const orphan = spawn(process.execPath, [fake], { stdio: "ignore" });
  const bystander = spawn(process.execPath, [other], { stdio: "ignore" });
  try {
    const gone = new Promise((r) => orphan.on("exit", r));
    writeFileSync(join(tmp, "worker.pid"), `${bystander.pid}\n`);
    await endOrphan(tmp, fake);
    assert.equal(bystander.exitCode, null, "not a worker: untouched");
    assert.equal(bystander.signalCode, null);
    writeFileSync(join(tmp, "worker.pid"), `${orphan.pid}\n`);
    await endOrphan(tmp, fake);
    await gone;
    assert.equal(orphan.signalCode, "SIGKILL");
  } finally {
    orphan.kill("SIGKILL");
    bystander.kill("SIGKILL");
  }
});
