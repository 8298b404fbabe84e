/**
 * PeftModel: a base model plus named adapters, in the style of HF PEFT. Adapter tensors live in
 * JS memory and are fed to the compiled graphs as inputs, so swapping or training adapters needs
 * no recompilation; the graph is rebuilt only when which adapters apply changes (and cached per
 * such state).
 */

import type { DType } from "../engine/ir/dtype.js";
import type { HostTensor } from "../engine/ir/host.js";
import { hostTensor } from "../engine/ir/host.js";
import type { Dim } from "../engine/ir/shape.js";
import type { Tensor } from "../engine/trace/tensor.js";
import type { GenerateOptions } from "../models/generate.js";
import type { ForwardInputs, ModelOutput, PreTrainedModel } from "../models/pretrained.js";
import type { ForwardContext } from "../nn/context.js";
import { Rng } from "../util/rng.js";
import { type CommonConfig, normalizeKeys, PeftConfigError } from "./config.js";
import { loadAdapter, savePretrained } from "./format.js";
import { addWeightedAdapter, type WeightedAdapterOptions } from "./lora/weighted.js";
import { modelInfo } from "./model-info.js";
import { createModulesToSave, ModulesToSaveContext, modulesToSaveKeys } from "./modules-to-save.js";
import { tunerFor } from "./registry.js";
import { TASK_IDS_INPUT, TaskIdError, taskIdTensor } from "./task-ids.js";
import type { CalibrationRequest, CalibrationStats, ModelInfo, Tuner } from "./tuner.js";

export type AnyConfig = CommonConfig & { modulesToSave?: string[] | null };

export interface Adapter {
  readonly name: string;
  readonly tuner: Tuner;
  /** Replaced only by setAdapterConfig (a training controller's change, e.g. AdaLoRA's rank_pattern). */
  config: AnyConfig;
  /** Adapter tensors by key (PEFT's key without "base_model.model." and the adapter name). */
  tensors: Map<string, HostTensor>;
}

export const BASE_ROW = "__base__";
/** Input-name prefix of base weights as they were before any merge. */
const ORIGINAL = "o.";

/** Parses a user config object (camelCase or snake_case keys) for its peft_type. */
export function parsePeftConfig(raw: Readonly<Record<string, unknown>>, where = "adapter config"): { tuner: Tuner; config: AnyConfig } {
  const norm = normalizeKeys(raw, where);
  const type = norm.peft_type;
  if (typeof type !== "string") throw new PeftConfigError(`${where}: field "peft_type" is required (e.g. "LORA")`);
  const tuner = tunerFor(type);
  return { tuner, config: tuner.parseConfig(norm, where) as AnyConfig };
}

export interface AddAdapterOptions {
  /** Seed of the initialisation's random stream (default 0). */
  seed?: number;
  /**
   * Statistics from a calibration pass (src/calibration/), for methods whose initialisation needs
   * data (CorDA, LoRA-SB): see calibrationRequest().
   */
  calibration?: CalibrationStats;
}

/**
 * What a calibration pass must collect before an adapter of this config can be created on this
 * model, or null when the method needs no data.
 */
export function calibrationRequest(model: PreTrainedModel, config: Readonly<Record<string, unknown>>): CalibrationRequest | null {
  const { tuner, config: cfg } = parsePeftConfig(config);
  return tuner.calibration?.(modelInfo(model), cfg) ?? null;
}

function checkCalibration(tuner: Tuner, req: CalibrationRequest, stats: CalibrationStats | undefined): void {
  if (!stats)
    throw new PeftConfigError(
      `${tuner.peftType}: this initialisation needs calibration data (library: addAdapter(..., { calibration }) from runCalibration; CLI: --calibration-data FILE)`,
    );
  for (const path of req.layers) {
    const missing =
      req.inputCovariance && !stats.inputCovariance.has(path)
        ? "input covariance"
        : req.gradientSum && !stats.gradientSum.has(`${path}.weight`)
          ? "gradient sum"
          : req.gradientSquareSum && !stats.gradientSquareSum.has(`${path}.weight`)
            ? "squared-gradient sum"
            : null;
    if (missing) throw new PeftConfigError(`${tuner.peftType}: the calibration statistics have no ${missing} for layer "${path}"`);
  }
}

export class PeftModel {
  readonly info: ModelInfo;
  private readonly adapters = new Map<string, Adapter>();
  private active: string[] = [];
  private readonly merged: string[] = [];
  /** Base weights as they were before the first merge touching them. */
  private readonly originals = new Map<string, HostTensor>();
  private disabled = false;
  /** Per-call override of the adapters that apply (mixed batches). */
  private mixed: string[] | null = null;
  private detached = false;

  constructor(readonly base: PreTrainedModel) {
    if (base.contextWrapper) throw new PeftConfigError("this model already has adapters attached; use the existing PeftModel");
    this.info = modelInfo(base);
    base.contextWrapper = (ctx, graphInput) => this.wrapContext(ctx, graphInput);
    this.refresh();
  }

  /** See PreTrainedModel.usesTokenTypeIds. */
  get usesTokenTypeIds(): boolean {
    return this.base.usesTokenTypeIds;
  }

  /** getPeftModel(model, config): attaches a new adapter named "default" (or opts.adapterName). */
  static create(
    model: PreTrainedModel,
    config: Readonly<Record<string, unknown>>,
    opts: AddAdapterOptions & { adapterName?: string } = {},
  ): PeftModel {
    const peft = new PeftModel(model);
    try {
      peft.addAdapter(opts.adapterName ?? "default", config, opts);
    } catch (e) {
      // A config that fails must leave the model free to try again.
      model.contextWrapper = null;
      throw e;
    }
    return peft;
  }

  // ---- adapters ----

  get adapterNames(): string[] {
    return [...this.adapters.keys()];
  }

  get activeAdapters(): string[] {
    return [...this.active];
  }

  get peftConfig(): Record<string, AnyConfig> {
    return Object.fromEntries([...this.adapters].map(([k, a]) => [k, a.config]));
  }

  adapter(name: string): Adapter {
    const a = this.adapters.get(name);
    if (!a) throw new PeftConfigError(`no adapter named "${name}" (adapters: ${this.adapterNames.join(", ") || "none"})`);
    return a;
  }

  /** Adds an adapter with fresh tensors; it becomes the active one if none is active. */
  addAdapter(name: string, config: Readonly<Record<string, unknown>>, opts: AddAdapterOptions = {}): Adapter {
    this.checkUsable();
    if (this.adapters.has(name)) throw new PeftConfigError(`an adapter named "${name}" already exists`);
    if (name === BASE_ROW) throw new PeftConfigError(`"${BASE_ROW}" is reserved for base-model rows`);
    const { tuner, config: cfg } = parsePeftConfig(config);
    const request = tuner.calibration?.(this.info, cfg) ?? null;
    if (request) checkCalibration(tuner, request, opts.calibration);
    const created = tuner.create(this.info, cfg, new Rng(opts.seed ?? 0), request ? { calibration: opts.calibration } : {});
    for (const [k, v] of createModulesToSave(this.info, cfg.modulesToSave ?? null)) created.tensors.set(k, v);
    if (created.baseEdits) {
      for (const [w, t] of created.baseEdits) this.base.weights.set(w, t);
    }
    const a = this.insertAdapter(name, tuner, (created.config as AnyConfig | undefined) ?? cfg, created.tensors);
    this.trainable.add(name);
    return a;
  }

  /** Registers an adapter whose tensors are known (loading, weighted combination). */
  insertAdapter(name: string, tuner: Tuner, config: AnyConfig, tensors: Map<string, HostTensor>): Adapter {
    if (this.adapters.has(name)) throw new PeftConfigError(`an adapter named "${name}" already exists`);
    const a: Adapter = { name, tuner, config, tensors };
    this.adapters.set(name, a);
    if (this.active.length === 0) this.active = [name];
    this.refresh();
    return a;
  }

  /** PEFT's add_weighted_adapter: a new (frozen) LoRA adapter combining existing LoRA adapters; see lora/weighted.ts. */
  addWeightedAdapter(adapters: string[], weights: number[], name: string, opts: WeightedAdapterOptions = {}): Adapter {
    this.checkUsable();
    return addWeightedAdapter(this, adapters, weights, name, opts);
  }

  /** The keys and shapes an adapter of this config must have on this model. */
  expectedTensors(tuner: Tuner, config: AnyConfig): Map<string, number[]> {
    const exp = tuner.expectedTensors(this.info, config);
    for (const [name, key] of modulesToSaveKeys(this.info, config.modulesToSave ?? null)) exp.set(key, [...this.info.weight(name).shape]);
    return exp;
  }

  setAdapter(names: string | string[]): void {
    const list = typeof names === "string" ? [names] : [...names];
    for (const n of list) this.adapter(n);
    this.active = list;
    this.refresh();
  }

  deleteAdapter(name: string): void {
    this.adapter(name);
    if (this.merged.includes(name)) throw new PeftConfigError(`adapter "${name}" is merged; unmerge it before deleting`);
    this.adapters.delete(name);
    this.active = this.active.filter((n) => n !== name);
    for (const k of [...this.base.derivedInputs.keys()]) if (k.startsWith(`d.${name}.`)) this.base.derivedInputs.delete(k);
    // Compiled graphs are cached by adapter names; a new adapter under this name may differ in shape.
    this.base.invalidate();
    this.refresh();
  }

  /** Replaces an adapter's tensors (after training); shapes must match. */
  setAdapterTensors(name: string, tensors: Map<string, HostTensor>): void {
    const a = this.adapter(name);
    for (const [k, t] of tensors) {
      const old = a.tensors.get(k);
      if (!old || old.shape.length !== t.shape.length || old.shape.some((d, i) => d !== t.shape[i])) {
        throw new PeftConfigError(`adapter "${name}": tensor "${k}" is unknown or has the wrong shape`);
      }
    }
    a.tensors = new Map([...a.tensors, ...tensors]);
    this.refresh();
  }

  /**
   * Replaces an adapter's config while it trains (a controller's change, such as AdaLoRA's
   * rank_pattern); the peft_type must stay the same.
   */
  setAdapterConfig(name: string, config: AnyConfig): void {
    const a = this.adapter(name);
    if (config.peftType !== a.config.peftType)
      throw new PeftConfigError(`adapter "${name}": a ${a.config.peftType} adapter cannot take a ${config.peftType} config`);
    a.config = config;
    this.base.invalidate();
    this.refresh();
  }

  /** Runs fn with every adapter switched off (the base model). */
  async disableAdapter<T>(fn: () => Promise<T> | T): Promise<T> {
    const was = this.disabled;
    this.disabled = true;
    this.refresh();
    try {
      return await fn();
    } finally {
      this.disabled = was;
      this.refresh();
    }
  }

  // ---- running ----

  /** Adapters that the forward applies in the graph (active, not merged), or the mixed-batch set. */
  private applied(): string[] {
    if (this.disabled) return [];
    const list = this.mixed ?? this.active;
    return list.filter((n) => !this.merged.includes(n));
  }

  private wrapContext(base: ForwardContext, graphInput: (name: string, dtype: DType, shape: readonly Dim[]) => Tensor): ForwardContext {
    let ctx = base;
    for (const name of this.applied()) {
      const a = this.adapter(name);
      const tensor = (key: string): Tensor => {
        const t = a.tensors.get(key);
        if (!t) throw new PeftConfigError(`adapter "${name}" has no tensor "${key}"`);
        return graphInput(`a.${name}.${key}`, t.dtype, t.shape);
      };
      const rowMask = this.mixed ? graphInput(`rows.${name}`, "f32", ["batch"]) : null;
      const taskIds = a.tuner.taskCount ? graphInput(TASK_IDS_INPUT, "i32", ["batch"]) : null;
      const mts = modulesToSaveKeys(this.info, a.config.modulesToSave ?? null);
      if (mts.size) {
        if (rowMask) throw new PeftConfigError(`adapter "${name}" has modules_to_save, which mixed-adapter batches do not support`);
        ctx = new ModulesToSaveContext(ctx, mts, tensor);
      }
      const prepared = (key: string, sources: readonly string[], compute: (...src: HostTensor[]) => HostTensor | null): Tensor | null => {
        const inputName = `d.${name}.${key}`;
        const value = this.preparedValue(name, sources, compute);
        const v = value();
        if (!v) return null;
        this.base.derivedInputs.set(inputName, () => {
          const now = value();
          if (!now)
            throw new PeftConfigError(`adapter "${name}": cannot prepare "${key}" from its current tensors (${sources.join(", ")})`);
          return now;
        });
        return graphInput(inputName, v.dtype, v.shape);
      };
      const unmergedWeight = (w: string): Tensor | null => {
        const t = this.originals.get(w);
        return t ? graphInput(`${ORIGINAL}${w}`, t.dtype, t.shape) : null;
      };
      ctx = a.tuner.wrap(ctx, this.info, a.config, {
        adapterName: name,
        tensor,
        rowMask,
        taskIds,
        training: false,
        seed: null,
        prepared,
        unmergedWeight,
      });
    }
    return ctx;
  }

  /** The current value of a prepared tensor, recomputed only when one of its sources was replaced. */
  private preparedValue(
    name: string,
    sources: readonly string[],
    compute: (...src: HostTensor[]) => HostTensor | null,
  ): () => HostTensor | null {
    let memo: { src: HostTensor[]; value: HostTensor | null } | null = null;
    return () => {
      const src = sources.map((k) => {
        const t = this.adapter(name).tensors.get(k);
        if (!t) throw new PeftConfigError(`adapter "${name}" has no tensor "${k}"`);
        return t;
      });
      if (!memo || memo.src.some((t, i) => t !== src[i])) memo = { src, value: compute(...src) };
      return memo.value;
    };
  }

  /** Re-publishes adapter tensors as graph inputs and the structure key compiled graphs are cached by. */
  private refresh(): void {
    this.base.extraInputs.clear();
    for (const a of this.adapters.values()) for (const [k, t] of a.tensors) this.base.extraInputs.set(`a.${a.name}.${k}`, t);
    for (const [w, t] of this.originals) this.base.extraInputs.set(`${ORIGINAL}${w}`, t);
    // Which weights have originals (read by DoRA) follows from what is merged.
    this.base.contextKey = `peft:${this.applied().join(",")}|mixed:${this.mixed ? 1 : 0}|merged:${this.merged.join(",")}`;
  }

  private checkUsable(): void {
    if (this.detached) throw new PeftConfigError("this PeftModel was unloaded; its base model is on its own now");
  }

  /**
   * The model's forward with the active adapters. `adapterNames` gives one adapter name (or
   * "__base__") per row: each row then runs with its own adapter, in one batch.
   */
  async forward(
    inputs: ForwardInputs & { adapterNames?: readonly string[]; taskIds?: readonly number[] },
    opts: { outputHiddenStates?: boolean } = {},
  ): Promise<ModelOutput> {
    this.checkUsable();
    const { adapterNames, taskIds, ...rest } = inputs;
    if (!adapterNames) return this.withTaskIds(rowsOf(rest), taskIds, () => this.base.forward(rest, opts));
    const used = [...new Set(adapterNames.filter((n) => n !== BASE_ROW))];
    for (const n of used) {
      const a = this.adapter(n);
      if (!a.tuner.supportsMixedBatch)
        throw new PeftConfigError(`adapter "${n}" (${a.tuner.peftType}) cannot be used in a mixed-adapter batch`);
      if (this.merged.includes(n)) throw new PeftConfigError(`adapter "${n}" is merged; unmerge before mixed-adapter batches`);
    }
    if (this.merged.length) throw new PeftConfigError("mixed-adapter batches need all adapters unmerged");
    this.mixed = used;
    this.refresh();
    try {
      const rows: Record<string, HostTensor> = {};
      for (const n of used)
        rows[`rows.${n}`] = hostTensor(
          "f32",
          [adapterNames.length],
          Float32Array.from(adapterNames, (x) => (x === n ? 1 : 0)),
        );
      for (const [k, v] of Object.entries(rows)) this.base.extraInputs.set(k, v);
      return await this.withTaskIds(adapterNames.length, taskIds, () => this.base.forward(rest, opts));
    } finally {
      this.mixed = null;
      this.refresh();
    }
  }

  generate(prompts: readonly (readonly number[])[], opts: GenerateOptions & { taskIds?: readonly number[] } = {}): Promise<number[][]> {
    this.checkUsable();
    const { taskIds, ...rest } = opts;
    return this.withTaskIds(prompts.length, taskIds, () => this.base.generate(prompts, rest));
  }

  /**
   * The task for calls that give no task ids (`peftkit eval/generate --task`), as a row of the
   * routing table; null: such calls must give ids. Only adapters that route by task read it.
   */
  useTask(id: number | null): void {
    this.defaultTask = id;
  }
  private defaultTask: number | null = null;

  /**
   * Runs fn with the `task_ids` input set for `rows` examples (the given ids, else the default
   * task), when an applied adapter routes by task; every id checked against each such adapter's
   * routing table.
   */
  private async withTaskIds<T>(rows: number, given: readonly number[] | undefined, fn: () => Promise<T>): Promise<T> {
    const routed = this.applied().filter((n) => this.adapter(n).tuner.taskCount);
    if (!routed.length) return fn();
    if (given && given.length !== rows)
      throw new TaskIdError(`${given.length} task ids given for a batch of ${rows} example${rows === 1 ? "" : "s"}`);
    const sizes = routed.map((n) => (this.adapter(n).tuner.taskCount as (c: AnyConfig) => number)(this.adapter(n).config));
    // A routing table of one row needs no id: every example is that task.
    const fallback = this.defaultTask ?? (sizes.every((n) => n === 1) ? 0 : null);
    const ids = given ?? (fallback === null ? null : new Array<number>(rows).fill(fallback));
    let t = null;
    for (const [i, n] of routed.entries()) {
      const a = this.adapter(n);
      const size = sizes[i];
      if (!ids)
        throw new TaskIdError(
          `adapter "${n}" (${a.tuner.peftType}) routes by task: give a task id per example (taskIds; --task on the CLI); its routing table has ${size} task${size === 1 ? "" : "s"}`,
        );
      t = taskIdTensor(ids, size, `adapter "${n}"`);
    }
    this.base.extraInputs.set(TASK_IDS_INPUT, t as HostTensor);
    try {
      return await fn();
    } finally {
      this.base.extraInputs.delete(TASK_IDS_INPUT);
    }
  }

  // ---- merging ----

  /** Folds adapters (default: the active ones) into the base weights; they stop running in the graph. */
  mergeAdapter(names?: string[], opts: { safeMerge?: boolean } = {}): void {
    this.checkUsable();
    // In the order the forward applies them, whatever order they were named in: an IA3 adapter
    // scales what the adapters before it produce, so it must be merged after them.
    const rank = (n: string) => (this.active.includes(n) ? this.active.indexOf(n) : this.active.length);
    for (const n of [...(names ?? this.active)].sort((x, y) => rank(x) - rank(y))) {
      if (this.merged.includes(n)) continue;
      const a = this.adapter(n);
      if (!a.tuner.merge) throw new PeftConfigError(`${a.tuner.peftType} adapters cannot be merged into the base weights`);
      // Each adapter is folded into the weights as earlier merges left them; DoRA also reads the
      // weights from before any merge, as its unmerged forward does (see Tuner.merge).
      const updates = a.tuner.merge(this.info, a.config, a.tensors, (w) => this.originals.get(w) ?? this.info.weight(w));
      for (const [name, key] of modulesToSaveKeys(this.info, a.config.modulesToSave ?? null))
        updates.set(name, a.tensors.get(key) as HostTensor);
      if (opts.safeMerge) {
        for (const [w, t] of updates) {
          const d = t.data as Float32Array;
          for (let i = 0; i < d.length; i++) {
            if (!Number.isFinite(d[i]))
              throw new PeftConfigError(`safe merge: merging adapter "${n}" gives a non-finite value in "${w}"; nothing was merged`);
          }
        }
      }
      let added = false;
      for (const [w, t] of updates) {
        if (!this.base.weights.has(w)) {
          // A merge may create a weight the model lacked (an SSF shift becomes a bias).
          this.addedByMerge.add(w);
          added = true;
        } else if (!this.originals.has(w)) this.originals.set(w, this.base.weights.get(w) as HostTensor);
        this.base.weights.set(w, t);
      }
      if (added) this.base.invalidate();
      this.merged.push(n);
    }
    this.refresh();
  }

  /** Weights that merges created, removed again on unmerge. */
  private readonly addedByMerge = new Set<string>();

  /** Restores the base weights from before every merge. */
  unmergeAdapter(): void {
    this.checkUsable();
    for (const [w, t] of this.originals) this.base.weights.set(w, t);
    this.originals.clear();
    if (this.addedByMerge.size) {
      for (const w of this.addedByMerge) this.base.weights.delete(w);
      this.addedByMerge.clear();
      this.base.invalidate();
    }
    this.merged.length = 0;
    this.refresh();
  }

  get mergedAdapters(): string[] {
    return [...this.merged];
  }

  /** Merges the active adapters and returns the base model on its own. */
  mergeAndUnload(opts: { safeMerge?: boolean; adapterNames?: string[] } = {}): PreTrainedModel {
    this.mergeAdapter(opts.adapterNames, opts);
    return this.detach();
  }

  /** Removes every adapter without merging and returns the untouched base model. */
  unload(): PreTrainedModel {
    this.unmergeAdapter();
    return this.detach();
  }

  private detach(): PreTrainedModel {
    this.originals.clear();
    this.addedByMerge.clear();
    this.merged.length = 0;
    this.adapters.clear();
    this.active = [];
    this.base.contextWrapper = null;
    this.base.extraInputs.clear();
    this.base.derivedInputs.clear();
    this.base.contextKey = "";
    this.detached = true;
    return this.base;
  }

  // ---- files ----

  /** Writes every adapter (or the selected ones) in HF PEFT's folder format. */
  savePretrained(dir: string, opts: { selectedAdapters?: string[] } = {}): void {
    this.checkUsable();
    savePretrained(this, dir, opts);
  }

  /** Loads an adapter folder (written by peftkit or HF PEFT) as a new named adapter. */
  loadAdapter(dir: string, name: string, opts: { isTrainable?: boolean } = {}): Adapter {
    this.checkUsable();
    const a = loadAdapter(this, dir, name);
    if (opts.isTrainable) this.trainable.add(name);
    return a;
  }

  /** PeftModel.fromPretrained(model, dir): the model with the adapter in `dir` attached and active. */
  static fromPretrained(model: PreTrainedModel, dir: string, opts: { adapterName?: string; isTrainable?: boolean } = {}): PeftModel {
    const peft = new PeftModel(model);
    try {
      peft.loadAdapter(dir, opts.adapterName ?? "default", opts);
    } catch (e) {
      peft.detach();
      throw e;
    }
    return peft;
  }

  /** Adapters that may be trained: those created here, or loaded with isTrainable. */
  private readonly trainable = new Set<string>();

  isTrainable(name: string): boolean {
    return this.trainable.has(name);
  }

  // ---- reporting ----

  /**
   * Trainable parameters (the active adapters', less the tensors their method keeps fixed) and all
   * parameters (base + every adapter tensor).
   */
  parameterCounts(): { trainable: number; total: number } {
    const seen = new Set<HostTensor>();
    let base = 0;
    for (const t of this.base.weights.values()) {
      if (seen.has(t)) continue;
      seen.add(t);
      base += t.data.length;
    }
    let trainable = 0;
    let adapters = 0;
    for (const a of this.adapters.values()) {
      let n = 0;
      let fixed = 0;
      for (const [k, t] of a.tensors) {
        n += t.data.length;
        if (a.tuner.trainable?.(k, a.config) === false) fixed += t.data.length;
      }
      adapters += n;
      // Tensors the method never trains (VeRA's projections) count in the total only.
      if (this.active.includes(a.name)) trainable += n - fixed;
    }
    return { trainable, total: base + adapters };
  }

  /** Prints "trainable params: … || all params: … || trainable%: …" as PEFT does, and returns the line. */
  printTrainableParameters(log: (s: string) => void = console.log): string {
    const { trainable, total } = this.parameterCounts();
    const line = `trainable params: ${trainable.toLocaleString("en-US")} || all params: ${total.toLocaleString("en-US")} || trainable%: ${((100 * trainable) / total).toFixed(4)}`;
    log(line);
    return line;
  }
}

/** Examples in a forward's inputs (rows of the ids, or of the pixels). */
function rowsOf(inputs: ForwardInputs): number {
  const x = inputs.inputIds ?? inputs.pixelValues;
  if (x === undefined) return 0;
  if (Array.isArray(x)) return x.length;
  return (x as { shape: readonly number[] }).shape[0] ?? 0;
}
