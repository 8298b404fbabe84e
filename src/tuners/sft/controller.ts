/**
 * SpIEL's SftSelector as a Controller ("rigl", the paper's SpIEL-AG). While a phase is open the
 * step reports, per module, the k largest |∂L/∂W| positions of the phase's first step (the first
 * micro-batch's, as the authors' hook) and later ∂L/∂W at those candidates (each step's mean over
 * micro-batches); at the phase's end each index set drops its smallest |values| and regrows at
 * the candidates with the largest |Σ gradient| (selection.ts). A regrown entry starts at 0 with
 * AdamW moments seeded from its mean gradient ḡ and mean square ḡ² over the n phase steps:
 * m = ḡ·(1 − β1ⁿ), v = ḡ²·(1 − β2ⁿ) and a step count of n, so the bias correction of the next
 * update (count n + 1) treats it as n steps of ḡ followed by that step's gradient.
 *
 * The index sets stay sorted: slots are reordered with their values and optimizer state.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { POSITION_SPLIT } from "../../sparse/linear.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import type { SftConfig } from "./config.js";
import { candidatesKey, sftKeys, sftTargets } from "./layers.js";
import { phaseOpensAfter, regrow, reselectionRate, reselectsAfter } from "./selection.js";

/** Probe names of a module's taps (statistics of the step). */
export const topName = (key: string): string => `sft:top:${key}`;
export const atName = (key: string): string => `sft:at:${key}`;

interface Phase {
  /** Steps collected in the open phase (0: none yet, candidates not chosen). */
  n: number;
  /** Per module: candidate positions, Σ gradient and Σ gradient² over the phase. */
  candidates: Int32Array[];
  sum: Float64Array[];
  sumSq: Float64Array[];
}

interface State {
  open: boolean;
  /** Positions changed at the last reselection (all modules). */
  replaced: number;
}

export function sftController(info: ModelInfo, c: SftConfig, run: ControllerRun): Controller<SftConfig> | null {
  if (c.reselectionSteps === 0) return null;
  if (c.selectionAlgorithm !== "rigl")
    throw new PeftConfigError(`SFT config: selection_algorithm "${c.selectionAlgorithm}" is not supported yet; use "rigl" (SpIEL-AG)`);
  const targets = sftTargets(info, c);
  const R = c.reselectionSteps;
  const A = c.selectionAccumulationSteps;
  const opt = run.optimizer ?? { kind: "adamw" as const };
  const beta1 = opt.kind === "adamw" ? (opt.beta1 ?? 0.9) : 0;
  const beta2 = opt.kind === "adamw" ? (opt.beta2 ?? 0.999) : 0;
  let st: State = { open: true, replaced: 0 };
  let phase: Phase = emptyPhase();

  function emptyPhase(): Phase {
    return { n: 0, candidates: [], sum: [], sumSq: [] };
  }

  function stat(s: ControllerStep, name: string): Float32Array {
    const t = s.statistics.get(name);
    if (!t) throw new PeftConfigError(`SFT: the training step did not report "${name}"`);
    return t.data as Float32Array;
  }

  /** Adds this step's gradients at the candidates; returns the new candidate tensors on the phase's first step. */
  function collect(s: ControllerStep): Map<string, HostTensor> | null {
    if (phase.n === 0) {
      const tensors = new Map<string, HostTensor>();
      targets.forEach((t, i) => {
        const top = stat(s, topName(t.key));
        const k = t.k;
        const cand = new Int32Array(k);
        const sum = new Float64Array(k);
        for (let j = 0; j < k; j++) {
          cand[j] = Math.round(top[j]) * POSITION_SPLIT + Math.round(top[k + j]);
          sum[j] = top[2 * k + j];
        }
        phase.candidates[i] = cand;
        phase.sum[i] = sum;
        phase.sumSq[i] = sum.map((g) => g * g);
        tensors.set(candidatesKey(t), hostTensor("i32", [k], cand));
      });
      phase.n = 1;
      return tensors;
    }
    targets.forEach((t, i) => {
      const at = stat(s, atName(t.key));
      for (let j = 0; j < t.k; j++) {
        phase.sum[i][j] += at[j];
        phase.sumSq[i][j] += at[j] * at[j];
      }
    });
    phase.n += 1;
    return null;
  }

  /** Drop-and-regrow of every module; the tensors and optimizer state to write. */
  function reselect(s: ControllerStep, p: number): ControllerAction<SftConfig> {
    const tensors = new Map<string, HostTensor>();
    const optimizerState = new Map<string, Record<string, HostTensor>>();
    const n = phase.n;
    let replaced = 0;
    targets.forEach((t, i) => {
      const keys = sftKeys(t);
      const idx = Int32Array.from(s.tensors.get(keys.indices)?.data as Int32Array);
      const val = Float32Array.from(s.tensors.get(keys.values)?.data as Float32Array);
      const g = regrow(idx, val, phase.candidates[i], phase.sum[i], p);
      if (!s.optimizerState) throw new PeftConfigError("SFT: the trainer does not give the optimizer state to the controller");
      const state = Object.fromEntries(
        Object.entries(s.optimizerState(keys.values)).map(([k, v]) => [k, Float64Array.from(v.data as Float32Array)]),
      );
      g.slots.forEach((slot, j) => {
        const from = g.fromCandidate[j];
        idx[slot] = g.positions[j];
        val[slot] = 0;
        const mean = phase.sum[i][from] / n;
        const meanSq = phase.sumSq[i][from] / n;
        if (state.exp_avg) state.exp_avg[slot] = mean * (1 - beta1 ** n);
        if (state.exp_avg_sq) state.exp_avg_sq[slot] = meanSq * (1 - beta2 ** n);
        if (state.update_count) state.update_count[slot] = state.exp_avg ? n : 0;
        if (state.momentum_buffer) state.momentum_buffer[slot] = 0;
      });
      replaced += g.slots.length;
      // Keep the set sorted (the saved format's rule): reorder slots with everything attached.
      const order = Array.from(idx.keys()).sort((a, b) => idx[a] - idx[b]);
      const permute = <T extends Int32Array | Float32Array>(x: T, make: (n: number) => T): T => {
        const out = make(x.length);
        order.forEach((from, to) => {
          out[to] = x[from];
        });
        return out;
      };
      tensors.set(
        keys.indices,
        hostTensor(
          "i32",
          [t.k],
          permute(idx, (m) => new Int32Array(m)),
        ),
      );
      tensors.set(
        keys.values,
        hostTensor(
          "f32",
          [t.k],
          permute(val, (m) => new Float32Array(m)),
        ),
      );
      optimizerState.set(
        keys.values,
        Object.fromEntries(
          Object.entries(state).map(([k, v]) => [
            k,
            hostTensor(
              "f32",
              [t.k],
              permute(Float32Array.from(v), (m) => new Float32Array(m)),
            ),
          ]),
        ),
      );
    });
    st.replaced = replaced;
    return { tensors, optimizerState };
  }

  return {
    gradientKeys: [],
    gatedUpdates: true,
    afterStep(s: ControllerStep): ControllerAction<SftConfig> | null {
      let action: ControllerAction<SftConfig> | null = null;
      if (st.open) {
        const cands = collect(s);
        if (cands) action = { tensors: cands };
        const total = s.totalSteps;
        if (reselectsAfter(s.step, R, A) && (total === null || s.step <= total)) {
          const p =
            total === null
              ? c.initialReselectionRate
              : reselectionRate(s.step, A, total, c.initialReselectionRate, c.reselectionRatePolicy);
          const a = reselect(s, p);
          // The candidates' tensor keeps its last value; the reselection writes indices and values.
          action = { tensors: new Map([...(action?.tensors ?? []), ...(a.tensors ?? [])]), optimizerState: a.optimizerState };
          st.open = false;
          phase = emptyPhase();
        }
      }
      if (phaseOpensAfter(s.step, R)) {
        st.open = true;
        phase = emptyPhase();
      }
      return action;
    },
    metrics: () => ({ sft_replaced: st.replaced }),
    state(): ControllerState {
      const tensors = new Map<string, HostTensor>();
      if (phase.n > 0)
        targets.forEach((t, i) => {
          tensors.set(`candidates.${t.key}`, hostTensor("i32", [t.k], phase.candidates[i]));
          tensors.set(`sum.${t.key}`, hostTensor("f64", [t.k], phase.sum[i]));
          tensors.set(`sum_sq.${t.key}`, hostTensor("f64", [t.k], phase.sumSq[i]));
        });
      return { tensors, json: { ...st, n: phase.n } };
    },
    restore(saved: ControllerState) {
      const json = saved.json as State & { n: number };
      st = { open: json.open, replaced: json.replaced };
      phase = emptyPhase();
      phase.n = json.n;
      if (json.n > 0)
        targets.forEach((t, i) => {
          const get = (name: string) => {
            const v = saved.tensors.get(`${name}.${t.key}`);
            if (!v || v.data.length !== t.k)
              throw new PeftConfigError(`SFT: the checkpoint's selector state has no valid "${name}.${t.key}"`);
            return v.data;
          };
          phase.candidates[i] = Int32Array.from(get("candidates") as Int32Array);
          phase.sum[i] = Float64Array.from(get("sum") as Float64Array);
          phase.sumSq[i] = Float64Array.from(get("sum_sq") as Float64Array);
        });
      return null;
    },
  };
}
