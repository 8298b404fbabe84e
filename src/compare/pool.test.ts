import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { runPool, threadsPerJob } from "./pool.js";

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("runPool", () => {
  test("keeps at most `jobs` in flight and runs every item once", async () => {
    let inFlight = 0;
    let most = 0;
    const seen: number[] = [];
    await runPool(
      [30, 5, 20, 5, 10],
      2,
      () => false,
      async (ms, i) => {
        inFlight++;
        most = Math.max(most, inFlight);
        await tick(ms);
        seen.push(i);
        inFlight--;
      },
    );
    assert.equal(most, 2);
    assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4]);
    assert.notDeepEqual(seen, [0, 1, 2, 3, 4], "a short run finishes before a long one started earlier");
  });

  test("stop: nothing new starts, the runs in flight finish", async () => {
    let stop = false;
    const done: number[] = [];
    await runPool(
      [1, 2, 3, 4, 5],
      2,
      () => stop,
      async (_x, i) => {
        await tick(1);
        if (i === 0) stop = true;
        await tick(5);
        done.push(i);
      },
    );
    assert.deepEqual([...done].sort(), [0, 1]);
  });

  test("an error stops launching and is rethrown after the others end", async () => {
    const done: number[] = [];
    await assert.rejects(
      runPool(
        [0, 1, 2, 3],
        2,
        () => false,
        async (_x, i) => {
          await tick(i === 0 ? 1 : 10);
          if (i === 0) throw new Error("boom");
          done.push(i);
        },
      ),
      /boom/,
    );
    assert.deepEqual(done, [1]);
  });

  test("threads per job", () => {
    assert.equal(threadsPerJob(2, 1), 2);
    assert.equal(threadsPerJob(2, 2), 1);
    assert.equal(threadsPerJob(2, 4), 1);
    assert.equal(threadsPerJob(8, 3), 2);
  });
});
