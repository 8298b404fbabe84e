/**
 * `peftkit graft`: skill localisation by grafting (Panigrahi et al. 2023;
 * abhishekpanigrahi1996/Skill-Localization-by-grafting src/graft_trainer.py, `train_graft`).
 * Post hoc: given θ_pre and a fine-tuned θ_ft, learn the smallest region γ of the graftable
 * tensors such that θ_pre + γ ⊙ (θ_ft − θ_pre) keeps the fine-tuned score (graft-mask.ts holds
 * the arithmetic). Per epoch (= one mask update):
 *
 *   1. ∂L/∂θ at θ_pre + γ(S) ⊙ τ, averaged over up to `accumulation` batches of the training data,
 *      from one compiled gradient graph of the whole model (the calibration graph, src/calibration);
 *   2. S ← S − lr · ∂L/∂S (plain SGD, the exact chain rule of γ(S));
 *   3. the rounded graft θ_pre + round(γ(S)) ⊙ τ scored on the training and the dev data; the
 *      scores S with the best sum so far are kept (the authors' model selection).
 *
 * After every epoch the state (current and best S, history) is written atomically to
 * OUT/graft_state.safetensors, so a killed run resumes exactly with --resume. The result is
 * OUT/graft.safetensors, a peftkit sparse delta (docs/formats/sparse-delta.md) of the best
 * rounded graft on θ_pre, with θ_pre's fingerprint: `peftkit delta apply` puts it on the base.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { traceCalibrationGraph } from "../calibration/graph.js";
import { type CompileOptions, compileGraph, type Executor } from "../engine/exec/backend.js";
import { type HostTensor, hostTensor, readNumber } from "../engine/ir/host.js";
import { writeFileAtomic } from "../io/atomic-write.js";
import { faultPoint } from "../io/fault.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import type { PreTrainedTokenizer } from "../io/tokenizer.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import type { SparseDelta } from "../sparse/delta.js";
import { saveSparseDeltas } from "../sparse/file.js";
import { modelInfo } from "../tuners/model-info.js";
import { targetedLinears } from "../tuners/targets.js";
import { prepareBatch, type TrainBatch } from "../tuners/train.js";
import { weightsFingerprint } from "../util/fingerprint.js";
import { Rng } from "../util/rng.js";
import { BatchStream, type Example } from "./data/index.js";
import { evalBatches, evaluate, exactMatch } from "./evaluate.js";
import { basePatch, type GraftTensor, graftCount, graftDelta, interpolate, updateScores } from "./graft-mask.js";
import { completionItems } from "./run.js";
import { TrainingArgsError } from "./schedule.js";

export const GRAFT_FILE = "graft.safetensors";
export const GRAFT_STATE_FILE = "graft_state.safetensors";
export const GRAFT_CONFIG_FILE = "graft_config.json";

/** The settings a run's state is tied to (a resume must use the same). */
export interface GraftSettings {
  sparsity: number;
  sigmoid_bias: number;
  mask_lr: number;
  epochs: number;
  accumulation: number;
  batch_size: number;
  seed: number;
  /** Graftable weights, by name. */
  targets: string[];
  base_model: string;
  finetuned_model: string;
  /** Example counts and a hash of their token ids and labels (train/dev). */
  data: string;
}

/** FNV-1a over the examples' ids and labels: a resume on other data is refused. */
function examplesHash(sets: readonly (readonly Example[])[]): string {
  let h = 0x811c9dc5;
  const add = (v: number) => {
    h = Math.imul(h ^ (v & 0xffff), 0x01000193);
    h = Math.imul(h ^ (v >>> 16), 0x01000193);
  };
  for (const set of sets)
    for (const e of set) {
      add(e.inputIds.length);
      for (const v of e.inputIds) add(v);
      for (const v of e.labels ?? []) add(v);
    }
  return `${sets.map((x) => x.length).join("/")}:${(h >>> 0).toString(16).padStart(8, "0")}`;
}

export interface GraftEpoch {
  epoch: number;
  /** Mean task loss over the epoch's gradient batches. */
  loss: number;
  train_score: number;
  dev_score: number;
  /** Entries with round(γ) = 1 after the update. */
  entries: number;
}

export interface GraftResult {
  /** Entries of the final graft, and of all graftable tensors. */
  entries: number;
  graftable: number;
  /** The epoch whose scores were kept (1-based). */
  best_epoch: number;
  /** train + dev score of the kept mask; null before the first epoch. */
  best_score: number | null;
  /** Scores of θ_ft and of the base patch alone (round(γ(S₀)) = γ0), on train and dev. */
  finetuned: { train: number; dev: number };
  base_patch: { train: number; dev: number };
  history: GraftEpoch[];
  /** What the scores are: "exact_match" (prompt/completion data) or "neg_loss". */
  metric: "exact_match" | "neg_loss";
}

export interface GraftOptions {
  /** The base model; its weights are θ_pre. The run swaps graftable weights and restores them. */
  model: PreTrainedModel;
  /** θ_ft, by the base model's weight names (every graftable weight must be there). */
  finetuned: ReadonlyMap<string, HostTensor>;
  /** "all-linear" (every linear layer but the output head) or module names as `--target`. */
  target: string[] | "all-linear";
  train: readonly Example[];
  dev: readonly Example[];
  tokenizer: Pick<PreTrainedTokenizer, "encode" | "decode" | "eosTokenId">;
  padId: number;
  batchSize: number;
  sparsity: number;
  sigmoidBias: number;
  maskLr: number;
  epochs: number;
  accumulation: number;
  seed: number;
  outputDir: string;
  resume: boolean;
  /** Exact match on at most this many examples of each set (0: score by −loss). */
  exactMatchLimit: number;
  compile?: CompileOptions;
  log?: (line: string) => void;
}

/** The graftable weights of a model: the linear layers `target` selects (never embeddings or the head). */
export function graftableWeights(model: PreTrainedModel, target: string[] | "all-linear"): string[] {
  const spec = { targetModules: target, excludeModules: null, layersToTransform: null, layersPattern: null };
  return targetedLinears(modelInfo(model), spec, "--target", null).map((l) => `${l.path}.weight`);
}

/**
 * ∂L/∂W of the graftable weights (L = the batch's mean task loss) at given weights: the
 * calibration graph of the whole model, compiled once and fed different weights per call.
 */
export class GraftGradients {
  private constructor(
    private readonly model: PreTrainedModel,
    private readonly exec: Executor,
    private readonly names: readonly string[],
  ) {}

  static async create(model: PreTrainedModel, names: readonly string[], compile?: CompileOptions): Promise<GraftGradients> {
    const layers = names.map((n) => n.replace(/\.weight$/, ""));
    const { graph } = traceCalibrationGraph(model, { layers, gradientSum: true });
    const exec = await compileGraph(graph, { ...model.compileOptions, ...compile });
    return new GraftGradients(model, exec, names);
  }

  /** The mean over `batches` of ∂L/∂W (f64), with `weights` overriding the model's, and the mean loss. */
  async mean(weights: ReadonlyMap<string, HostTensor>, batches: readonly TrainBatch[]): Promise<{ grads: Float64Array[]; loss: number }> {
    const grads = this.names.map((n) => new Float64Array((this.model.weights.get(n) as HostTensor).data.length));
    let loss = 0;
    const g = this.exec.graph;
    for (const b of batches) {
      const t = prepareBatch(this.model.head, b, this.model.usesTokenTypeIds);
      const feeds: Record<string, HostTensor> = {};
      for (const inp of g.inputs) {
        if (inp.name.startsWith("w.")) {
          const n = inp.name.slice(2);
          feeds[inp.name] = weights.get(n) ?? (this.model.weights.get(n) as HostTensor);
        } else if (inp.name.startsWith("b.")) feeds[inp.name] = t[inp.name.slice(2)];
      }
      const outs = await this.exec.run(feeds);
      g.outputs.forEach((o, i) => {
        if (o.name === "loss") loss += readNumber(outs[i], 0);
        else if (o.name.startsWith("grad.")) {
          const acc = grads[this.names.indexOf(o.name.slice(5))];
          const d = outs[i].data as ArrayLike<number>;
          for (let j = 0; j < acc.length; j++) acc[j] += d[j];
        }
      });
    }
    for (const a of grads) for (let j = 0; j < a.length; j++) a[j] /= batches.length;
    return { grads, loss: loss / batches.length };
  }

  release(): Promise<void> {
    return this.exec.release();
  }
}

/** Scores a model on examples: exact match of the completions when there are any, else −loss. */
async function score(
  model: PreTrainedModel,
  examples: readonly Example[],
  o: Pick<GraftOptions, "tokenizer" | "padId" | "batchSize" | "exactMatchLimit">,
): Promise<number> {
  const items = o.exactMatchLimit > 0 ? completionItems(examples, o.tokenizer, o.exactMatchLimit) : [];
  if (items.length) return exactMatch(model, items, o.tokenizer);
  const batches = evalBatches(examples, o.batchSize, o.padId);
  const m = await evaluate(model, batches, { causal: model.head === "causal_lm", classification: false });
  return -m.eval_loss;
}

interface State {
  epoch: number;
  scores: Float32Array[];
  best: Float32Array[] | null;
  result: Omit<GraftResult, "entries" | "graftable">;
}

function saveState(dir: string, names: readonly string[], s: State, settings: GraftSettings): void {
  const tensors: Record<string, HostTensor> = {};
  names.forEach((n, i) => {
    tensors[`scores.${n}`] = hostTensor("f32", [s.scores[i].length], s.scores[i]);
    if (s.best) tensors[`best.${n}`] = hostTensor("f32", [s.best[i].length], s.best[i]);
  });
  writeSafetensors(join(dir, GRAFT_STATE_FILE), tensors, {
    format: "peftkit.graft_state",
    epoch: String(s.epoch),
    settings: JSON.stringify(settings),
    result: JSON.stringify(s.result),
  });
}

function loadState(dir: string, names: readonly string[], settings: GraftSettings): State {
  const file = join(dir, GRAFT_STATE_FILE);
  const { tensors, metadata } = readSafetensors(file);
  const saved = metadata.settings ?? "";
  if (saved !== JSON.stringify(settings))
    throw new TrainingArgsError(`${file}: made with other settings (${saved}); resume with the same flags, models and data`);
  const read = (prefix: string) =>
    names.map((n) => {
      const t = tensors[`${prefix}.${n}`];
      if (!t) throw new TrainingArgsError(`${file}: no tensor "${prefix}.${n}"`);
      return t.data as Float32Array;
    });
  return {
    epoch: Number(metadata.epoch),
    scores: read("scores"),
    best: tensors[`best.${names[0]}`] ? read("best") : null,
    result: JSON.parse(metadata.result ?? "{}") as State["result"],
  };
}

/** Runs (or resumes) grafting and writes the graft; returns what it found. */
export async function runGraft(o: GraftOptions): Promise<GraftResult> {
  const log = o.log ?? (() => {});
  if (!(Number.isInteger(o.epochs) && o.epochs >= 1)) throw new TrainingArgsError(`--epochs must be a positive integer, got ${o.epochs}`);
  if (!(Number.isInteger(o.accumulation) && o.accumulation >= 1))
    throw new TrainingArgsError(`--accumulation must be a positive integer, got ${o.accumulation}`);
  const stateFile = join(o.outputDir, GRAFT_STATE_FILE);
  if (existsSync(stateFile) && !o.resume)
    throw new TrainingArgsError(`${o.outputDir} holds an earlier graft run; pass --resume to continue it or choose another --output-dir`);
  const model = o.model;
  const names = graftableWeights(model, o.target);
  // θ_pre is copied: the model's map entries are swapped (and may be repacked) during the run.
  const preWeights = new Map(names.map((n) => [n, model.weights.get(n) as HostTensor]));
  const tensors: GraftTensor[] = names.map((n) => {
    const pre = Float32Array.from(preWeights.get(n)?.data as Float32Array);
    const ft = o.finetuned.get(n);
    if (!ft) throw new TrainingArgsError(`the fine-tuned model has no weight "${n}"`);
    const shape = preWeights.get(n)?.shape as readonly number[];
    if (ft.shape.join(",") !== shape.join(","))
      throw new TrainingArgsError(`the fine-tuned "${n}" is [${ft.shape}], the base model's is [${shape}]`);
    const tau = new Float32Array(pre.length);
    for (let i = 0; i < tau.length; i++) tau[i] = Number(ft.data[i]) - pre[i];
    return { name: n, shape, pre, tau };
  });
  const graftable = tensors.reduce((a, t) => a + t.pre.length, 0);
  const k = graftCount(o.sparsity, graftable);
  const gamma0 = basePatch(tensors, k);
  const basePrint = weightsFingerprint(model.weights);
  const settings: GraftSettings = {
    sparsity: o.sparsity,
    sigmoid_bias: o.sigmoidBias,
    mask_lr: o.maskLr,
    epochs: o.epochs,
    accumulation: o.accumulation,
    batch_size: o.batchSize,
    seed: o.seed,
    targets: names,
    base_model: basePrint,
    finetuned_model: weightsFingerprint(o.finetuned),
    data: examplesHash([o.train, o.dev]),
  };
  mkdirSync(o.outputDir, { recursive: true });

  const setWeights = (w: (i: number) => Float32Array) => {
    tensors.forEach((t, i) => {
      model.weights.set(t.name, hostTensor("f32", t.shape, w(i)));
    });
  };
  const allPre = new Map(model.weights);
  const restore = () => {
    for (const [n, t] of allPre) model.weights.set(n, t);
  };
  const scoreBoth = async () => ({ train: await score(model, o.train, o), dev: await score(model, o.dev, o) });

  let state: State;
  if (o.resume && existsSync(stateFile)) {
    state = loadState(o.outputDir, names, settings);
    log(`graft: resuming after epoch ${state.epoch} of ${o.epochs}`);
  } else {
    // S ~ U(0, 1) elementwise (torch.rand_like), tensors in order from one seeded stream.
    const rng = new Rng(o.seed);
    const scores = tensors.map((t) => Float32Array.from({ length: t.pre.length }, () => rng.next()));
    log(
      `graft: ${graftable.toLocaleString("en-US")} graftable entries in ${names.length} weights; base patch of the ${k.toLocaleString("en-US")} largest |θ_ft − θ_pre| (sparsity ${o.sparsity})`,
    );
    // θ_ft itself (every tensor it has), the score the graft is measured against.
    for (const [n, t] of o.finetuned) if (model.weights.has(n)) model.weights.set(n, t);
    const finetuned = await scoreBoth();
    restore();
    setWeights((i) => interpolate(tensors[i], gamma0[i], scores[i], o.sigmoidBias, true));
    const patch = await scoreBoth();
    restore();
    const metric = o.exactMatchLimit > 0 && completionItems(o.dev, o.tokenizer, 1).length ? "exact_match" : "neg_loss";
    log(
      `graft: ${metric} train/dev — fine-tuned ${finetuned.train.toFixed(4)}/${finetuned.dev.toFixed(4)}, base patch ${patch.train.toFixed(4)}/${patch.dev.toFixed(4)}`,
    );
    state = {
      epoch: 0,
      scores,
      best: null,
      result: { best_epoch: 0, best_score: null, finetuned, base_patch: patch, history: [], metric },
    };
    saveState(o.outputDir, names, state, settings);
    faultPoint("graft:start");
  }

  const stream = new BatchStream(o.train, { batchSize: o.batchSize, seed: o.seed, padId: o.padId });
  const grads = await GraftGradients.create(model, names, o.compile);
  try {
    for (let epoch = state.epoch + 1; epoch <= o.epochs; epoch++) {
      const batches = stream.epochBatches(epoch - 1).slice(0, o.accumulation);
      const at = new Map(
        tensors.map((t, i) => [t.name, hostTensor("f32", t.shape, interpolate(t, gamma0[i], state.scores[i], o.sigmoidBias, false))]),
      );
      const { grads: g, loss } = await grads.mean(at, batches);
      tensors.forEach((t, i) => {
        updateScores(state.scores[i], gamma0[i], g[i], t.tau, o.maskLr, o.sigmoidBias);
      });
      setWeights((i) => interpolate(tensors[i], gamma0[i], state.scores[i], o.sigmoidBias, true));
      const s = await scoreBoth();
      restore();
      const entries = tensors.reduce((a, t, i) => a + graftDelta(t, gamma0[i], state.scores[i], o.sigmoidBias).indices.length, 0);
      state.result.history.push({ epoch, loss, train_score: s.train, dev_score: s.dev, entries });
      // Any first epoch is a candidate (null, not −∞: the state is JSON).
      const improved = state.result.best_score === null || s.train + s.dev > state.result.best_score;
      if (improved) {
        state.result.best_score = s.train + s.dev;
        state.result.best_epoch = epoch;
        state.best = state.scores.map((x) => Float32Array.from(x));
      }
      state.epoch = epoch;
      saveState(o.outputDir, names, state, settings);
      log(
        `graft epoch ${epoch}/${o.epochs}: loss ${loss.toFixed(4)}, train ${s.train.toFixed(4)}, dev ${s.dev.toFixed(4)}, ${entries} entries${improved ? " (best)" : ""}`,
      );
      faultPoint("graft:epoch");
    }
  } finally {
    await grads.release();
    restore();
  }

  const best = state.best ?? state.scores;
  const deltas = new Map<string, SparseDelta>();
  let entries = 0;
  tensors.forEach((t, i) => {
    const d = graftDelta(t, gamma0[i], best[i], o.sigmoidBias);
    entries += d.indices.length;
    if (d.indices.length) deltas.set(t.name, d);
  });
  saveSparseDeltas(join(o.outputDir, GRAFT_FILE), { deltas, baseModel: basePrint });
  const result: GraftResult = { ...state.result, entries, graftable };
  writeFileAtomic(join(o.outputDir, GRAFT_CONFIG_FILE), `${JSON.stringify({ ...settings, result }, null, 2)}\n`);
  log(
    `graft: kept epoch ${result.best_epoch}'s mask, ${entries.toLocaleString("en-US")} entries (${((100 * entries) / graftable).toFixed(4)}% of the graftable ones); wrote ${join(o.outputDir, GRAFT_FILE)}`,
  );
  return result;
}
