import assert from "node:assert/strict";
import { test } from "node:test";
import { type Evaluation, hypervolumeTrace, runSearch, type SearchOptions } from "./engine.js";
import { syntheticParams, syntheticProblem, syntheticScore } from "./synthetic.js";

async function search(o: SearchOptions, done: Evaluation[] = [], stopAfter = Number.POSITIVE_INFINITY): Promise<Evaluation[]> {
  const problem = syntheticProblem();
  let n = 0;
  const recorded = [...done];
  await runSearch(
    problem,
    o,
    done,
    async (c) => ({ params: syntheticParams(c), score: syntheticScore(c) }),
    (e) => {
      recorded.push(e);
      n++;
    },
    () => n >= stopAfter,
  );
  return recorded.sort((a, b) => a.index - b.index);
}

test("BO beats random search in hypervolume at the same budget (synthetic, 5 seeds)", async () => {
  const problem = syntheticProblem();
  let wins = 0;
  let sumBo = 0;
  let sumRandom = 0;
  for (let seed = 0; seed < 5; seed++) {
    const base = { budget: 24, nInit: 6, seed, batchSize: 1 };
    const bo = hypervolumeTrace(await search({ ...base, method: "bo" }), problem.reference).at(-1) as number;
    const rnd = hypervolumeTrace(await search({ ...base, method: "random" }), problem.reference).at(-1) as number;
    console.log(`seed ${seed}: hypervolume bo ${bo.toFixed(4)} random ${rnd.toFixed(4)}`);
    if (bo > rnd) wins++;
    sumBo += bo;
    sumRandom += rnd;
  }
  assert.ok(sumBo > sumRandom, `mean hypervolume bo ${sumBo / 5} ≤ random ${sumRandom / 5}`);
  assert.ok(wins >= 4, `bo won ${wins} of 5 seeds`);
});

test("a killed search resumes with the same proposals (q = 1 and q = 3)", async () => {
  for (const batchSize of [1, 3]) {
    const o: SearchOptions = { method: "bo", budget: 14, nInit: 4, seed: 11, batchSize };
    const whole = await search(o);
    // Killed after 7 evaluations (mid-batch for q = 3), then resumed from the recorded rows.
    const part = await search(o, [], 7);
    assert.equal(part.length, 7 + (batchSize === 3 ? 2 : 0));
    const resumed = await search(o, part.slice(0, 7));
    assert.deepEqual(
      resumed.map((e) => e.key),
      whole.map((e) => e.key),
    );
    assert.equal(new Set(whole.map((e) => e.key)).size, whole.length, "no configuration evaluated twice");
    assert.deepEqual(
      whole.map((e) => e.origin),
      [...Array(4).fill("init"), ...Array(10).fill("bo")],
    );
  }
});

test("a state file of another search is refused", async () => {
  const o: SearchOptions = { method: "bo", budget: 6, nInit: 3, seed: 1, batchSize: 1 };
  const rows = await search(o);
  await assert.rejects(search({ ...o, seed: 2 }, rows.slice(0, 3)), /evaluation 0 was .* but the search now proposes/);
});
