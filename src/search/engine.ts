/**
 * The search loop of `peftkit search`, pure apart from its callbacks: AutoPEFT's BO loop
 * (cambridgeltl/autopeft run_one_replicate.py) with the score modelled by a GP, the parameter count
 * known before training, and candidates picked by the closed-form 2-D expected hypervolume
 * improvement, optimised by AutoPEFT's local search over one-exchange neighbours, q at a time with
 * kriging-believer pending points. Random search runs on the same path with the same initial points.
 *
 * Evaluations are numbered 0..budget−1 and proposed in batches of q; batch b is derived only from
 * the seed and the results of evaluations < b·q, so a killed search re-derives the same proposals.
 */
import { runPool } from "../compare/pool.js";
import { PeftkitError } from "../engine/errors.js";
import { Rng } from "../util/rng.js";
import { fitHyper, GaussianProcess } from "./gp.js";
import { expectedHvImprovement, hypervolume, type Point2, type Reference } from "./hypervolume.js";
import { configKey, encode, neighbours, type SearchConfig, type SearchSpace, sampleConfig, totalCount } from "./space.js";

export type SearchMethod = "bo" | "random";
export type Origin = "init" | "bo" | "random";

export interface Evaluation {
  index: number;
  batch: number;
  origin: Origin;
  config: SearchConfig;
  key: string;
  params: number;
  score: number;
}

export interface SearchOptions {
  method: SearchMethod;
  budget: number;
  nInit: number;
  seed: number;
  /** q: proposals per batch (the CLI's --jobs). */
  batchSize: number;
}

export interface Problem {
  space: SearchSpace;
  /** Trainable parameters of a configuration, known before training. */
  params(c: SearchConfig): number;
  /** In cost units (log10 params) and score. */
  reference: Reference;
}

/** The cost axis: decades of trainable parameters. */
export const cost = (params: number): number => Math.log10(Math.max(1, params));

/** A 32-bit stream seed from (seed, batch, purpose). */
function streamSeed(seed: number, batch: number, purpose: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [batch, purpose]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
  }
  return h;
}

/** The n initial configurations (distinct while the space allows): the same for bo and random. */
export function initialConfigs(space: SearchSpace, n: number, seed: number): SearchConfig[] {
  const rng = new Rng(streamSeed(seed, 0, 1));
  const out: SearchConfig[] = [];
  const seen = new Set<string>();
  const total = totalCount(space);
  for (let tries = 0; out.length < Math.min(n, total) && tries < 100 * n; tries++) {
    const c = sampleConfig(space, rng);
    if (seen.has(configKey(c))) continue;
    seen.add(configKey(c));
    out.push(c);
  }
  return out;
}

function randomUnseen(space: SearchSpace, rng: Rng, seen: Set<string>): SearchConfig | null {
  for (let tries = 0; tries < 2000; tries++) {
    const c = sampleConfig(space, rng);
    if (!seen.has(configKey(c))) return c;
  }
  return null;
}

/** Hill-climbing restarts and acquisition evaluations of the local search (AutoPEFT: 10 and 2000). */
const RESTARTS = 10;
/** Random configurations scored to pick half of the restarts. */
const RANDOM_POOL = 200;
const MAX_ACQ_EVALS = 2000;

/** The configurations of batch b, given the evaluations before it. */
export function proposeBatch(
  problem: Problem,
  o: SearchOptions,
  history: readonly Evaluation[],
  batch: number,
): { index: number; config: SearchConfig; origin: Origin }[] {
  const { space } = problem;
  const init = initialConfigs(space, o.nInit, o.seed);
  const seen = new Set(history.map((e) => e.key));
  const rng = new Rng(streamSeed(o.seed, batch + 1, o.method === "bo" ? 2 : 3));
  const out: { index: number; config: SearchConfig; origin: Origin }[] = [];
  const first = batch * o.batchSize;
  const last = Math.min(o.budget, first + o.batchSize);
  const slots: number[] = [];
  for (let i = first; i < last; i++) {
    if (i < init.length && !seen.has(configKey(init[i]))) {
      out.push({ index: i, config: init[i], origin: "init" });
      seen.add(configKey(init[i]));
    } else slots.push(i);
  }
  if (!slots.length) return out;
  const ok = history.filter((e) => Number.isFinite(e.score));
  const useBo = o.method === "bo" && ok.length >= 2;
  const pick = useBo
    ? boPicker(
        problem,
        ok,
        out.map((p) => p.config),
        rng,
      )
    : null;
  for (const i of slots) {
    const c = pick ? pick(seen) : randomUnseen(space, rng, seen);
    if (c === null) break;
    seen.add(configKey(c));
    out.push({ index: i, config: c, origin: useBo ? "bo" : i < o.nInit ? "init" : "random" });
  }
  return out;
}

/**
 * A picker of successive BO proposals: each pick is the EHVI maximiser found by local search; it then
 * becomes a pending point at its posterior mean (kriging believer) for the picks after it.
 */
function boPicker(
  problem: Problem,
  ok: readonly Evaluation[],
  pendingInit: SearchConfig[],
  rng: Rng,
): (seen: Set<string>) => SearchConfig | null {
  const { space, reference } = problem;
  // The encoding plus the configuration's cost (log10 trainable parameters, scaled by the
  // reference's): configurations of similar size then inform each other, whatever their layers.
  const features = (c: SearchConfig): Float64Array => {
    const e = encode(space, c);
    const x = new Float64Array(e.length + 1);
    x.set(e);
    x[e.length] = cost(problem.params(c)) / reference.cost;
    return x;
  };
  const xs = ok.map((e) => features(e.config));
  // Standardised once on the observed scores, so pending points do not move the scale.
  const m = standardised(ok.map((e) => e.score));
  const zs = ok.map((e) => (e.score - m.mean) / m.scale);
  const hyper = fitHyper(xs, zs);
  let gp = new GaussianProcess(xs, zs, hyper, false);
  const predict = (x: Float64Array) => {
    const p = gp.predict(x);
    return { mean: m.mean + m.scale * p.mean, std: m.scale * p.std };
  };
  const front: Point2[] = ok.map((e) => ({ cost: cost(e.params), score: e.score }));
  const frontConfigs: SearchConfig[] = ok.map((e) => e.config);
  const believe = (c: SearchConfig) => {
    const x = features(c);
    const mu = gp.predict(x).mean;
    xs.push(x);
    zs.push(mu);
    front.push({ cost: cost(problem.params(c)), score: m.mean + m.scale * mu });
    frontConfigs.push(c);
    // Same hyperparameters, the pending point conditioned at its mean: its σ collapses, its neighbours' shrink.
    gp = new GaussianProcess(xs, zs, hyper, false);
  };
  for (const c of pendingInit) believe(c);
  return (seen) => {
    const cache = new Map<string, number>();
    const acq = (c: SearchConfig): number => {
      const k = configKey(c);
      if (seen.has(k)) return Number.NEGATIVE_INFINITY;
      const hit = cache.get(k);
      if (hit !== undefined) return hit;
      const p = predict(features(c));
      const v = expectedHvImprovement(front, cost(problem.params(c)), p.mean, p.std, reference);
      cache.set(k, v);
      return v;
    };
    // Restarts from random neighbours of the current Pareto set ("sample_around_best"), and from the
    // best of a pool of random configurations (AutoPEFT's random acquisition optimiser).
    const paretoIdx = paretoIndices(front);
    const starts: SearchConfig[] = [];
    for (const i of paretoIdx) {
      const nb = neighbours(space, frontConfigs[i]);
      if (nb.length) starts.push(nb[Math.floor(rng.next() * nb.length)]);
      if (starts.length >= RESTARTS / 2) break;
    }
    const pool: { c: SearchConfig; v: number }[] = [];
    for (let i = 0; i < RANDOM_POOL; i++) {
      const c = randomUnseen(space, rng, seen);
      if (c === null) break;
      pool.push({ c, v: acq(c) });
    }
    pool.sort((a, b) => b.v - a.v);
    for (const p of pool) {
      if (starts.length >= RESTARTS) break;
      starts.push(p.c);
    }
    let best: { c: SearchConfig; v: number } | null = null;
    const budgetPer = Math.floor(MAX_ACQ_EVALS / RESTARTS);
    for (const s of starts) {
      let cur = s;
      let cv = acq(cur);
      let evals = 1;
      for (;;) {
        let move: { c: SearchConfig; v: number } | null = null;
        for (const nb of neighbours(space, cur)) {
          if (evals++ >= budgetPer) break;
          const v = acq(nb);
          if (v > (move?.v ?? cv)) move = { c: nb, v };
        }
        if (move === null) break;
        cur = move.c;
        cv = move.v;
        if (evals >= budgetPer) break;
      }
      if (Number.isFinite(cv) && (best === null || cv > best.v)) best = { c: cur, v: cv };
    }
    const chosen = best !== null && best.v > 0 ? best.c : randomUnseen(space, rng, seen);
    if (chosen !== null) believe(chosen);
    return chosen;
  };
}

function standardised(y: readonly number[]): { mean: number; scale: number } {
  const mean = y.reduce((a, b) => a + b, 0) / y.length;
  const v = y.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, y.length - 1);
  return { mean, scale: Math.sqrt(v) > 1e-12 ? Math.sqrt(v) : 1 };
}

/** Indices of the non-dominated points (lower cost, higher score). */
export function paretoIndices(points: readonly Point2[]): number[] {
  return points.flatMap((p, i) =>
    points.some((q, j) => j !== i && q.cost <= p.cost && q.score >= p.score && (q.cost < p.cost || q.score > p.score)) ? [] : [i],
  );
}

/** The hypervolume after each evaluation (in index order). */
export function hypervolumeTrace(evals: readonly Evaluation[], ref: Reference): number[] {
  const sorted = [...evals].sort((a, b) => a.index - b.index);
  const pts: Point2[] = [];
  return sorted.map((e) => {
    if (Number.isFinite(e.score)) pts.push({ cost: cost(e.params), score: e.score });
    return hypervolume(pts, ref);
  });
}

/** A state file that does not belong to this search. */
export class SearchStateError extends PeftkitError {}

/**
 * Runs (or resumes) a search: `done` are the evaluations already recorded; each new one is passed to
 * `record` as soon as it finishes. `stopped()` is checked before each launch.
 */
export async function runSearch(
  problem: Problem,
  o: SearchOptions,
  done: readonly Evaluation[],
  evaluate: (c: SearchConfig, index: number) => Promise<{ params: number; score: number }>,
  record: (e: Evaluation) => void,
  stopped: () => boolean = () => false,
): Promise<Evaluation[]> {
  const rows = new Map(done.map((e) => [e.index, e]));
  const batches = Math.ceil(o.budget / o.batchSize);
  for (let b = 0; b < batches && !stopped(); b++) {
    const history = [...rows.values()].filter((e) => e.index < b * o.batchSize).sort((x, y) => x.index - y.index);
    const props = proposeBatch(problem, o, history, b);
    for (const p of props) {
      const have = rows.get(p.index);
      if (have && have.key !== configKey(p.config))
        throw new SearchStateError(
          `evaluation ${p.index} was ${have.key} but the search now proposes ${configKey(p.config)}: the state file belongs to another space, seed or --jobs`,
        );
    }
    const todo = props.filter((p) => !rows.has(p.index));
    await runPool(todo, o.batchSize, stopped, async (p) => {
      const r = await evaluate(p.config, p.index);
      const e: Evaluation = {
        index: p.index,
        batch: b,
        origin: p.origin,
        config: p.config,
        key: configKey(p.config),
        params: r.params,
        score: r.score,
      };
      rows.set(p.index, e);
      record(e);
    });
    if (props.length < Math.min(o.batchSize, o.budget - b * o.batchSize)) break; // the space is exhausted
  }
  return [...rows.values()].sort((x, y) => x.index - y.index);
}
