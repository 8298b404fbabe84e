/**
 * BO against random search on the synthetic problem (src/search/synthetic.ts), 10 seeds per budget:
 * the figures of docs/search.md. Run: npx tsc -p tsconfig.json && node dist/scripts/search-synthetic.js
 */
import { hypervolumeTrace, runSearch, type SearchMethod } from "../src/search/engine.js";
import { syntheticParams, syntheticProblem, syntheticScore } from "../src/search/synthetic.js";

const problem = syntheticProblem();
console.log("| budget | n-init | BO wins (of 10 seeds) | mean hypervolume BO | mean hypervolume random |");
console.log("|---|---|---|---|---|");
for (const [budget, nInit] of [
  [16, 4],
  [20, 4],
  [24, 6],
]) {
  let wins = 0;
  const sum: Record<SearchMethod, number> = { bo: 0, random: 0 };
  for (let seed = 0; seed < 10; seed++) {
    const hv = { bo: 0, random: 0 };
    for (const method of ["bo", "random"] as const) {
      const rows = await runSearch(
        problem,
        { method, budget, nInit, seed, batchSize: 1 },
        [],
        async (c) => ({ params: syntheticParams(c), score: syntheticScore(c) }),
        () => {},
      );
      hv[method] = hypervolumeTrace(rows, problem.reference).at(-1) ?? 0;
      sum[method] += hv[method];
    }
    if (hv.bo > hv.random) wins++;
  }
  console.log(`| ${budget} | ${nInit} | ${wins} | ${(sum.bo / 10).toFixed(4)} | ${(sum.random / 10).toFixed(4)} |`);
}
