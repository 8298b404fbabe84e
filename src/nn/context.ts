/**
 * What a model's forward pass asks of the world: its weights, and a few operations that PEFT
 * methods replace (linear layers, embeddings) or hook into (named activation points). The
 * models never know which tuner is attached; a tuner wraps the context instead.
 */
import { PeftkitError } from "../engine/errors.js";
import type { Tensor } from "../engine/trace/tensor.js";

export class ModelError extends PeftkitError {}

export interface LinearOptions {
  /** The weight is stored [in, out] (GPT-2's Conv1D) instead of PyTorch Linear's [out, in]. */
  fanInFanOut?: boolean;
}

/** Activation points where tuners may insert computation, e.g. bottleneck adapters or IA3 scales. */
export type HookPoint =
  | { kind: "embeddings"; x: Tensor }
  | { kind: "attention_output"; layer: number }
  | { kind: "mlp_output"; layer: number }
  /** The input of the MLP sub-block (after its LayerNorm where the block has one); parallel adapters read it. */
  | { kind: "mlp_input"; layer: number }
  | { kind: "mlp_hidden"; layer: number; path: string }
  | { kind: "key"; layer: number; path: string }
  | { kind: "value"; layer: number; path: string };

export interface ForwardContext {
  /** A weight by its checkpoint name (e.g. "model.layers.0.input_layernorm.weight"). */
  weight(name: string): Tensor;
  hasWeight(name: string): boolean;
  /** y = x·Wᵀ + b for the linear layer at `path` (weight `${path}.weight`, bias `${path}.bias` if present). */
  linear(path: string, x: Tensor, opts?: LinearOptions): Tensor;
  /**
   * The outputs of several linear layers that read the same input, concatenated along the last
   * axis, computed as one matrix product ([out, in] weights only); null when this context cannot
   * (callers then run the layers one by one). Inference contexts fuse to cut per-op overhead.
   */
  fusedLinear(paths: readonly string[], x: Tensor): Tensor | null;
  /** Rows of the embedding table `${path}.weight` for integer ids. */
  embedding(path: string, ids: Tensor): Tensor;
  /** Identity unless a tuner transforms the activation at this point. */
  hook(point: HookPoint, x: Tensor): Tensor;
  /** Extra key/value rows prepended to a layer's attention (prefix tuning); null when none. */
  attentionPrefix(layer: number, batch: Tensor): { key: Tensor; value: Tensor } | null;
  /**
   * Embeddings [B, n, hidden] prepended to the input sequence (prompt tuning); null when none.
   * `batch` is any tensor whose first dim is the batch.
   */
  softPrompt(batch: Tensor): Tensor | null;
}

/** The plain context: weights come from an accessor (graph inputs), nothing is hooked. */
export class WeightContext implements ForwardContext {
  constructor(
    private readonly get: (name: string) => Tensor | undefined,
    private readonly names: ReadonlySet<string>,
    /** Weights (or biases) of several layers stacked along the output axis, one tensor; absent: no fusion. */
    private readonly stacked?: (names: readonly string[]) => Tensor | undefined,
  ) {}

  weight(name: string): Tensor {
    const t = this.names.has(name) ? this.get(name) : undefined;
    if (!t) throw new ModelError(`the model has no weight "${name}"`);
    return t;
  }

  hasWeight(name: string): boolean {
    return this.names.has(name);
  }

  linear(path: string, x: Tensor, opts: LinearOptions = {}): Tensor {
    const w = this.weight(`${path}.weight`);
    let y = x.matmul(opts.fanInFanOut ? w : w.transpose());
    if (this.hasWeight(`${path}.bias`)) y = y.add(this.weight(`${path}.bias`));
    return y;
  }

  fusedLinear(paths: readonly string[], x: Tensor): Tensor | null {
    if (!this.stacked) return null;
    const biases = paths.filter((p) => this.hasWeight(`${p}.bias`)).length;
    if (biases !== 0 && biases !== paths.length) return null;
    const w = this.stacked(paths.map((p) => `${p}.weight`));
    if (!w) return null;
    let y = x.matmul(w.transpose());
    if (biases) {
      const b = this.stacked(paths.map((p) => `${p}.bias`));
      if (!b) return null;
      y = y.add(b);
    }
    return y;
  }

  embedding(path: string, ids: Tensor): Tensor {
    return this.weight(`${path}.weight`).gather(ids, 0);
  }

  hook(_point: HookPoint, x: Tensor): Tensor {
    return x;
  }

  attentionPrefix(): null {
    return null;
  }

  softPrompt(): null {
    return null;
  }
}

/**
 * The layers at `paths` applied to x (each [out_i, in]), through one fused product when the
 * context offers it; `outs` gives each layer's output width.
 */
export function linears(ctx: ForwardContext, paths: readonly string[], x: Tensor, outs: readonly number[]): Tensor[] {
  const y = ctx.fusedLinear(paths, x);
  return y ? y.split(outs, -1) : paths.map((p) => ctx.linear(p, x));
}
