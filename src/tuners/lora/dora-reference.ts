/**
 * Test helper: DoRA's forward pass with the column norm ‖W + s·B·A‖ passed in as a fixed tensor,
 * the reference whose finite differences give the gradient DoRA prescribes (Liu et al. 2024, §4.3:
 * the norm is a constant in the backward, as PEFT's `weight_norm.detach()`). Written in the merged
 * form W' = (m / N)·(W + s·B·A), not the decomposition LoraContext uses. Used only by tests.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { PeftConfigError } from "../config.js";
import { DelegatingContext, type ModelInfo } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { type LoraLayer, loraKeys, loraLayers } from "./layers.js";

/** Value of the f64 [rows, cols] tensor t at (o, i), read through a transpose when `transposed`. */
function at(t: HostTensor, o: number, i: number, transposed: boolean): number {
  const d = t.data as Float64Array | Float32Array;
  return transposed ? d[i * t.shape[1] + o] : d[o * t.shape[1] + i];
}

/**
 * ‖W + s·B·A‖ per output feature, in f64 from the current values: one frozen norm per DoRA layer,
 * by the layer's magnitude key. `tensor` gives adapter tensors, `weight` base weights (as fed to the graph).
 */
export function frozenDoraNorms(
  info: ModelInfo,
  c: LoraConfig,
  tensor: (key: string) => HostTensor,
  weight: (name: string) => HostTensor,
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of loraLayers(info, c)) {
    const k = loraKeys(l);
    const a = tensor(k.a);
    const b = tensor(k.b);
    const w = weight(`${l.path}.weight`);
    const transposed = l.kind === "embedding" || info.fanInFanOut;
    const norms = new Float64Array(l.outFeatures);
    for (let o = 0; o < l.outFeatures; o++) {
      let sum = 0;
      for (let i = 0; i < l.inFeatures; i++) {
        let v = at(w, o, i, transposed);
        for (let j = 0; j < l.r; j++) v += l.scaling * at(b, o, j, false) * at(a, j, i, false);
        sum += v * v;
      }
      norms[o] = Math.sqrt(sum);
    }
    out.set(k.m, hostTensor("f64", [l.outFeatures], norms));
  }
  return out;
}

/** The DoRA forward with frozen norms (graph tensors by magnitude key). LoRA biases are not modelled. */
export class FrozenNormDoraContext extends DelegatingContext {
  private readonly layers = new Map<string, LoraLayer>();

  constructor(
    inner: ForwardContext,
    private readonly info: ModelInfo,
    c: LoraConfig,
    private readonly tensor: (key: string) => Tensor,
    private readonly norm: (magnitudeKey: string) => Tensor,
  ) {
    super(inner);
    if (!c.useDora || c.bias !== "none") throw new PeftConfigError('FrozenNormDoraContext: needs a DoRA config with bias "none"');
    for (const l of loraLayers(info, c)) this.layers.set(l.path, l);
  }

  /** W' = (m / N)·(W + s·B·A), [out, in]. */
  private merged(l: LoraLayer, wLogical: Tensor): Tensor {
    const k = loraKeys(l);
    const v = wLogical.add(this.tensor(k.b).matmul(this.tensor(k.a)).mul(l.scaling));
    return v.mul(this.tensor(k.m).div(this.norm(k.m)).unsqueeze(-1));
  }

  override linear(path: string, x: Tensor, opts?: LinearOptions): Tensor {
    const l = this.layers.get(path);
    if (l?.kind !== "linear") return this.inner.linear(path, x, opts);
    const w = this.inner.weight(`${path}.weight`);
    const wl = this.info.fanInFanOut ? w.transpose() : w;
    // The base layer (with its bias) plus x·(W' − W)ᵀ.
    return this.inner.linear(path, x, opts).add(x.matmul(this.merged(l, wl).sub(wl).transpose()));
  }

  override embedding(path: string, ids: Tensor): Tensor {
    const l = this.layers.get(path);
    if (l?.kind !== "embedding") return this.inner.embedding(path, ids);
    // Embedding tables are [num, dim]; DoRA works on the [dim, num] view.
    const table = this.merged(l, this.inner.weight(`${path}.weight`).transpose()).transpose();
    return table.gather(ids, 0);
  }
}
