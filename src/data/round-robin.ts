/** Class-balanced selection shared by the demo task and wordnet-bench. */

/**
 * Takes one item of each group in turn (groups in the given order, each already sorted) until
 * `n` items or every group runs out, so any prefix is as class-balanced as the groups allow.
 */
export function roundRobin<T>(groups: readonly (readonly T[])[], n: number): T[] {
  const out: T[] = [];
  for (let i = 0; out.length < n; i++) {
    let any = false;
    for (const g of groups) {
      if (i < g.length && out.length < n) {
        out.push(g[i]);
        any = true;
      }
    }
    if (!any) break;
  }
  return out;
}
