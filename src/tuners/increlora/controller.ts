/**
 * IncreLoRA's RankAllocator as a Controller. The step holds every module at its capacity; a slot
 * is active (trained, counted in ranknum), reserved (A and B train ahead with E fixed at 1e-5:
 * "advance learning") or unused (E = 0, frozen). Growth changes values and update gates only.
 *
 * Timing: the authors call update_and_increase(global_step) after backward and before
 * optimizer.step(). Whatever it adds or activates has no gradient in that step, so doing it after
 * our update of step g + 1 (0-based g) is the same; the scores are those of that step's backward.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerState, ControllerStep } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import { chooseModules, type Importance, importanceOf, isGrowthStep, NO_IMPORTANCE, updateImportance } from "./allocator.js";
import { type IncreloraConfig, increRankNum } from "./config.js";
import { type IncreloraLayer, increloraKeys, increloraLayers } from "./layers.js";

/** E of a reserved rank under advance learning. */
export const RESERVED_E = 1e-5;

/** The probe name of a module's score (its statistic in ControllerStep.statistics). */
export const scoreName = (key: string): string => `increlora:${key}`;

interface ModuleState {
  rank: number;
  reserved: number;
  importance: Importance;
}

interface State {
  modules: ModuleState[];
  total: number;
  /** The last round's threshold, for the log. */
  threshold: number | null;
}

export function increloraController(info: ModelInfo, c: IncreloraConfig): Controller<IncreloraConfig> | null {
  // A loaded adapter (its patterns written) trains at the ranks it has.
  if (c.rankPattern) return null;
  const layers = increloraLayers(info, c);
  const add = increRankNum(c);
  const target = c.targetTotalRank ?? c.targetR * layers.length;
  let st: State = {
    modules: layers.map(() => ({ rank: c.initR, reserved: 0, importance: NO_IMPORTANCE })),
    total: c.initR * layers.length,
    threshold: null,
  };

  const config = (): IncreloraConfig => ({
    ...c,
    rankPattern: Object.fromEntries(layers.map((l, i) => [l.key, st.modules[i].rank])),
    tripletPattern: Object.fromEntries(layers.map((l, i) => [l.key, st.modules[i].rank + st.modules[i].reserved])),
  });

  /** Tensor edits and gates of one round, built per module. */
  class Edit {
    readonly tensors = new Map<string, HostTensor>();
    readonly trainable = new Map<string, HostTensor>();
    constructor(private readonly current: ReadonlyMap<string, HostTensor>) {}
    private copy(key: string): HostTensor {
      let t = this.tensors.get(key);
      if (!t) {
        const src = this.current.get(key) as HostTensor;
        t = hostTensor(src.dtype, [...src.shape], Float32Array.from(src.data as Float32Array));
        this.tensors.set(key, t);
      }
      return t;
    }
    setE(l: IncreloraLayer, slot: number, v: number): void {
      (this.copy(increloraKeys(l.key).e).data as Float32Array)[slot] = v;
    }
    setExists(l: IncreloraLayer, slot: number): void {
      (this.copy(increloraKeys(l.key).exists).data as Float32Array)[slot] = 1;
    }
    setRanknum(l: IncreloraLayer, v: number): void {
      (this.copy(increloraKeys(l.key).ranknum).data as Float32Array)[0] = v;
    }
    /** The gates of a module from its state: E trains on active slots, A/B on active and (advance) reserved ones. */
    gates(l: IncreloraLayer, m: ModuleState): void {
      const k = increloraKeys(l.key);
      const ab = (i: number) => i < m.rank || (c.advanceLearn && i < m.rank + m.reserved);
      const e = Float32Array.from({ length: l.capacity }, (_, i) => (i < m.rank ? 1 : 0));
      const a = new Float32Array(l.capacity * l.inFeatures);
      const b = new Float32Array(l.outFeatures * l.capacity);
      for (let i = 0; i < l.capacity; i++) {
        if (!ab(i)) continue;
        a.fill(1, i * l.inFeatures, (i + 1) * l.inFeatures);
        for (let o = 0; o < l.outFeatures; o++) b[o * l.capacity + i] = 1;
      }
      this.trainable.set(k.e, hostTensor("f32", [l.capacity, 1], e));
      this.trainable.set(k.a, hostTensor("f32", [l.capacity, l.inFeatures], a));
      this.trainable.set(k.b, hostTensor("f32", [l.outFeatures, l.capacity], b));
    }
    action(withConfig: boolean): ControllerAction<IncreloraConfig> {
      return { tensors: this.tensors, trainable: this.trainable, ...(withConfig ? { config: config() } : {}) };
    }
  }

  /** add_reserve_param: the next `add` slots become reserved. */
  const reserve = (edit: Edit, l: IncreloraLayer, m: ModuleState) => {
    for (let i = m.rank + m.reserved; i < m.rank + add; i++) {
      edit.setExists(l, i);
      edit.setE(l, i, c.advanceLearn ? RESERVED_E : 0);
    }
    m.reserved = add;
  };

  const grow = (edit: Edit): void => {
    const mayGrow = layers.map((l, i) => st.modules[i].rank + add <= l.maxRank);
    const { chosen, threshold } = chooseModules(
      st.modules.map((m) => importanceOf(m.importance)),
      mayGrow,
      c.topH,
      target - st.total,
    );
    st.threshold = threshold;
    for (const i of chosen) {
      const l = layers[i];
      const m = st.modules[i];
      // The reserved ranks become active (their E starts from its reserved value), and new ones are reserved.
      m.rank += add;
      m.reserved = 0;
      st.total += add;
      edit.setRanknum(l, m.rank);
      reserve(edit, l, m);
    }
    if (st.total === target) {
      // The budget is reached: reserved ranks stop contributing (the authors zero their E).
      layers.forEach((l, i) => {
        const m = st.modules[i];
        for (let s = m.rank; s < m.rank + m.reserved; s++) edit.setE(l, s, 0);
      });
    }
  };

  return {
    gradientKeys: [],
    configFields: ["rank_pattern", "triplet_pattern"],
    gatedUpdates: true,
    begin(tensors) {
      const edit = new Edit(tensors);
      layers.forEach((l, i) => {
        edit.gates(l, st.modules[i]);
      });
      return edit.action(false);
    },
    afterStep(s: ControllerStep) {
      const g = s.step - 1;
      const edit = new Edit(s.tensors);
      let changed = false;
      if (g === 0) {
        layers.forEach((l, i) => {
          reserve(edit, l, st.modules[i]);
        });
        changed = true;
      }
      if (st.total < target) {
        layers.forEach((l, i) => {
          const score = s.statistics.get(scoreName(l.key));
          if (!score) throw new PeftConfigError(`IncreLoRA: the training step did not report the score of "${l.key}"`);
          const m = st.modules[i];
          m.importance = updateImportance(m.importance, Number(score.data[0]), c.beta1, c.beta2);
        });
        if (isGrowthStep(g, c.initWarmup, c.increInterval)) {
          grow(edit);
          changed = true;
        }
      }
      if (!changed) return null;
      layers.forEach((l, i) => {
        edit.gates(l, st.modules[i]);
      });
      return edit.action(true);
    },
    metrics: () => ({ rank_total: st.total }),
    state(): ControllerState {
      return { tensors: new Map(), json: st };
    },
    restore(saved: ControllerState) {
      st = structuredClone(saved.json as State);
      if (st.modules.length !== layers.length)
        throw new PeftConfigError(`IncreLoRA: the checkpoint's allocator has ${st.modules.length} modules, this model ${layers.length}`);
      return st.modules.some((m) => m.reserved > 0 || m.rank !== c.initR) ? { config: config() } : null;
    },
  };
}
