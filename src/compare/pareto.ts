/** The Pareto front of (trainable parameters, metric): fewer parameters and a better metric win. */

export interface ParetoPoint {
  params: number;
  value: number;
}

/**
 * Indices of the points no other point dominates. A point dominates another when it has no more
 * parameters and no worse a metric, and is strictly better in one. NaN metrics never count.
 */
export function paretoFront(points: readonly ParetoPoint[], higherIsBetter: boolean): number[] {
  const better = (a: number, b: number) => (higherIsBetter ? a > b : a < b);
  const front: number[] = [];
  points.forEach((p, i) => {
    if (!Number.isFinite(p.value)) return;
    const dominated = points.some(
      (q, j) =>
        j !== i &&
        Number.isFinite(q.value) &&
        q.params <= p.params &&
        !better(p.value, q.value) &&
        (q.params < p.params || better(q.value, p.value)),
    );
    if (!dominated) front.push(i);
  });
  return front.sort((a, b) => points[a].params - points[b].params);
}
