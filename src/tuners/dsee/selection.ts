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
 * `n` long (the authors' `|S| ≥ kth value` mask may hold more on ties). A size-n min-heap of the
 * best so far: O(numel·log n), where sorting every entry took ~0.4 s per SmolLM2 MLP matrix.
 */
export function topPositions(score: Float64Array, n: number, tiebreak?: Float64Array): Int32Array {
  const better = (p: number, q: number) =>
    score[p] > score[q] ||
    (score[p] === score[q] &&
      ((tiebreak ? tiebreak[p] - tiebreak[q] : 0) > 0 || ((tiebreak ? tiebreak[p] === tiebreak[q] : true) && p < q)));
  const heap = new Int32Array(n);
  let size = 0;
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let w = i;
      if (l < size && better(heap[w], heap[l])) w = l;
      if (r < size && better(heap[w], heap[r])) w = r;
      if (w === i) return;
      [heap[i], heap[w]] = [heap[w], heap[i]];
      i = w;
    }
  };
  for (let p = 0; p < score.length; p++) {
    if (size < n) {
      // Sift up: the root holds the worst of the kept positions.
      let i = size++;
      heap[i] = p;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!better(heap[parent], heap[i])) break;
        [heap[i], heap[parent]] = [heap[parent], heap[i]];
        i = parent;
      }
    } else if (n > 0 && better(p, heap[0])) {
      heap[0] = p;
      down(0);
    }
  }
  return heap.subarray(0, size).sort();
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
