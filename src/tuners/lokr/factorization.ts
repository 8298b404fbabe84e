/**
 * PEFT's `factorization(dimension, factor)` (tuners/lokr/layer.py at v0.20.0, from LyCORIS):
 * dimension = m·n with
 * - factor > 0 dividing dimension: (factor, dimension / factor), in that order even when factor
 *   is the larger one;
 * - otherwise: walk the divisors m upwards from 1 while m < n and m <= factor (any m when
 *   factor = -1; none when factor is 0 or below -1); return the last pair, smaller first. So -1
 *   gives the divisor pair nearest √dimension, and a prime gives (1, dimension).
 */
export function factorization(dimension: number, factor = -1): [number, number] {
  if (factor > 0 && dimension % factor === 0) return [factor, dimension / factor];
  const limit = factor === -1 ? dimension : factor;
  let m = 1;
  let n = dimension;
  const length = m + n;
  while (m < n) {
    let next = m + 1;
    while (dimension % next !== 0) next++;
    const nextN = dimension / next;
    // PEFT compares with the starting 1 + dimension, which m + n never exceeds before the swap.
    if (next + nextN > length || next > limit) break;
    m = next;
    n = nextN;
  }
  return m > n ? [n, m] : [m, n];
}
