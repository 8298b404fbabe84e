import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { durabilityProblems, traceFs } from "../testing/fs-trace.js";
import { latestCheckpoint } from "../train/checkpoint.js";
import { cleanStaleTemps, isTmpName, removeDir, replaceDir, writeFileAtomic } from "./atomic-write.js";

const root = mkdtempSync(join(tmpdir(), "peftkit-atomic-"));
after(() => rmSync(root, { recursive: true, force: true }));

describe("atomic writes", () => {
  test("writeFileAtomic: fsync the temporary, rename it over the target, fsync the folder; no temporary left", async () => {
    const dir = join(root, "file");
    mkdirSync(dir);
    const path = join(dir, "a.json");
    writeFileSync(path, "old");
    const { events } = await traceFs(async () => {
      writeFileAtomic(path, "new text");
      writeFileAtomic(join(dir, "b.bin"), [new Uint8Array([1, 2]), new Uint8Array([3])]);
    });
    assert.equal(readFileSync(path, "utf8"), "new text");
    assert.deepEqual([...readFileSync(join(dir, "b.bin"))], [1, 2, 3]);
    assert.deepEqual(readdirSync(dir).sort(), ["a.json", "b.bin"]);
    assert.deepEqual(durabilityProblems(events, dir), []);
    const tmp = events[0].path;
    assert.ok(tmp.startsWith(`${path}.tmp-`) && isTmpName(tmp), tmp);
    assert.deepEqual(events.slice(0, 4), [
      { op: "open-write", path: tmp },
      { op: "fsync", path: tmp },
      { op: "rename", path: tmp, to: path },
      { op: "fsync", path: dir },
    ]);
  });

  test("the durability check flags a plain write and a rename without fsyncs", async () => {
    const dir = join(root, "unsafe");
    mkdirSync(dir);
    const { events } = await traceFs(async () => {
      writeFileSync(join(dir, "x.tmp"), "x");
      const { renameSync } = await import("node:fs");
      renameSync(join(dir, "x.tmp"), join(dir, "x"));
    });
    const p = durabilityProblems(events, dir);
    assert.equal(p.length, 3, p.join("\n"));
  });

  test("replaceDir never leaves a moment without a complete folder and removes the old one after", async () => {
    const dir = join(root, "replace");
    const dest = join(dir, "checkpoint-4");
    mkdirSync(dest, { recursive: true });
    writeFileSync(join(dest, "f"), "old");
    const src = join(dir, "checkpoint-4.tmp-1");
    mkdirSync(src);
    writeFileAtomic(join(src, "f"), "new");
    const { events } = await traceFs(async () => replaceDir(src, dest));
    assert.equal(readFileSync(join(dest, "f"), "utf8"), "new");
    assert.deepEqual(readdirSync(dir), ["checkpoint-4"]);
    const renames = events.filter((e) => e.op === "rename");
    assert.deepEqual(
      renames.map((e) => [e.path, e.to]),
      [
        [dest, `${dest}.old-${process.pid}`],
        [src, dest],
      ],
    );
    assert.deepEqual(durabilityProblems(events, dir), []);
  });

  test("removeDir renames to a temporary name first", async () => {
    const dir = join(root, "remove");
    mkdirSync(join(dir, "checkpoint-2"), { recursive: true });
    const { events } = await traceFs(async () => removeDir(join(dir, "checkpoint-2")));
    assert.deepEqual(readdirSync(dir), []);
    assert.ok(
      isTmpName(
        events
          .find((e) => e.op === "rename")
          ?.to?.split("/")
          .pop() ?? "",
      ),
    );
  });

  test("after a crash: temporaries go, a folder whose replacement never arrived comes back, and resume finds it", () => {
    const dir = join(root, "crashed");
    const complete = (name: string) => {
      mkdirSync(join(dir, name), { recursive: true });
      writeFileSync(join(dir, name, "trainer_state.json"), "{}");
      writeFileSync(join(dir, name, "optimizer.safetensors"), "");
    };
    complete("checkpoint-2");
    complete("checkpoint-2.old-77"); // its replacement arrived: garbage
    complete("checkpoint-4.old-77"); // crash between the two renames of a replacement
    complete("checkpoint-6.tmp-77"); // a folder being written
    writeFileSync(join(dir, "adapter_model.safetensors.tmp-77-ab12cd"), "torn");
    writeFileSync(join(dir, "notes.tmp"), "not ours");
    assert.ok(latestCheckpoint(dir)?.endsWith("checkpoint-4.old-77"));
    const done = cleanStaleTemps(dir);
    assert.equal(done.length, 4, done.join("\n"));
    assert.deepEqual(readdirSync(dir).sort(), ["checkpoint-2", "checkpoint-4", "notes.tmp"]);
    assert.ok(latestCheckpoint(dir)?.endsWith("checkpoint-4"));
    assert.ok(existsSync(join(dir, "checkpoint-4", "trainer_state.json")));
  });
});
