/**
 * BOFT (Liu et al. 2024, "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization")
 * in HF PEFT 0.20.0's format. Each targeted linear layer's input is multiplied by an orthogonal
 * matrix built from m = boft_n_butterfly_factor butterfly factors, M = B_{m−1}···B_0 with
 * B_i = P_i·blockdiag(Cayley(R_i))·P_iᵀ, and its output is scaled per feature by boft_s:
 * y = (W·(x·M))⊙s + b, i.e. W' = diag(s)·W·Mᵀ. Tensors: `<module>.boft_R` [m, D, b, b] (any
 * matrices; their skew part 0.5(R − Rᵀ) is used) and `<module>.boft_s` [out, 1]. PEFT uses the
 * config's factor count only where its CUDA extension builds (otherwise it falls back to one
 * factor); we always follow the config.
 */

import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { constant, iota, randomUniform, scalar, type Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { layerSeed } from "../layer-seed.js";
import type { LoraConfig } from "../lora/config.js";
import { type BiasTarget, biasTargets, type LoraLayer } from "../lora/layers.js";
import { cayleyExact, hostCayleyExact, identity, rotateBlocks } from "../oft/cayley.js";
import { flatBlocks } from "../oft/index.js";
import { selectTargets } from "../targets.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type ButterflyLayout, butterflyLayout, inversePerm } from "./butterfly.js";
import { type BoftConfig, boftConfigJson, parseBoftConfig } from "./config.js";

export interface BoftLayer extends ButterflyLayout {
  path: string;
  /** PEFT module name (key prefix). */
  name: string;
  inFeatures: number;
  outFeatures: number;
  keyR: string;
  keyS: string;
}

export function boftLayers(info: ModelInfo, c: BoftConfig): BoftLayer[] {
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const chosen = selectTargets(c, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: LORA_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "BOFT config",
  });
  if (info.fanInFanOut)
    throw new PeftConfigError(
      `BOFT config: this model's linear layers are GPT-2 Conv1D ([in, out]); PEFT 0.20.0's BOFT supports nn.Linear layers only (it raises "Target module ... is not supported")`,
    );
  return chosen.map((name) => {
    const path = byPeft.get(name) as string;
    const [outFeatures, inFeatures] = info.weight(`${path}.weight`).shape;
    return {
      path,
      name,
      inFeatures,
      outFeatures,
      keyR: `${name}.boft_R`,
      keyS: `${name}.boft_s`,
      ...butterflyLayout(inFeatures, c, name),
    };
  });
}

const shapeR = (l: BoftLayer) => [l.factors, l.blockNum, l.blockSize, l.blockSize];

/**
 * bias "all": every bias of the model is trained and saved (get_peft_model_state_dict keeps every
 * "bias" key: "<module>.base_layer.bias" for BOFT-wrapped layers, "<module>.bias" otherwise).
 * Biases of modules_to_save modules are left to their copies.
 */
export function boftBiases(info: ModelInfo, c: BoftConfig, layers: readonly BoftLayer[]): BiasTarget[] {
  if (c.bias !== "all") return [];
  const spec = { bias: "all", modulesToSave: c.modulesToSave } as LoraConfig;
  return biasTargets(
    info,
    spec,
    layers.map((l) => ({ path: l.path, key: l.name }) as LoraLayer),
  );
}

function create(info: ModelInfo, c: BoftConfig, rng: Rng): CreatedAdapter {
  if (c.bias === "boft_only")
    throw new PeftConfigError(
      `BOFT config: bias "boft_only" is not supported (PEFT 0.20.0 trains those biases but its state dict filter finds none of them to save, so the adapter would not round-trip); use "all" or "none"`,
    );
  const tensors = new Map<string, HostTensor>();
  for (const l of boftLayers(info, c)) {
    const n = l.factors * l.blockNum * l.blockSize * l.blockSize;
    // reset_boft_parameters: R = 0 (M = I), s = 1; init_weights=False: R ~ N(0, 0.1), s ~ N(1, 0.1).
    const r = c.initWeights ? new Float32Array(n) : fillNormal(n, 0.1, rng);
    const s = c.initWeights ? new Float32Array(l.outFeatures).fill(1) : fillNormal(l.outFeatures, 0.1, rng).map((v) => v + 1);
    tensors.set(l.keyR, hostTensor("f32", shapeR(l), r));
    tensors.set(l.keyS, hostTensor("f32", [l.outFeatures, 1], s));
  }
  for (const b of boftBiases(info, c, boftLayers(info, c))) {
    const t = info.weight(b.name);
    tensors.set(b.key, hostTensor("f32", t.shape, Float32Array.from(t.data as Float32Array)));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: BoftConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of boftLayers(info, c)) {
    out.set(l.keyR, shapeR(l));
    out.set(l.keyS, [l.outFeatures, 1]);
  }
  for (const b of boftBiases(info, c, boftLayers(info, c))) out.set(b.key, [...info.weight(b.name).shape]);
  return out;
}

const isIdentity = (p: Int32Array) => p.every((v, i) => v === i);
const indexConst = (p: Int32Array) => constant(hostTensor("i64", [p.length], Array.from(p)));

/**
 * PEFT's MultiplicativeDropoutLayer in training: in one butterfly factor drawn at random,
 * int(p·D) of its D blocks, drawn at random, become the identity.
 */
function blockDropout(orth: Tensor, l: BoftLayer, p: number, seed: Tensor): Tensor {
  const d = l.blockNum;
  const drop = Math.trunc(p * d);
  if (drop === 0) return orth;
  const u = randomUniform(layerSeed(seed, l.path, 0), [d], orth.dtype);
  // rank_j = #{i : u_i < u_j}: the blocks with the `drop` smallest draws are replaced.
  const rank = u.unsqueeze(0).lt(u.unsqueeze(1)).cast(orth.dtype).sum(1);
  const blocks = rank.lt(drop).cast(orth.dtype);
  const which = randomUniform(layerSeed(seed, l.path, 1), [1], orth.dtype)
    .mul(l.factors)
    .floor();
  const factor = iota([l.factors], 0, orth.dtype).eq(which).cast(orth.dtype);
  const mask = factor.unsqueeze(1).mul(blocks.unsqueeze(0)).unsqueeze(-1).unsqueeze(-1);
  return orth.add(mask.mul(identity(l.blockSize, orth.dtype).sub(orth)));
}

/** The orthogonal blocks [m, D, b, b] from boft_R: the exact Cayley transform of its skew part. */
export function boftOrth(l: BoftLayer, rawR: Tensor): Tensor {
  const b = l.blockSize;
  const skew = rawR.sub(rawR.transpose(-2, -1)).mul(0.5);
  return cayleyExact(skew.reshape([l.factors * l.blockNum, b, b])).reshape([l.factors, l.blockNum, b, b]);
}

/** x·M for the layer's butterfly factors (factor m−1 first), from boft_R [m, D, b, b]. */
export function boftRotate(x: Tensor, l: BoftLayer, rawR: Tensor, dropout: { p: number; seed: Tensor } | null): Tensor {
  let orth = boftOrth(l, rawR);
  if (dropout) orth = blockDropout(orth, l, dropout.p, dropout.seed);
  return butterflyApply(x, l, orth);
}

/** x·M from the orthogonal blocks [m, D, b, b]. */
function butterflyApply(x: Tensor, l: BoftLayer, orth: Tensor): Tensor {
  let y = x;
  for (let i = l.factors - 1; i >= 0; i--) {
    const perm = l.perms[i];
    const ident = isIdentity(perm);
    // x·P = x[inv]; ·blockdiag; ·Pᵀ = [perm].
    const xp = ident ? y : y.gather(indexConst(inversePerm(perm)), -1);
    const rotated = rotateBlocks(xp, orth.select(0, i), l.blockNum);
    y = ident ? rotated : rotated.gather(indexConst(perm), -1);
  }
  return y;
}

/** [B] row mask shaped [B, 1, …, 1] of rank `rank`. */
function batchMask(rowMask: Tensor, rank: number): Tensor {
  let m = rowMask;
  for (let i = 1; i < rank; i++) m = m.unsqueeze(-1);
  return m;
}

class BoftContext extends DelegatingContext {
  private readonly layers: Map<string, { l: BoftLayer; index: number }>;
  /** Canonical bias name → adapter key (bias "all"). */
  private readonly biases: Map<string, string>;
  constructor(
    inner: ForwardContext,
    info: ModelInfo,
    layers: BoftLayer[],
    private readonly c: BoftConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l, index) => [l.path, { l, index }]));
    this.biases = new Map(boftBiases(info, c, layers).map((b) => [b.name, b.key]));
  }

  /** Trained biases replace the base ones (per row in mixed batches; activations are [B, T, …]). */
  override weight(name: string): Tensor {
    const key = this.biases.get(name);
    if (!key) return this.inner.weight(name);
    const mine = this.opts.tensor(key);
    if (!this.opts.rowMask) return mine;
    const base = this.inner.weight(name);
    return base.add(mine.sub(base).mul(batchMask(this.opts.rowMask, mine.rank + 2)));
  }

  /** The trained bias minus the base one (what the inner layer added) for an output of rank `rank`, or null. */
  private biasShift(path: string, rank: number): Tensor | null {
    const name = `${path}.bias`;
    const key = this.biases.get(name);
    if (!key) return null;
    let d = this.opts.tensor(key).sub(this.inner.weight(name));
    if (!this.opts.rowMask) return d;
    // Linear outputs may be [B, T, out] or [B, out] (a pooler). A bias an inner adapter of a mixed
    // batch mixed per row comes as [B, 1, out] (see weight()); drop its sequence axis for [B, out].
    while (d.rank > rank) d = d.squeeze(1);
    return d.mul(batchMask(this.opts.rowMask, rank));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const hit = this.layers.get(path);
    if (!hit) {
      const y = this.inner.linear(path, x, lin);
      const shift = this.biasShift(path, y.rank);
      return shift ? y.add(shift) : y;
    }
    const { l, index } = hit;
    const seed = this.opts.training && this.c.boftDropout > 0 ? this.opts.seed : null;
    // Each layer draws its own blocks.
    const dropout = seed ? { p: this.c.boftDropout, seed: seed.add(scalar(104729 * (index + 1), "i64")) } : null;
    // At inference the blocks come from the host (computed once per adapter tensor).
    const pre = this.opts.prepared?.(`boft:${l.keyR}`, [l.keyR], (r) =>
      r.dtype === "f32" ? hostTensor("f32", shapeR(l), flatBlocks(boftBlocks(l, r.data as Float32Array).flat())) : null,
    );
    const rotated = pre ? butterflyApply(x, l, pre) : boftRotate(x, l, this.opts.tensor(l.keyR), dropout);
    const mask = this.opts.rowMask;
    const y = this.inner.linear(path, mask ? x.add(maskRows(rotated.sub(x), mask)) : rotated, lin);
    const s = this.opts.tensor(l.keyS).flatten();
    // PEFT scales the output without its (trained) bias b: (W·x·M)·s + b.
    const bias = this.inner.hasWeight(`${path}.bias`) ? this.inner.weight(`${path}.bias`) : null;
    const noBias = bias ? y.sub(bias) : y;
    const shift = this.biasShift(path, y.rank);
    const out = mask ? y.add(maskRows(noBias.mul(s.sub(1)), mask)) : bias ? noBias.mul(s).add(bias) : noBias.mul(s);
    return shift ? out.add(shift) : out;
  }
}

/** The orthogonal blocks of every factor, float64: [factor][block] → b×b row-major. */
export function boftBlocks(l: BoftLayer, r: ArrayLike<number>): Float64Array[][] {
  const b = l.blockSize;
  const out: Float64Array[][] = [];
  for (let f = 0; f < l.factors; f++) {
    const row: Float64Array[] = [];
    for (let d = 0; d < l.blockNum; d++) {
      const off = (f * l.blockNum + d) * b * b;
      const q = new Float64Array(b * b);
      for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) q[i * b + j] = 0.5 * (r[off + i * b + j] - r[off + j * b + i]);
      row.push(hostCayleyExact(q, b));
    }
    out.push(row);
  }
  return out;
}

/** v·B_fᵀ for a row vector v, with B_f = P·blockdiag(blocks)·Pᵀ (so v·Bᵀ = ((v[inv])·blockdiagᵀ)[perm]). */
function applyFactorT(v: Float64Array, l: BoftLayer, blocks: Float64Array[], perm: Int32Array, inv: Int32Array): Float64Array {
  const b = l.blockSize;
  const vp = new Float64Array(v.length);
  for (let j = 0; j < v.length; j++) vp[j] = v[inv[j]];
  const rot = new Float64Array(v.length);
  for (let p = 0; p < l.blockNum; p++) {
    const r = blocks[p];
    for (let a = 0; a < b; a++) {
      let s = 0;
      for (let c = 0; c < b; c++) s += vp[p * b + c] * r[a * b + c];
      rot[p * b + a] = s;
    }
  }
  const out = new Float64Array(v.length);
  for (let j = 0; j < v.length; j++) out[j] = rot[perm[j]];
  return out;
}

/** W' = diag(s)·W·Mᵀ (PEFT's merge: ((M·Wᵀ)ᵀ)·boft_s); the bias is unchanged. */
function merge(info: ModelInfo, c: BoftConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of boftLayers(info, c)) {
    const blocks = boftBlocks(l, tensors.get(l.keyR)?.data as Float32Array);
    const s = tensors.get(l.keyS)?.data as Float32Array;
    const invs = l.perms.map(inversePerm);
    const w = info.weight(`${l.path}.weight`);
    const wd = w.data as Float32Array;
    const data = new Float32Array(wd.length);
    for (let o = 0; o < l.outFeatures; o++) {
      // Mᵀ = B_0ᵀ·B_1ᵀ···B_{m−1}ᵀ, applied to the row from the left factor first.
      let v: Float64Array = Float64Array.from(wd.subarray(o * l.inFeatures, (o + 1) * l.inFeatures));
      for (let f = 0; f < l.factors; f++) v = applyFactorT(v, l, blocks[f], l.perms[f], invs[f]);
      for (let i = 0; i < l.inFeatures; i++) data[o * l.inFeatures + i] = v[i] * s[o];
    }
    out.set(`${l.path}.weight`, hostTensor("f32", w.shape, data));
  }
  for (const b of boftBiases(info, c, boftLayers(info, c))) {
    const t = tensors.get(b.key);
    if (!t) throw new PeftConfigError(`BOFT adapter: no tensor ${b.key}`);
    out.set(b.name, t);
  }
  return out;
}

/**
 * PEFT < 0.13 also saved the permutation buffer `boft_P` (PEFT 0.20.0 ignores it on load, so do
 * we). A boft_R with one factor under a config asking for more was written where PEFT's CUDA
 * extension did not build (PEFT then silently uses one factor); we follow the config, so refuse.
 */
function checkFolder(raw: RawPeftConfig, shapes: ReadonlyMap<string, readonly number[]>, where: string): { ignore: string[] } {
  const factors = typeof raw.boft_n_butterfly_factor === "number" ? raw.boft_n_butterfly_factor : 1;
  for (const [k, s] of shapes) {
    if (k.endsWith(".boft_R") && s.length === 4 && s[0] === 1 && factors > 1)
      throw new PeftConfigError(
        `${where}: ${k} [${s.join(", ")}] holds 1 butterfly factor but boft_n_butterfly_factor is ${factors}: PEFT wrote it without its CUDA extension, which makes it fall back to one factor; set boft_n_butterfly_factor to 1 in adapter_config.json to load it as it was trained`,
      );
  }
  return { ignore: [...shapes.keys()].filter((k) => k.endsWith(".boft_P")) };
}

export const BOFT: Tuner<BoftConfig> = {
  peftType: "BOFT",
  parseConfig: parseBoftConfig,
  toJson: boftConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new BoftContext(base, info, boftLayers(info, c), c, opts),
  merge,
  checkFolder,
  supportsMixedBatch: true,
};
