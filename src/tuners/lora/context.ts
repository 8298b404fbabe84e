/**
 * The LoRA forward pass (PEFT's lora.Linear / lora.Embedding and the DoRA variants), as a
 * context that wraps the model's: linear and embedding layers gain their low-rank update, and
 * trained biases replace the base ones.
 */

import type { HostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { layerSeed } from "../layer-seed.js";
import { DelegatingContext, type ModelInfo, maskedBiasShift, maskRows, type WrapOptions } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { blockDiagonalB, type FusedSite, stackedScaledA } from "./inference.js";
import { type BiasTarget, biasTargets, type LoraLayer, loraKeys, loraLayers } from "./layers.js";

/** [B] row mask shaped [B, 1, …, 1] (rank `rank`), to scale a tensor that broadcasts against a rank-`rank` activation. */
function batchMask(rowMask: Tensor, rank: number): Tensor {
  let m = rowMask;
  for (let i = 1; i < rank; i++) m = m.unsqueeze(-1);
  return m;
}

/**
 * ‖V‖ per row of V = W + s·B·A ([out, in]), detached from the gradient as DoRA prescribes.
 * Computed in f64 and rounded once, like the magnitude created on the host, so that a fresh
 * adapter gives m / ‖V‖ = 1 exactly and is a no-op.
 */
function doraNorm(wLogical: Tensor, a: Tensor, b: Tensor, scaling: number): Tensor {
  const lw = b.cast("f64").matmul(a.cast("f64")).stopGradient();
  return wLogical.cast("f64").add(lw.mul(scaling)).square().sum(1).sqrt().cast(wLogical.dtype).stopGradient();
}

export class LoraContext extends DelegatingContext {
  private readonly linears = new Map<string, LoraLayer>();
  private readonly embeddings = new Map<string, LoraLayer>();
  /** Canonical bias name → target. */
  private readonly biases = new Map<string, BiasTarget>();

  constructor(
    inner: ForwardContext,
    private readonly info: ModelInfo,
    private readonly c: LoraConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    const layers = loraLayers(info, c);
    for (const l of layers) (l.kind === "linear" ? this.linears : this.embeddings).set(l.path, l);
    for (const t of biasTargets(info, c, layers)) this.biases.set(t.name, t);
  }

  /** The weight DoRA normalises: the base weight before any adapter was merged into it. */
  private baseWeight(name: string): Tensor {
    return this.opts.unmergedWeight?.(name) ?? this.inner.weight(name);
  }

  /** Trained biases replace the base ones (per row in mixed batches; activations are [B, T, …]). */
  override weight(name: string): Tensor {
    const t = this.biases.get(name);
    if (!t) return this.inner.weight(name);
    const mine = this.opts.tensor(t.key);
    if (!this.opts.rowMask) return mine;
    const base = this.inner.weight(name);
    return base.add(mine.sub(base).mul(batchMask(this.opts.rowMask, mine.rank + 2)));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    let y = this.inner.linear(path, x, lin);
    const bias = this.biases.get(`${path}.bias`);
    if (bias) {
      // The inner layer added the base bias; add the difference to the trained one.
      const d = this.opts.tensor(bias.key).sub(this.inner.weight(bias.name));
      y = y.add(maskedBiasShift(d, this.opts.rowMask, y.rank));
    }
    const l = this.linears.get(path);
    if (!l) return y;
    const k = loraKeys(l);
    const a = this.opts.tensor(k.a);
    const b = this.opts.tensor(k.b);
    const seed = this.opts.training && this.c.loraDropout > 0 ? this.opts.seed : null;
    const xin = seed ? F.dropout(x, this.c.loraDropout, layerSeed(seed, path)) : x;
    // The scale is applied to the rank-r intermediate, the smallest tensor on the path.
    const lora = xin.matmul(a.transpose()).mul(l.scaling).matmul(b.transpose());
    if (!this.c.useDora) return y.add(maskRows(lora, this.opts.rowMask));
    // DoRA (PEFT's DoraLinearLayer.forward): with g = m / ‖W + s·B·A‖ (detached),
    // out = base(x) + (g − 1)·(x·Wᵀ) + g·s·B·A·x; under dropout both terms see the dropped x.
    // W is the base weight without the other adapters of a stack, merged or not (merge.ts).
    const w = this.baseWeight(`${path}.weight`);
    const fif = this.info.fanInFanOut;
    const g = this.opts.tensor(k.m).div(doraNorm(fif ? w.transpose() : w, a, b, l.scaling));
    const plain = xin.matmul(fif ? w : w.transpose());
    const change = plain.mul(g.sub(1)).add(lora.mul(g));
    return y.add(maskRows(change, this.opts.rowMask));
  }

  /**
   * Inference only: the fused base output of layers sharing an input plus all their LoRA updates,
   * from host-prepared stacked A and block-diagonal B (see inference.ts).
   */
  override fusedLinear(paths: readonly string[], x: Tensor): Tensor | null {
    const prepared = this.opts.prepared;
    if (!prepared || this.c.useDora || paths.some((p) => this.biases.has(`${p}.bias`))) return null;
    const y = this.inner.fusedLinear(paths, x);
    if (!y) return null;
    const layers = paths.map((p) => this.linears.get(p) ?? null);
    if (layers.every((l) => !l)) return y;
    const keys = layers.map((l) => (l ? loraKeys(l) : null));
    const sources = keys.flatMap((k) => (k ? [k.a, k.b] : []));
    const sites = (src: HostTensor[]): (FusedSite | null)[] => {
      let i = 0;
      return layers.map((l) => (l ? { a: src[i++], b: src[i++], scaling: l.scaling } : null));
    };
    const outs = paths.map((p) => this.info.weight(`${p}.weight`).shape[0]);
    const id = `fused:${paths.join("+")}`;
    // Only f32 adapters (what loading gives) are prepared; others keep the per-layer path.
    const allF32 = (src: HostTensor[]) => src.every((t) => t.dtype === "f32");
    const a = prepared(`${id}:A*${layers.map((l) => l?.scaling ?? 0).join(",")}`, sources, (...src) =>
      allF32(src) ? stackedScaledA(sites(src), x.shape[x.rank - 1] as number) : null,
    );
    const b = prepared(`${id}:B`, sources, (...src) => (allF32(src) ? blockDiagonalB(sites(src), outs) : null));
    if (!a || !b) return null;
    return y.add(maskRows(x.matmul(a.transpose()).matmul(b.transpose()), this.opts.rowMask));
  }

  override embedding(path: string, ids: Tensor): Tensor {
    const y = this.inner.embedding(path, ids);
    const l = this.embeddings.get(path);
    if (!l) return y;
    const k = loraKeys(l);
    const a = this.opts.tensor(k.a);
    const b = this.opts.tensor(k.b);
    // PEFT's Embedding.forward: (A.T[ids]) @ B.T · s; embeddings have no LoRA dropout.
    const lora = a.transpose().gather(ids, 0).matmul(b.transpose()).mul(l.scaling);
    if (!this.c.useDora) return y.add(maskRows(lora, this.opts.rowMask));
    // DoRA on embeddings: g per embedding dim from ‖Wᵀ + s·B·A‖ rows; out = g·base + g·lora.
    const w = this.baseWeight(`${path}.weight`);
    const g = this.opts.tensor(k.m).div(doraNorm(w.transpose(), a, b, l.scaling));
    const change = w.gather(ids, 0).mul(g.sub(1)).add(lora.mul(g));
    return y.add(maskRows(change, this.opts.rowMask));
  }
}
