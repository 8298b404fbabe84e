/**
 * IST's controller (the authors' ISTCallback.on_step_begin, run after the previous update):
 * - every step, the adapters of round(update_fraction·L) layers drawn with weights σ(−s) train and
 *   the others are frozen by update gates (bit-identical values and optimizer state, as
 *   requires_grad=False leaves them in torch);
 * - after every importance_interval steps, an importance round: `trials` subsets of
 *   round(suppress_fraction·L) layers drawn with weights σ(s) (each new one redrawn until it differs
 *   from the earlier ones), the task loss on one importance batch with those layers' adapter
 *   outputs scaled by suppress_factor (lora_B scaled: s·(f·B)·A = (f·s)·B·A, LoRA's and DoRA's
 *   scaling), and the score update of sampling.ts.
 * High s means suppressing the layer costs little: a less important layer, trained less often.
 * Draws come from counter-based generators (seed, round or step), so the checkpoint state is the
 * scores and the number of rounds done.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerPasses, ControllerState, ControllerStep } from "../controller.js";
import { layerIndex } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import { type IstConfig, istSettings } from "./config.js";
import { binomial, drawRng, layerCount, scoreUpdate, sigmoid, weightedDraw } from "./sampling.js";

/** Generator streams: the per-step selection and the importance rounds' trials. */
const SELECT = 1;
const TRIALS = 2;
/** Redraws of a trial subset that repeats an earlier one before taking it anyway. */
const MAX_REDRAWS = 10_000;

/** The factor of a LoRA module's output: its B matrix (linear) or table (embedding). */
export function isOutputFactor(key: string): boolean {
  return key.endsWith(".lora_B.weight") || key.endsWith(".lora_embedding_B");
}

export class IstController implements Controller<IstConfig> {
  readonly gradientKeys: string[] = [];
  readonly gatedUpdates = true;
  readonly passBatchSize: number;
  private readonly numLayers: number;
  private scores: number[];
  /** Importance rounds done (= importance batches used). */
  private rounds = 0;
  private lastTrialLoss: number | null = null;
  /** Trained adapter keys of each transformer layer (keys outside the layers always train). */
  private groups: string[][] | null = null;

  constructor(
    info: ModelInfo,
    private readonly c: IstConfig,
  ) {
    this.numLayers = info.numLayers;
    if (!(this.numLayers >= 1)) throw new PeftConfigError("IST: the model has no transformer layers to sample");
    this.passBatchSize = c.importanceBatchSize;
    this.scores = new Array(this.numLayers).fill(0);
  }

  /** The layer scores s (for tests and inspection). */
  get layerScores(): readonly number[] {
    return this.scores;
  }

  private layerGroups(tensors: ReadonlyMap<string, HostTensor>): string[][] {
    if (this.groups) return this.groups;
    const groups: string[][] = Array.from({ length: this.numLayers }, () => []);
    for (const k of tensors.keys()) {
      const l = layerIndex(k, this.c.layersPattern);
      if (l !== null && l < this.numLayers) groups[l].push(k);
    }
    if (groups.every((g) => g.length === 0)) throw new PeftConfigError("IST: no adapter tensor sits in a transformer layer");
    this.groups = groups;
    return groups;
  }

  /** The layers whose adapters update in 1-based step `step`. */
  selection(step: number): number[] {
    const rng = drawRng(this.c.seed, SELECT, step);
    return weightedDraw(
      this.scores.map((s) => sigmoid(-s)),
      layerCount(this.c.updateFraction, this.numLayers),
      () => rng.next(),
    );
  }

  private gates(tensors: ReadonlyMap<string, HostTensor>, step: number): ControllerAction<IstConfig> {
    const on = new Set(this.selection(step));
    const trainable = new Map<string, boolean>();
    this.layerGroups(tensors).forEach((keys, l) => {
      for (const k of keys) trainable.set(k, on.has(l));
    });
    return { trainable };
  }

  begin(tensors: ReadonlyMap<string, HostTensor>): ControllerAction<IstConfig> {
    return this.gates(tensors, 1);
  }

  async runPasses(s: ControllerStep, passes: ControllerPasses): Promise<void> {
    if (s.step % this.c.importanceInterval === 0) await this.importanceRound(s, passes);
  }

  afterStep(s: ControllerStep): ControllerAction<IstConfig> {
    return this.gates(s.tensors, s.step + 1);
  }

  /** The trial subsets of round `round` drawn with weights σ(s), distinct while that is possible. */
  trialSubsets(round: number): number[][] {
    const rng = drawRng(this.c.seed, TRIALS, round);
    const n = layerCount(this.c.suppressFraction, this.numLayers);
    const weights = this.scores.map(sigmoid);
    const distinct = binomial(this.numLayers, n);
    const subsets: number[][] = [];
    const seen = (x: number[]) => subsets.some((y) => y.length === x.length && y.every((v, i) => v === x[i]));
    for (let k = 0; k < this.c.trials; k++) {
      let pick = weightedDraw(weights, n, () => rng.next());
      const used = new Set(subsets.map((x) => x.join(","))).size;
      for (let r = 0; r < MAX_REDRAWS && used < distinct && seen(pick); r++) pick = weightedDraw(weights, n, () => rng.next());
      subsets.push(pick);
    }
    return subsets;
  }

  private async importanceRound(s: ControllerStep, passes: ControllerPasses): Promise<void> {
    const groups = this.layerGroups(s.tensors);
    const subsets = this.trialSubsets(this.rounds);
    const losses: number[] = [];
    for (const sub of subsets) {
      const scaled = new Map<string, HostTensor>();
      for (const l of sub)
        for (const k of groups[l]) {
          if (!isOutputFactor(k)) continue;
          const t = s.tensors.get(k) as HostTensor;
          scaled.set(
            k,
            hostTensor(
              "f32",
              t.shape,
              Float32Array.from(t.data as Float32Array, (v) => v * this.c.suppressFactor),
            ),
          );
        }
      losses.push(await passes.loss(this.rounds, scaled));
    }
    this.scores = scoreUpdate(this.scores, subsets, losses, this.c.scoreLr);
    this.lastTrialLoss = losses.reduce((x, y) => x + y, 0) / losses.length;
    this.rounds++;
  }

  metrics(): Record<string, number> {
    return this.lastTrialLoss === null ? {} : { ist_trial_loss: this.lastTrialLoss };
  }

  state(): ControllerState {
    return {
      tensors: new Map(),
      json: { scores: this.scores, rounds: this.rounds, last_trial_loss: this.lastTrialLoss, settings: istSettings(this.c) },
    };
  }

  restore(st: ControllerState): ControllerAction<IstConfig> | null {
    const j = st.json as { scores?: unknown; rounds?: unknown; last_trial_loss?: unknown; settings?: Record<string, unknown> } | null;
    if (!j || !Array.isArray(j.scores) || j.scores.length !== this.numLayers || typeof j.rounds !== "number")
      throw new PeftConfigError(`IST: the checkpoint's controller state is not an IST state for ${this.numLayers} layers`);
    for (const [field, v] of Object.entries(istSettings(this.c)))
      if (j.settings?.[field] !== v)
        throw new PeftConfigError(
          `IST: the checkpoint was trained with ${field} ${JSON.stringify(j.settings?.[field])}, this run asks ${v}`,
        );
    this.scores = (j.scores as unknown[]).map(Number);
    this.rounds = j.rounds;
    this.lastTrialLoss = typeof j.last_trial_loss === "number" ? j.last_trial_loss : null;
    // The update gates of the next step come back with the optimizer state.
    return null;
  }
}
