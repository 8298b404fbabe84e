/**
 * A loaded Hugging Face model: config, weights (held in JS memory and fed to ONNX Runtime
 * zero-copy), and compiled forward graphs with symbolic batch and sequence dims, so one ORT
 * session serves every input shape.
 */

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { CompileOptions, Executor } from "../engine/exec/backend.js";
import { compileGraph } from "../engine/exec/backend.js";
import type { DType } from "../engine/ir/dtype.js";
import { Graph } from "../engine/ir/graph.js";
import { f32ToF16, type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Dim } from "../engine/ir/shape.js";
import { withGraph } from "../engine/trace/context.js";
import { Tensor } from "../engine/trace/tensor.js";
import { writeFileAtomic } from "../io/atomic-write.js";
import { loadConfig, openCheckpoint } from "../io/hf-folder.js";
import { type RawTensor, toBf16Raw, writeSafetensors } from "../io/safetensors.js";
import { type ForwardContext, ModelError, WeightContext } from "../nn/context.js";
import { fillNormal, Rng } from "../util/rng.js";
import type { ArchInputs, Architecture, ArchOutputs, TaskHead } from "./architecture.js";
import { type GenerateOptions, generate } from "./generate.js";
import { type IdsLike, onesLike, toFloatTensor, toIdTensor } from "./inputs.js";
import { architectureFor, supportedModelTypes } from "./registry.js";
import { canStack, stackedShape, WeightStacks } from "./stacked.js";
import { loadWeights, sameValues } from "./weights.js";

export interface ModelOutputTensor {
  shape: number[];
  data: Float32Array;
}

export interface ModelOutput {
  logits?: ModelOutputTensor;
  lastHiddenState?: ModelOutputTensor;
  poolerOutput?: ModelOutputTensor;
}

export interface ForwardInputs {
  inputIds?: IdsLike;
  attentionMask?: IdsLike;
  tokenTypeIds?: IdsLike;
  positionIds?: IdsLike;
  pixelValues?: HostTensor | { shape: readonly number[]; data: ArrayLike<number> };
}

export interface LoadOptions extends CompileOptions {
  numLabels?: number;
  /** Seed for initialising a task head the checkpoint lacks. */
  seed?: number;
  /**
   * Warn about head weights the checkpoint lacks (default true). A caller that is about to load
   * them from elsewhere (an adapter's modules_to_save) turns this off and warns about the rest.
   */
  warnNewlyInitialized?: boolean;
}

/** Wraps the plain weight context (tuners use this to attach themselves). */
export type ContextWrapper = (
  base: ForwardContext,
  graphInput: (name: string, dtype: DType, shape: readonly Dim[]) => Tensor,
) => ForwardContext;

const W = "w.";
/** Input-name prefix of stacked weights (names joined by "+"). */
const STACK = "stack.";

/** Graph inputs that the model feeds from its own weights or from extra tensors (adapters). */
export function traceModelGraph(
  model: PreTrainedModel,
  inputs: Record<string, { dtype: DType; shape: readonly Dim[] }>,
  body: (ctx: ForwardContext, t: Record<string, Tensor>) => Record<string, Tensor>,
): Graph {
  const g = new Graph();
  return withGraph(g, () => {
    const t: Record<string, Tensor> = {};
    for (const [k, s] of Object.entries(inputs)) t[k] = new Tensor(g, g.addInput(k, s));
    const bound = new Map<string, Tensor>();
    const graphInput = (name: string, dtype: DType, shape: readonly Dim[]) => {
      let x = bound.get(name);
      if (!x) {
        x = new Tensor(g, g.addInput(name, { dtype, shape }));
        bound.set(name, x);
      }
      return x;
    };
    const base = new WeightContext(
      (name) => {
        const w = model.weights.get(name);
        return w ? graphInput(W + name, w.dtype, w.shape) : undefined;
      },
      new Set(model.weights.keys()),
      (names) =>
        canStack(model.weights, names) ? graphInput(STACK + names.join("+"), "f32", stackedShape(model.weights, names)) : undefined,
    );
    const ctx = model.contextWrapper ? model.contextWrapper(base, graphInput) : base;
    for (const [k, v] of Object.entries(body(ctx, t))) g.addOutput(k, v.id);
    return g;
  });
}

export class PreTrainedModel {
  /** Attached by tuners; null for the plain model. */
  contextWrapper: ContextWrapper | null = null;
  /** Tensors fed to graph inputs that are not model weights (e.g. adapter tensors), by input name. */
  readonly extraInputs = new Map<string, HostTensor>();
  /**
   * Graph inputs computed on demand from other state (e.g. an adapter's tensors transposed and
   * pre-scaled for inference), by input name. Each function returns the current value.
   */
  readonly derivedInputs = new Map<string, () => HostTensor>();
  private readonly executors = new Map<string, Promise<Executor>>();
  private readonly stacks: WeightStacks;

  constructor(
    /** The parsed config.json. */
    readonly config: Record<string, unknown>,
    readonly arch: Architecture<unknown>,
    readonly archConfig: unknown,
    readonly head: TaskHead,
    readonly weights: Map<string, HostTensor>,
    readonly dir: string | null,
    readonly newlyInitialized: string[],
    readonly compileOptions: CompileOptions = {},
  ) {
    this.stacks = new WeightStacks(weights);
  }

  static async load(dir: string, head: TaskHead, opts: LoadOptions = {}): Promise<PreTrainedModel> {
    const raw = loadConfig(dir);
    const modelType = raw.model_type as string;
    const arch = architectureFor(modelType);
    if (!arch) {
      throw new ModelError(
        `${dir}/config.json: model_type "${modelType}" is not supported (supported: ${supportedModelTypes().join(", ")})`,
      );
    }
    if (!arch.heads.includes(head)) {
      throw new ModelError(`${dir}: ${modelType} models have no ${head} head (available: ${arch.heads.join(", ")})`);
    }
    const cfg = arch.parseConfig(raw, { numLabels: opts.numLabels });
    const store = openCheckpoint(dir);
    try {
      const loaded = loadWeights(arch, cfg, head, store, { seed: opts.seed });
      if (loaded.newlyInitialized.length && opts.warnNewlyInitialized !== false) {
        process.emitWarning(
          `${dir}: newly initialised ${head} head weights (not in the checkpoint): ${loaded.newlyInitialized.join(", ")}; train them before use`,
        );
      }
      const ties = arch.tiedWeights(cfg, head);
      for (const name of loaded.untied) {
        process.emitWarning(
          `${dir}: config.json ties "${name}" to "${ties.get(name)}", but the checkpoint holds both with different values; they are kept apart (as transformers 5 does). Set tie_word_embeddings to false in config.json.`,
        );
      }
      const { seed: _s, numLabels: _n, warnNewlyInitialized: _w, ...compile } = opts;
      return new PreTrainedModel(raw, arch, cfg, head, loaded.weights, dir, loaded.newlyInitialized, compile);
    } finally {
      store.close();
    }
  }

  /**
   * A model of a config with freshly initialised weights (as transformers' _init_weights:
   * normal(0, initializer_range) for matrices and embeddings, ones for norm weights, zeros for
   * biases), for pretraining and benchmarks.
   */
  static fromConfig(config: Record<string, unknown>, head: TaskHead, opts: LoadOptions = {}): PreTrainedModel {
    const modelType = config.model_type as string;
    const arch = architectureFor(modelType);
    if (!arch) throw new ModelError(`config: model_type "${modelType}" is not supported (supported: ${supportedModelTypes().join(", ")})`);
    const cfg = arch.parseConfig(config, { numLabels: opts.numLabels });
    const std = typeof config.initializer_range === "number" ? config.initializer_range : 0.02;
    const rng = new Rng(opts.seed ?? 0);
    const weights = new Map<string, HostTensor>();
    const ties = arch.tiedWeights(cfg, head);
    for (const [name, shape] of arch.expectedWeights(cfg, head)) {
      if (ties.has(name)) continue;
      const n = shape.reduce((a, b) => a * b, 1);
      const isNorm = /(norm|ln_\w+|LayerNorm|layernorm\w*)\.weight$/.test(name);
      // Random values are generated slowly, so the pages of the array they are written into end up
      // scattered in physical memory, and streaming such weights measured ~5% slower at decode
      // time than a loaded checkpoint's. One bulk copy gives the weights a loaded model's layout.
      const data = name.endsWith(".bias") ? new Float32Array(n) : isNorm ? new Float32Array(n).fill(1) : fillNormal(n, std, rng).slice();
      weights.set(name, hostTensor("f32", shape, data));
    }
    for (const [name, target] of ties) weights.set(name, weights.get(target) as HostTensor);
    const { seed: _s, numLabels: _n, ...compile } = opts;
    return new PreTrainedModel({ ...config }, arch, cfg, head, weights, null, [], compile);
  }

  /**
   * Writes config.json and model.safetensors (HF layout; tied weights are written once).
   * Weights the config ties but that now differ (a merged LoRA on a tied embedding changes only
   * the input table) are both written, with `tie_word_embeddings: false`, so that a loader that
   * re-ties cannot replace the head. `dtype` "f16"/"bf16" halves the file. Both files are
   * written atomically.
   */
  savePretrained(dir: string, opts: { dtype?: "f32" | "f16" | "bf16" } = {}): void {
    mkdirSync(dir, { recursive: true });
    const ties = this.arch.tiedWeights(this.archConfig, this.head);
    const tied = (name: string, t: HostTensor): boolean => {
      const target = ties.get(name);
      const source = target === undefined ? undefined : this.weights.get(target);
      return source !== undefined && sameValues(t, source);
    };
    const untie = [...ties.keys()].some((name) => this.weights.has(name) && !tied(name, this.weights.get(name) as HostTensor));
    const tensors: Record<string, HostTensor | RawTensor> = {};
    for (const [name, t] of this.weights) {
      if (!untie && tied(name, t)) continue;
      if (opts.dtype === "bf16" && t.dtype === "f32") tensors[name] = toBf16Raw(t);
      else if (opts.dtype === "f16" && t.dtype === "f32")
        tensors[name] = hostTensor("f16", t.shape, Uint16Array.from(t.data as Float32Array, f32ToF16));
      else tensors[name] = t;
    }
    writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
    const config = {
      ...this.config,
      ...(untie ? { tie_word_embeddings: false } : {}),
      torch_dtype: opts.dtype === "f16" ? "float16" : opts.dtype === "bf16" ? "bfloat16" : "float32",
    };
    writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
  }

  get modelType(): string {
    return this.config.model_type as string;
  }

  /** Feeds for a graph: weights under "w.<name>" plus extra inputs, for the inputs the graph declares. */
  feedsFor(graph: Graph, given: Record<string, HostTensor>): Record<string, HostTensor> {
    const feeds: Record<string, HostTensor> = {};
    for (const inp of graph.inputs) {
      if (given[inp.name]) feeds[inp.name] = given[inp.name];
      else if (inp.name.startsWith(W) && this.weights.has(inp.name.slice(W.length)))
        feeds[inp.name] = this.weights.get(inp.name.slice(W.length)) as HostTensor;
      else if (inp.name.startsWith(STACK)) feeds[inp.name] = this.stacks.get(inp.name.slice(STACK.length).split("+"));
      else if (this.extraInputs.has(inp.name)) feeds[inp.name] = this.extraInputs.get(inp.name) as HostTensor;
      else if (this.derivedInputs.has(inp.name)) feeds[inp.name] = (this.derivedInputs.get(inp.name) as () => HostTensor)();
      else throw new ModelError(`no value for graph input "${inp.name}"`);
    }
    return feeds;
  }

  /**
   * Describes what contextWrapper currently does (set by PeftModel, e.g. the active adapters), so
   * compiled graphs are cached per structure and switching back reuses a session.
   */
  contextKey = "";

  /** Compiles (once per key and context) and returns an executor. */
  executor(key: string, build: () => Graph): Promise<Executor> {
    const fullKey = `${key}|${this.contextKey}|${this.contextVersion}`;
    let e = this.executors.get(fullKey);
    if (!e) {
      e = compileGraph(build(), this.compileOptions);
      this.executors.set(fullKey, e);
    }
    return e;
  }

  /**
   * Whether token_type_ids change the output: BERT-style models with type_vocab_size > 1 (RoBERTa's
   * single type does not). Trainers and evaluation add the input to their graphs only then.
   */
  get usesTokenTypeIds(): boolean {
    return (this.arch.tokenTypes?.(this.archConfig) ?? 0) > 1;
  }

  private contextVersion = 0;
  /** Drops compiled graphs (e.g. after a tuner changed what the forward computes). */
  invalidate(): void {
    this.contextVersion++;
    const old = [...this.executors.values()];
    this.executors.clear();
    for (const e of old) e.then((x) => x.release()).catch(() => {});
  }

  /** The model's input names and their declared types. */
  private inputDecls(present: ForwardInputs): Record<string, { dtype: DType; shape: readonly Dim[] }> {
    const d: Record<string, { dtype: DType; shape: readonly Dim[] }> = {};
    if (present.inputIds !== undefined) {
      d.input_ids = { dtype: "i64", shape: ["batch", "seq"] };
      d.attention_mask = { dtype: "i64", shape: ["batch", "seq"] };
    }
    if (present.tokenTypeIds !== undefined) d.token_type_ids = { dtype: "i64", shape: ["batch", "seq"] };
    if (present.positionIds !== undefined) d.position_ids = { dtype: "i64", shape: ["batch", "seq"] };
    if (present.pixelValues !== undefined) {
      const s = present.pixelValues.shape;
      d.pixel_values = { dtype: "f32", shape: ["batch", ...s.slice(1)] };
    }
    return d;
  }

  /** Traces the forward for the given kinds of input; shared by forward() and the trainers. */
  traceForward(ctx: ForwardContext, t: Record<string, Tensor>): ArchOutputs {
    const inputs: ArchInputs = {
      inputIds: t.input_ids,
      attentionMask: t.attention_mask,
      tokenTypeIds: t.token_type_ids,
      positionIds: t.position_ids,
      pixelValues: t.pixel_values,
    };
    return this.arch.forward(ctx, this.archConfig, inputs, this.head);
  }

  /** Runs the model on a batch; logits (and hidden states) come back as row-major Float32Arrays. */
  async forward(inputs: ForwardInputs, opts: { outputHiddenStates?: boolean } = {}): Promise<ModelOutput> {
    const decls = this.inputDecls(inputs);
    const feeds: Record<string, HostTensor> = {};
    if (inputs.inputIds !== undefined) {
      feeds.input_ids = toIdTensor(inputs.inputIds, "inputIds");
      feeds.attention_mask =
        inputs.attentionMask !== undefined ? toIdTensor(inputs.attentionMask, "attentionMask") : onesLike(feeds.input_ids);
    }
    if (inputs.tokenTypeIds !== undefined) feeds.token_type_ids = toIdTensor(inputs.tokenTypeIds, "tokenTypeIds");
    if (inputs.positionIds !== undefined) feeds.position_ids = toIdTensor(inputs.positionIds, "positionIds");
    if (inputs.pixelValues !== undefined) feeds.pixel_values = toFloatTensor(inputs.pixelValues, "pixelValues");
    const wantHidden = opts.outputHiddenStates ?? false;
    const key = `forward:${Object.keys(decls).join(",")}:${wantHidden}`;
    const exec = await this.executor(key, () =>
      traceModelGraph(this, decls, (ctx, t) => {
        const out = this.traceForward(ctx, t);
        const o: Record<string, Tensor> = {};
        if (out.logits) o.logits = out.logits;
        if (out.poolerOutput) o.pooler_output = out.poolerOutput;
        if (wantHidden || !out.logits) o.last_hidden_state = out.lastHiddenState as Tensor;
        return o;
      }),
    );
    const res = await exec.run(this.feedsFor(exec.graph, feeds));
    const out: ModelOutput = {};
    exec.graph.outputs.forEach((o, i) => {
      const v = { shape: [...res[i].shape], data: res[i].data as Float32Array };
      if (o.name === "logits") out.logits = v;
      if (o.name === "pooler_output") out.poolerOutput = v;
      if (o.name === "last_hidden_state") out.lastHiddenState = v;
    });
    return out;
  }

  /** Greedy or sampled decoding with a KV cache; see generate.ts. */
  generate(inputIds: readonly (readonly number[])[], opts: GenerateOptions = {}): Promise<number[][]> {
    return generate(this, inputIds, opts);
  }

  async release(): Promise<void> {
    const all = [...this.executors.values()];
    this.executors.clear();
    for (const e of all) await (await e).release();
  }
}
