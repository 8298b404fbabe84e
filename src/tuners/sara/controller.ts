/**
 * SaRA's progressive re-selection (optim/adamw.py, AdamW.step at inner_iter == progressive_iter
 * + 1): the mask is recomputed on the current weights, |W + S| < θ, and training continues on it
 * with a fresh optimizer. Entries outside the first set never change, so they stay ≥ θ and the new
 * set is a subset of the old one: the index set keeps its slots, the ones that left are frozen
 * (update gate 0, their value kept as trained) and the rest restart with zero moments and step
 * count. The authors' step progressive_iter + 1 does no update; here the re-selection happens
 * after step progressive_iter and step progressive_iter + 1 updates.
 *
 * With lambda_rank > 0 it also writes, before every step, the direction of the nuclear-norm term
 * for that step's randomly chosen layer (rank.ts).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerState, ControllerStep } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import type { SaraConfig } from "./config.js";
import { rankKey, saraKeys, saraTargets } from "./layers.js";
import { nuclearDirection, rankLayerAt } from "./rank.js";

interface State {
  /** Entries still trained after the re-selection (all layers); null before it. */
  kept: number | null;
}

export function saraController(info: ModelInfo, c: SaraConfig): Controller<SaraConfig> | null {
  const P = c.progressiveIter;
  if (P === null && c.lambdaRank === 0) return null;
  const targets = saraTargets(info, c);
  let st: State = { kept: null };

  /** The rank directions step `step` reads: U Vᵀ of one random layer's current ΔW, zero elsewhere. */
  function directions(step: number, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
    const chosen = rankLayerAt(step, targets.length);
    return new Map(
      targets.map((t, i) => {
        const k = saraKeys(t);
        const g =
          i === chosen
            ? nuclearDirection(t.shape, tensors.get(k.indices)?.data as Int32Array, tensors.get(k.values)?.data as Float32Array).grad
            : new Float32Array(t.k);
        return [rankKey(t), hostTensor("f32", [t.k], g)];
      }),
    );
  }

  function reselect(s: ControllerStep): ControllerAction<SaraConfig> {
    if (!s.optimizerState) throw new PeftConfigError("SARA: the trainer does not give the optimizer state to the controller");
    const trainable = new Map<string, HostTensor>();
    const optimizerState = new Map<string, Record<string, HostTensor>>();
    let kept = 0;
    for (const t of targets) {
      const k = saraKeys(t);
      const idx = s.tensors.get(k.indices)?.data as Int32Array;
      const val = s.tensors.get(k.values)?.data as Float32Array;
      const w = info.weight(t.weight).data as ArrayLike<number>;
      const gate = new Float32Array(t.k);
      for (let j = 0; j < t.k; j++) {
        // W + S as the step computes it: f32.
        const current = Math.fround(w[idx[j]] + val[j]);
        gate[j] = Math.abs(current) < c.threshold ? 1 : 0;
        kept += gate[j];
      }
      trainable.set(k.values, hostTensor("f32", [t.k], gate));
      const fresh: Record<string, HostTensor> = {};
      for (const [slot, v] of Object.entries(s.optimizerState(k.values))) {
        // The gates come from `trainable` (written before this state).
        if (slot === "update_gate") continue;
        const data = Float32Array.from(v.data as Float32Array);
        // The re-created optimizer: zero state on what still trains; frozen entries keep theirs (unused).
        for (let j = 0; j < t.k; j++) if (gate[j]) data[j] = 0;
        fresh[slot] = hostTensor("f32", [t.k], data);
      }
      optimizerState.set(k.values, fresh);
    }
    st = { kept };
    return { trainable, optimizerState };
  }

  return {
    gradientKeys: [],
    gatedUpdates: true,
    begin: (tensors) => (c.lambdaRank > 0 ? { tensors: directions(1, tensors) } : null),
    afterStep(s) {
      const a = s.step === P ? reselect(s) : null;
      if (c.lambdaRank === 0) return a;
      return { ...a, tensors: directions(s.step + 1, s.tensors) };
    },
    metrics: (): Record<string, number> => (st.kept === null ? {} : { sara_trained: st.kept }),
    state: (): ControllerState => ({ tensors: new Map(), json: st }),
    restore(saved: ControllerState) {
      const json = saved.json as State | null;
      if (!json || !("kept" in json))
        throw new PeftConfigError(`SARA: the checkpoint's controller state ${JSON.stringify(saved.json)} is not SaRA's`);
      st = { kept: json.kept };
      return null;
    },
  };
}
