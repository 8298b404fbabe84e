/**
 * TriAdaptLoRA's RankAllocator as a Controller. The step holds every module at its capacity; a
 * slot is existing (trained, counted in ranknum) or not yet used (zero core entries, frozen by
 * the update gates). Growth changes ranknum and the gates only.
 *
 * Timing. The stored code's allocator is called with global_step g after the backward of step g
 * and before optimizer.step() (as IncreLoRA's trainer, which its allocator copies), so its score
 * reads the core after g updates, and what a round adds gets no update in that step. Here the
 * round of step g runs after our update g + 1 with the norms recorded after update g (the
 * previous call), so scores, thresholds and growth are the same.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import { chooseModules, isGrowthStep } from "../increlora/allocator.js";
import type { ModelInfo } from "../tuner.js";
import { increRankNum, type TriadaptloraConfig } from "./config.js";
import { type TriadaptloraLayer, triadaptloraKeys, triadaptloraLayers } from "./layers.js";
import { blocksOf, coreMatrix, frobenius, growthCount, triangularMasks } from "./schedule.js";

interface ModuleState {
  rank: number;
  /** ‖C‖_F / blocks at the last scoring (the authors' preNormValue). */
  prevNorm: number;
}

interface State {
  modules: ModuleState[];
  total: number;
  /** The last round's threshold, for the log. */
  threshold: number | null;
  /** ‖C‖_F of each module after the latest update, kept when the next step has a round. */
  pending: number[] | null;
}

/** The schedule's length: total_step, else the run's planned steps. */
export function scheduleSteps(c: TriadaptloraConfig, run: ControllerRun): number | null {
  return c.totalStep ?? run.totalSteps;
}

export function triadaptloraController(info: ModelInfo, c: TriadaptloraConfig, run: ControllerRun): Controller<TriadaptloraConfig> | null {
  // A loaded adapter (its rank_pattern written) trains at the ranks it has.
  if (c.rankPattern) return null;
  const layers = triadaptloraLayers(info, c);
  const add = increRankNum(c);
  const target = c.targetTotalRank ?? c.referenceRank * layers.length;
  const initial = c.initRank * layers.length;
  if (target <= initial)
    throw new PeftConfigError(
      `TriAdaptLoRA: the total rank budget ${target} must exceed the initial total ${initial} (init_rank ${c.initRank} × ${layers.length} modules)`,
    );
  const planned = scheduleSteps(c, run);
  if (planned !== null && planned <= c.initWarmup)
    throw new PeftConfigError(
      `TriAdaptLoRA: init_warmup (${c.initWarmup}) leaves no step for growth in ${planned} total steps: lower init_warmup or train longer`,
    );
  const masks = new Map(layers.map((l) => [l.capacity, triangularMasks(l.capacity, c.initRank, add)]));
  let st: State = {
    modules: layers.map(() => ({ rank: c.initRank, prevNorm: 0 })),
    total: initial,
    threshold: null,
    pending: null,
  };

  const config = (): TriadaptloraConfig => ({
    ...c,
    rankPattern: Object.fromEntries(layers.map((l, i) => [l.key, st.modules[i].rank])),
  });

  /** ‖C‖_F over a module's existing slots. */
  const coreNorm = (tensors: ReadonlyMap<string, HostTensor>, l: TriadaptloraLayer, rank: number): number => {
    const k = triadaptloraKeys(l.key);
    const data = (key: string) => (tensors.get(key) as HostTensor).data as Float32Array;
    return frobenius(coreMatrix(data(k.lower), data(k.upper), l.capacity, rank, c.initRank, add));
  };

  /** The update gates of a module at rank `rank`: its existing rows, columns and core entries. */
  const gates = (l: TriadaptloraLayer, rank: number, out: Map<string, HostTensor>): void => {
    const k = triadaptloraKeys(l.key);
    const n = l.capacity;
    const a = new Float32Array(n * l.inFeatures).fill(1, 0, rank * l.inFeatures);
    const b = new Float32Array(l.outFeatures * n);
    for (let o = 0; o < l.outFeatures; o++) b.fill(1, o * n, o * n + rank);
    const m = masks.get(n) as { lower: Float32Array; upper: Float32Array };
    const lower = new Float32Array(n * n);
    const upper = new Float32Array(n * n);
    for (let i = 0; i < rank; i++)
      for (let j = 0; j < rank; j++) {
        lower[i * n + j] = m.lower[i * n + j];
        upper[i * n + j] = m.upper[i * n + j];
      }
    out.set(k.a, hostTensor("f32", [n, l.inFeatures], a));
    out.set(k.b, hostTensor("f32", [l.outFeatures, n], b));
    out.set(k.lower, hostTensor("f32", [n, n], lower));
    out.set(k.upper, hostTensor("f32", [n, n], upper));
  };

  const allGates = (): Map<string, HostTensor> => {
    const out = new Map<string, HostTensor>();
    layers.forEach((l, i) => {
      gates(l, st.modules[i].rank, out);
    });
    return out;
  };

  /** increase_to_target_rank at 0-based step g: score every module, take the threshold, grow. Returns the grown modules. */
  const round = (g: number, totalSteps: number | null): number[] => {
    const steps = c.totalStep ?? totalSteps;
    if (steps === null)
      throw new PeftConfigError(
        "TriAdaptLoRA: the threshold schedule needs the run's length: set total_step or give the trainer totalSteps",
      );
    const norms = st.pending;
    if (!norms) throw new PeftConfigError(`TriAdaptLoRA: no core norms were recorded before the round of step ${g}`);
    // compute_score: the change of ‖C‖_F / blocks since the last scoring.
    const scores = st.modules.map((m, i) => {
      const now = norms[i] / blocksOf(m.rank, c.initRank, add);
      const score = now - m.prevNorm;
      m.prevNorm = now;
      return score;
    });
    const n = growthCount(c.rankGrowthModel, target - st.total, g, c.initWarmup, steps);
    const mayGrow = layers.map((l, i) => st.modules[i].rank + add <= l.maxRank);
    const { chosen, threshold } = chooseModules(scores, mayGrow, n, Number.POSITIVE_INFINITY);
    st.threshold = threshold;
    for (const i of chosen) {
      st.modules[i].rank += add;
      st.total += add;
    }
    return chosen;
  };

  return {
    gradientKeys: [],
    configFields: ["rank_pattern"],
    gatedUpdates: true,
    begin(tensors) {
      // reset_lora_parameters ends with compute_score: the initial core's norm is the first reference.
      layers.forEach((l, i) => {
        const m = st.modules[i];
        m.prevNorm = coreNorm(tensors, l, m.rank) / blocksOf(m.rank, c.initRank, add);
      });
      return { trainable: allGates() };
    },
    afterStep(s: ControllerStep): ControllerAction<TriadaptloraConfig> | null {
      const g = s.step - 1;
      let grown: number[] = [];
      if (st.total < target && isGrowthStep(g, c.initWarmup, c.increInterval)) grown = round(g, s.totalSteps);
      // The next step's round scores the core as it is now, before that step's update.
      st.pending =
        st.total < target && isGrowthStep(s.step, c.initWarmup, c.increInterval)
          ? layers.map((l, i) => coreNorm(s.tensors, l, st.modules[i].rank))
          : null;
      if (!grown.length) return null;
      const tensors = new Map<string, HostTensor>();
      for (const i of grown) tensors.set(triadaptloraKeys(layers[i].key).ranknum, hostTensor("f32", [1], [st.modules[i].rank]));
      return { tensors, trainable: allGates(), config: config() };
    },
    metrics: () => ({ rank_total: st.total, ...(st.threshold !== null ? { threshold: st.threshold } : {}) }),
    state(): ControllerState {
      return { tensors: new Map(), json: st };
    },
    restore(saved: ControllerState) {
      st = structuredClone(saved.json as State);
      if (st.modules.length !== layers.length)
        throw new PeftConfigError(`TriAdaptLoRA: the checkpoint's allocator has ${st.modules.length} modules, this model ${layers.length}`);
      return st.modules.some((m) => m.rank !== c.initRank) ? { config: config() } : null;
    },
  };
}
