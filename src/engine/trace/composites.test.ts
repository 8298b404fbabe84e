/**
 * The vocabulary-blocked cross entropy against the closed form computed here in a plain loop
 * (lse(z_t) − z_t[label_t], averaged or summed over the non-ignored positions).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { interpret } from "../exec/reference/interpreter.js";
import { hostTensor } from "../ir/host.js";
import { crossEntropyBlockStats, crossEntropyFromBlocks } from "./composites.js";
import { trace } from "./trace.js";

const [B, S, V] = [2, 3, 11];

function closedForm(z: Float64Array, labels: number[], reduction: "mean" | "sum"): number {
  let total = 0;
  let n = 0;
  labels.forEach((y, t) => {
    if (y === -100) return;
    const row = z.subarray(t * V, (t + 1) * V);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    total += lse - row[y];
    n++;
  });
  return reduction === "sum" ? total : total / Math.max(n, 1);
}

test("cross entropy from vocabulary blocks equals the closed form, for any split and with ignored labels", () => {
  const z = Float64Array.from({ length: B * S * V }, () => Math.random() * 8 - 4);
  // labels in the first, a middle and the last block, and two ignored positions
  const labels = [0, 10, -100, 5, 3, -100];
  for (const cuts of [[V], [4, V], [1, 2, 7, V], [5, 6, V]])
    for (const reduction of ["mean", "sum"] as const) {
      const g = trace(
        (x, y) => {
          const stats = [];
          let at = 0;
          for (const c of cuts) {
            stats.push(crossEntropyBlockStats(x.slice(-1, at, c), y, at));
            at = c;
          }
          return crossEntropyFromBlocks(stats, y, { reduction });
        },
        [
          { dtype: "f64", shape: [B, S, V] },
          { dtype: "i64", shape: [B, S] },
        ],
      );
      const [got] = interpret(g, [hostTensor("f64", [B, S, V], z), hostTensor("i64", [B, S], labels)], { precision: "f64" });
      const want = closedForm(z, labels, reduction);
      assert.ok(Math.abs(Number(got.data[0]) - want) < 1e-12, `cuts ${cuts} ${reduction}: ${got.data[0]} vs ${want}`);
    }
});
