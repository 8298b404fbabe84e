/**
 * ID³'s unmasking as a Controller. After step t the step's tap has reported, per layer, the m
 * largest D³ scores among the layer's still-masked entries (m ≥ any step's count, so the global
 * top is among them); the controller takes the global top unmaskCount(t) (schedule.ts), puts them
 * into free slots and opens those slots' update gates.
 *
 * Order against the toolkit: there, step t unmasks by its own gradient and then updates the new
 * entries with that gradient. Between steps, the entries chosen by step t's gradient are first
 * updated by step t + 1 (one step later; so the entries of step T never train, and step 1 trains
 * nothing). New entries start with zero AdamW moments and their own step count (gated updates).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { POSITION_SPLIT } from "../../sparse/linear.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import type { Id3Config } from "./config.js";
import { id3Budget, id3Keys, id3Targets, usedKey } from "./layers.js";
import { assignSlots, type Candidate, topCandidates, unmaskCount } from "./schedule.js";

export const scoreName = (key: string): string => `id3:score:${key}`;

/**
 * Candidates each layer's tap reports: the most any step unmasks, ⌈B/T⌉; without max_steps (T
 * known only to the trainer) the budget itself, which is exact for any T but costs a wider top-k.
 */
export function tapWidth(info: ModelInfo, c: Id3Config): number {
  const b = id3Budget(info, c);
  return c.maxSteps === null ? b : Math.ceil(b / c.maxSteps);
}

interface State {
  /** Entries unmasked so far (all layers). */
  unmasked: number;
}

export function id3Controller(info: ModelInfo, c: Id3Config, run: ControllerRun): Controller<Id3Config> {
  const targets = id3Targets(info, c);
  const budget = id3Budget(info, c);
  const total = c.maxSteps ?? run.totalSteps;
  if (total === null)
    throw new PeftConfigError("ID3: the number of steps the budget is spread over is unknown: set max_steps (--id3-max-steps)");
  const width = tapWidth(info, c);
  let st: State = { unmasked: 0 };

  const gates = (tensors: ReadonlyMap<string, HostTensor>, only?: Set<number>) =>
    new Map(targets.flatMap((t, i) => (only && !only.has(i) ? [] : [[id3Keys(t).values, tensors.get(usedKey(t)) as HostTensor] as const])));

  const countUsed = (tensors: ReadonlyMap<string, HostTensor>) =>
    targets.reduce(
      (n, t) => n + ((tensors.get(usedKey(t)) as HostTensor).data as Float32Array).reduce((a, u) => a + (u !== 0 ? 1 : 0), 0),
      0,
    );

  return {
    gradientKeys: [],
    gatedUpdates: true,
    begin(tensors) {
      st.unmasked = countUsed(tensors);
      return { trainable: gates(tensors) };
    },
    afterStep(s: ControllerStep): ControllerAction<Id3Config> | null {
      const u = Math.min(unmaskCount(s.step, budget, total), budget - st.unmasked);
      if (u <= 0) return null;
      const cands: Candidate[] = [];
      targets.forEach((t, layer) => {
        const rows = s.statistics.get(scoreName(t.key))?.data as Float32Array | undefined;
        if (!rows) throw new PeftConfigError(`ID3: the training step did not report "${scoreName(t.key)}"`);
        const m = rows.length / 3;
        if (u > m && m < t.shape[0] * t.shape[1])
          throw new PeftConfigError(
            `ID3: step ${s.step} unmasks ${u} entries but the tap reports ${m} (max_steps ${c.maxSteps}, run ${total})`,
          );
        for (let j = 0; j < m; j++) {
          const score = rows[2 * m + j];
          // Chosen entries come back (only when fewer than m are masked) far below zero.
          if (!(score >= 0)) continue;
          cands.push({ layer, position: Math.round(rows[j]) * POSITION_SPLIT + Math.round(rows[m + j]), score });
        }
      });
      const chosen = topCandidates(cands, u);
      const byLayer = new Map<number, number[]>();
      for (const ch of chosen) byLayer.set(ch.layer, [...(byLayer.get(ch.layer) ?? []), ch.position]);
      const tensors = new Map<string, HostTensor>();
      for (const [layer, positions] of byLayer) {
        const t = targets[layer];
        const idx = Int32Array.from(s.tensors.get(id3Keys(t).indices)?.data as Int32Array);
        const used = Float32Array.from(s.tensors.get(usedKey(t))?.data as Float32Array);
        assignSlots(idx, used, positions);
        tensors.set(id3Keys(t).indices, hostTensor("i32", [t.k], idx));
        tensors.set(usedKey(t), hostTensor("f32", [t.k], used));
      }
      st.unmasked += chosen.length;
      return { tensors, trainable: gates(tensors, new Set(byLayer.keys())) };
    },
    metrics: () => ({ id3_unmasked: st.unmasked }),
    state(): ControllerState {
      return { tensors: new Map(), json: { ...st, width } };
    },
    restore(saved: ControllerState) {
      const json = saved.json as (State & { width: number }) | null;
      if (!json || typeof json.unmasked !== "number")
        throw new PeftConfigError(`ID3: the checkpoint's controller state ${JSON.stringify(saved.json)} is not ID3's`);
      st = { unmasked: json.unmasked };
      return null;
    },
  };
}
