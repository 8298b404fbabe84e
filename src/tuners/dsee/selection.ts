/**
 * DSEE's support selection (run_glue.py `main`), once per targeted matrix on its pretrained
 * weight: "omp" keeps the N largest |W|, "rp" N uniformly random positions, "grebsmo" the N
 * largest |S| of a GreBsmo low-rank + sparse split W ≈ U·V + S (grebsmo.ts). Pure host code.
 */
import type { Matrix } from "../../linalg/matrix.js";
import { samplePositions } from "../../sparse/delta.js";
import type { Rng } from "../../util/rng.js";
import type { SparseMethod } from "./config.js";
import { grebsmo } from "./grebsmo.js";

export interface SelectionOptions {
  method: SparseMethod;
  n: number;
  rng: Rng;
  grebsmo: { rankStep: number; outerIters: number; innerIters: number; threshold: number };
}

/**
 * The `n` positions with the largest `score`, increasing. Ties are broken by the larger
 * `tiebreak` (when given), then by the lower position, so the choice is deterministic and exactly
 * `n` long (the authors' `|S| ≥ kth value` mask may hold more on ties).
 */
export function topPositions(score: Float64Array, n: number, tiebreak?: Float64Array): Int32Array {
  const order = Array.from(score.keys()).sort((p, q) => score[q] - score[p] || (tiebreak ? tiebreak[q] - tiebreak[p] : 0) || p - q);
  return Int32Array.from(order.slice(0, n)).sort();
}

/** The support in the [out, in] layout of `w` (flat row-major positions, increasing). */
export function selectSupport(w: Matrix, o: SelectionOptions): Int32Array {
  const abs = Float64Array.from(w.data, Math.abs);
  switch (o.method) {
    case "omp":
      return topPositions(abs, o.n);
    case "rp":
      return samplePositions(w.data.length, o.n, () => o.rng.next());
    case "grebsmo": {
      const { s } = grebsmo(w, { ...o.grebsmo, minSupport: o.n, rng: o.rng });
      return topPositions(Float64Array.from(s, Math.abs), o.n, abs);
    }
  }
}
