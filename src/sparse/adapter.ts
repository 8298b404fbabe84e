/**
 * What every adapter that trains chosen entries of linear weights shares (SpIEL, LT-SFT, SaRA,
 * ID³, SPT's unstructured part, DSEE's sparse part): per targeted layer an index set (a fixed
 * i32 adapter tensor, changed only by a controller) and its values (trained), the forward that
 * folds them into the weight, and merging. Each method names its own keys and picks its indices.
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { type Tensor, zeros } from "../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../nn/context.js";
import { PeftConfigError } from "../tuners/config.js";
import type { TargetedLinear } from "../tuners/targets.js";
import { DelegatingContext, type ModelInfo, maskRows, type WrapOptions } from "../tuners/tuner.js";
import { applyDelta, checkDelta, type SparseDelta } from "./delta.js";
import { addSparse, type SparseLinearTaps, sparseLinear } from "./linear.js";

/** A linear layer with a sparse delta on its weight. */
export interface SparseTarget extends TargetedLinear {
  /** The base weight's canonical name ("model.layers.0.self_attn.q_proj.weight"). */
  readonly weight: string;
  /** Its stored shape ([out, in], or [in, out] for GPT-2's Conv1D). */
  readonly shape: readonly [number, number];
  /** Entries the layer trains. */
  readonly k: number;
}

/** The adapter keys of a layer's index set and values. */
export interface SparseKeys {
  readonly indices: string;
  readonly values: string;
}

export function sparseTargets(
  info: ModelInfo,
  layers: readonly TargetedLinear[],
  count: (l: TargetedLinear, numel: number) => number,
): SparseTarget[] {
  return layers.map((l) => {
    const weight = `${l.path}.weight`;
    const [d0, d1] = info.weight(weight).shape;
    return { ...l, weight, shape: [d0, d1] as const, k: count(l, d0 * d1) };
  });
}

/** Adapter tensors of a layer: its indices (i32, increasing) and values (f32). */
export function sparseTensors(keys: SparseKeys, indices: Int32Array, values: Float32Array): [string, HostTensor][] {
  return [
    [keys.indices, hostTensor("i32", [indices.length], indices)],
    [keys.values, hostTensor("f32", [values.length], values)],
  ];
}

/** A layer's delta from the adapter's tensors, checked (a loaded folder's indices included). */
export function sparseDeltaOf(t: SparseTarget, keys: SparseKeys, tensors: ReadonlyMap<string, HostTensor>, where: string): SparseDelta {
  const idx = tensors.get(keys.indices);
  const val = tensors.get(keys.values);
  if (!idx || !val) throw new PeftConfigError(`${where}: the adapter has no tensor "${idx ? keys.values : keys.indices}"`);
  const d: SparseDelta = { shape: t.shape, indices: idx.data as Int32Array, values: Float32Array.from(val.data as ArrayLike<number>) };
  checkDelta(d, `${where}: "${keys.indices}"`);
  return d;
}

/**
 * The forward: each targeted layer computes x·(W + S)ᵀ + b with W from the context beneath. In a
 * mixed-adapter batch the rows of other adapters must not see S, so there the change x·Sᵀ is
 * added and masked per row instead.
 */
export class SparseDeltaContext extends DelegatingContext {
  private readonly byPath: Map<string, SparseTarget>;
  constructor(
    inner: ForwardContext,
    targets: readonly SparseTarget[],
    private readonly keys: (t: SparseTarget) => SparseKeys,
    private readonly opts: WrapOptions,
    /** Training only: what a layer's backward pass reports of its dense ∂L/∂W (SpIEL's selection). */
    private readonly taps?: (t: SparseTarget) => SparseLinearTaps | undefined,
  ) {
    super(inner);
    this.byPath = new Map(targets.map((t) => [t.path, t]));
  }

  override linear(path: string, x: Tensor, lopts: LinearOptions = {}): Tensor {
    const t = this.byPath.get(path);
    if (!t) return this.inner.linear(path, x, lopts);
    const k = this.keys(t);
    const idx = this.opts.tensor(k.indices);
    const values = this.opts.tensor(k.values);
    const fanInFanOut = lopts.fanInFanOut ?? false;
    if (this.opts.rowMask) {
      const s = addSparse(zeros([...t.shape], x.dtype), idx, values);
      return this.inner.linear(path, x, lopts).add(maskRows(x.matmul(fanInFanOut ? s : s.transpose()), this.opts.rowMask));
    }
    let y = sparseLinear(x, this.inner.weight(t.weight), idx, values, { fanInFanOut, taps: this.taps?.(t) });
    if (this.inner.hasWeight(`${path}.bias`)) y = y.add(this.inner.weight(`${path}.bias`));
    return y;
  }
}

/** The targeted weights with their deltas added. */
export function mergeSparse(
  info: ModelInfo,
  targets: readonly SparseTarget[],
  keys: (t: SparseTarget) => SparseKeys,
  tensors: ReadonlyMap<string, HostTensor>,
  where: string,
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const t of targets) out.set(t.weight, applyDelta(info.weight(t.weight), sparseDeltaOf(t, keys(t), tensors, where), 1, where));
  return out;
}
