/**
 * Two objectives: a cost c to minimise (log10 of the trainable parameters in `peftkit search`) and a
 * score y to maximise, against a reference point (cRef, yRef). The dominated region of a set is a
 * staircase; its area is the hypervolume, and with a deterministic cost the expected hypervolume
 * improvement of a Gaussian score has a closed form (Emmerich et al. 2006, reduced to one random axis).
 */

export interface Point2 {
  cost: number;
  score: number;
}

export interface Reference {
  cost: number;
  score: number;
}

/**
 * The staircase of a set: steps [from, to) of cost with the best score h reached at cost ≤ from,
 * covering [min cost, cRef). Points outside the reference box do not count.
 */
export function staircase(points: readonly Point2[], ref: Reference): { from: number; to: number; height: number }[] {
  const pts = points.filter((p) => p.cost < ref.cost && p.score > ref.score).sort((a, b) => a.cost - b.cost || b.score - a.score);
  const steps: { from: number; to: number; height: number }[] = [];
  let best = ref.score;
  for (let i = 0; i < pts.length; i++) {
    if (pts[i].score <= best) continue;
    best = pts[i].score;
    const last = steps[steps.length - 1];
    if (last && last.from === pts[i].cost) last.height = best;
    else steps.push({ from: pts[i].cost, to: ref.cost, height: best });
    if (steps.length > 1) steps[steps.length - 2].to = pts[i].cost;
  }
  return steps;
}

/** The area the set dominates inside the reference box. */
export function hypervolume(points: readonly Point2[], ref: Reference): number {
  return staircase(points, ref).reduce((s, st) => s + (st.to - st.from) * (st.height - ref.score), 0);
}

/**
 * The pieces of HVI(cost, y) = Σ w_k · max(0, y − h_k): over [cost, cRef) the front's best score
 * so far is a staircase h(c'), and the new point adds y − max(yRef, h(c')) where positive.
 */
export function improvementSteps(front: readonly Point2[], cost: number, ref: Reference): { width: number; height: number }[] {
  if (cost >= ref.cost) return [];
  const out: { width: number; height: number }[] = [];
  const steps = staircase(front, ref);
  // Below the first step (or with no front) the floor is the reference score.
  const firstFrom = steps.length ? steps[0].from : ref.cost;
  if (cost < firstFrom) out.push({ width: firstFrom - cost, height: ref.score });
  for (const s of steps) {
    const a = Math.max(s.from, cost);
    if (s.to > a) out.push({ width: s.to - a, height: s.height });
  }
  return out;
}

/** The hypervolume improvement of adding (cost, score) to the front. */
export function hvImprovement(front: readonly Point2[], cost: number, score: number, ref: Reference): number {
  return improvementSteps(front, cost, ref).reduce((s, p) => s + p.width * Math.max(0, score - p.height), 0);
}

const SQRT2 = Math.SQRT2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** erfc with |error| < 1.2e-7 everywhere (Numerical Recipes' erfcc, Chebyshev fit). */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

export function normalCdf(z: number): number {
  return 0.5 * erfc(-z / SQRT2);
}

export function normalPdf(z: number): number {
  return INV_SQRT_2PI * Math.exp(-0.5 * z * z);
}

/**
 * E[HVI(cost, Y)] for Y ~ N(mu, sigma²): each step adds w·E[max(0, Y − h)] =
 * w·((mu − h)·Φ(z) + sigma·φ(z)), z = (mu − h)/sigma.
 */
export function expectedHvImprovement(front: readonly Point2[], cost: number, mu: number, sigma: number, ref: Reference): number {
  let e = 0;
  for (const { width, height } of improvementSteps(front, cost, ref)) {
    const d = mu - height;
    if (!(sigma > 0)) e += width * Math.max(0, d);
    else {
      const z = d / sigma;
      e += width * (d * normalCdf(z) + sigma * normalPdf(z));
    }
  }
  return e;
}
