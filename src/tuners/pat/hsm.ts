/**
 * PAT's Hybrid Sparsification Modules: HSM(x) = s ⊙ m ⊙ (x + U·D·x) on every contribution to the
 * residual stream of a LLaMA-family decoder (the embedding output, each attention o_proj output
 * and each MLP down_proj output, before the residual add), all sharing one channel mask m built
 * from a trainable vector μ [hidden]. Keys, shapes, the graph forward and the host fold.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { iota, type Tensor } from "../../engine/trace/tensor.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import type { ModelInfo } from "../tuner.js";
import type { PatConfig } from "./config.js";

export const PAT_MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;
export const DEFAULT_HSM_RANK = 200;
export const DEFAULT_KEEP_SHARE = 0.75;

/** Where an HSM sits: the canonical path of the module whose output it transforms. */
export interface HsmSite {
  readonly path: string;
  /** The adapter-key prefix (PEFT's module name). */
  readonly key: string;
  /** -1 for the embedding HSM. */
  readonly layer: number;
  readonly kind: "embeddings" | "attention_output" | "mlp_output";
}

export interface HsmKeys {
  /** D [rank, hidden]. */
  readonly down: string;
  /** U [hidden, rank]. */
  readonly up: string;
  /** s [hidden] (only with identity_loss). */
  readonly scale: string;
}

/** One line naming the model type when the model is not a LLaMA-family decoder. */
export function checkPatModel(info: ModelInfo): void {
  if (info.model.arch.name !== "llama")
    throw new PeftConfigError(
      `PAT needs a LLaMA-family decoder (model_type ${PAT_MODEL_TYPES.join(", ")}); this model's model_type is "${info.modelType}"`,
    );
}

/** keep_dim as given or resolved (¾ of hidden); one line naming the field when outside [1, hidden). */
export function keepDimOf(info: ModelInfo, c: PatConfig): number {
  const k = c.keepDim ?? Math.round(DEFAULT_KEEP_SHARE * info.hidden);
  if (!(Number.isInteger(k) && k >= 1 && k < info.hidden))
    throw new PeftConfigError(`field "keep_dim" must be an integer in [1, ${info.hidden}) (hidden_size ${info.hidden}), got ${k}`);
  return k;
}

export function hsmRankOf(info: ModelInfo, c: PatConfig): number {
  const r = c.hsmRank ?? Math.min(DEFAULT_HSM_RANK, info.hidden);
  if (!(Number.isInteger(r) && r >= 1)) throw new PeftConfigError(`field "hsm_rank" must be an integer >= 1, got ${r}`);
  return r;
}

export function hsmSites(info: ModelInfo): HsmSite[] {
  checkPatModel(info);
  const site = (path: string, layer: number, kind: HsmSite["kind"]): HsmSite => ({ path, key: info.peftName(path), layer, kind });
  const out = [site("model.embed_tokens", -1, "embeddings")];
  for (let i = 0; i < info.numLayers; i++) {
    out.push(site(`model.layers.${i}.self_attn.o_proj`, i, "attention_output"));
    out.push(site(`model.layers.${i}.mlp.down_proj`, i, "mlp_output"));
  }
  return out;
}

export function hsmKeys(s: HsmSite): HsmKeys {
  return { down: `${s.key}.hsm_down.weight`, up: `${s.key}.hsm_up.weight`, scale: `${s.key}.hsm_scale.weight` };
}

/** μ [hidden], owned by the embedding HSM as in the authors' code (model.dimdown0's mask). */
export function maskKey(info: ModelInfo): string {
  return `${info.peftName("model.embed_tokens")}.pat_mask`;
}

/** [T, b, g]: temperature, bias and 1 while the mask trains through the task loss (0 once frozen). Fixed; training only. */
export function scheduleKey(info: ModelInfo): string {
  return `${info.peftName("model.embed_tokens")}.pat_schedule`;
}

/** Every HSM tensor a saved adapter holds, with its shape (LoRA's are separate). */
export function hsmShapes(info: ModelInfo, c: PatConfig): Map<string, number[]> {
  const d = info.hidden;
  const r = hsmRankOf(info, c);
  const out = new Map<string, number[]>([[maskKey(info), [d]]]);
  for (const s of hsmSites(info)) {
    const k = hsmKeys(s);
    out.set(k.down, [r, d]);
    out.set(k.up, [d, r]);
    if (c.identityLoss) out.set(k.scale, [d]);
  }
  return out;
}

/**
 * Fresh HSM tensors: D Kaiming-uniform (a = √5, bound 1/√hidden), U = 0, s = 1, μ = 0, so every
 * HSM starts as the identity (m = σ(0) + ½ = 1 in training, 1[μ ≥ 0] = 1 at inference).
 */
export function createHsm(info: ModelInfo, c: PatConfig, rng: Rng): Map<string, HostTensor> {
  const d = info.hidden;
  const r = hsmRankOf(info, c);
  const out = new Map<string, HostTensor>();
  const mu = new Float32Array(d);
  if (!c.initHsmWeights) {
    const mag = fillUniform(d, 0.1, 0.6, rng);
    for (let j = 0; j < d; j++) mu[j] = rng.next() < 0.5 ? -mag[j] : mag[j];
  }
  out.set(maskKey(info), hostTensor("f32", [d], mu));
  for (const s of hsmSites(info)) {
    const k = hsmKeys(s);
    const bound = 1 / Math.sqrt(d);
    out.set(k.down, hostTensor("f32", [r, d], fillUniform(r * d, -bound, bound, rng)));
    out.set(k.up, hostTensor("f32", [d, r], c.initHsmWeights ? new Float32Array(d * r) : fillNormal(d * r, 0.1, rng)));
    if (c.identityLoss) {
      const sc = c.initHsmWeights ? new Float32Array(d).fill(1) : fillNormal(d, 0.1, rng).map((v) => 1 + v);
      out.set(k.scale, hostTensor("f32", [d], sc));
    }
  }
  return out;
}

/** T(t) = 1 / (1 − ln max(1, t) / ln N + 1e-6), DimDownMask.step. */
export function temperature(t: number, n: number): number {
  return 1 / (1 - Math.log(Math.max(1, t)) / Math.log(n) + 1e-6);
}

/**
 * The schedule the forward of the (t+1)-th update reads (t updates done, as the authors' patched
 * trainer sets step_placeholder after optimizer.step()): [T(t), b(t), 1] before 0.8·N, then
 * [T(⌊0.8·N⌋), b(t), 0] from t = ⌊0.8·N⌋ (the mask is frozen: the task loss no longer reaches μ).
 */
export function scheduleAt(t: number, n: number): Float32Array {
  const b = Math.max(0.5 - t / n, 0);
  // int(global_step·0.8) in DimDownMask.step.
  const freeze = Math.floor(0.8 * n);
  const frozen = t >= freeze;
  return Float32Array.of(temperature(frozen ? freeze : t, n), b, frozen ? 0 : 1);
}

/**
 * m: in training, σ(T·μ') + b with σ = 1/(1 + exp(min(−T·μ', 10))) as the authors clamp it, μ' = μ
 * while g = 1 and μ without gradient once g = 0; elsewhere (inference, merge, pruning) the rounded
 * mask 1[μ ≥ 0].
 */
export function maskOf(mu: Tensor, schedule: Tensor | null): Tensor {
  if (!schedule) return mu.ge(0).cast(mu.dtype);
  const s = schedule.cast(mu.dtype);
  const [t, b, g] = [s.slice(0, 0, 1), s.slice(0, 1, 2), s.slice(0, 2, 3)];
  const eff = mu.mul(g).add(mu.stopGradient().mul(g.neg().add(1)));
  return t.mul(eff).neg().minimum(10).exp().add(1).reciprocal().add(b);
}

/** HSM(x) = (s ⊙ m) ⊙ (x + (x·Dᵀ)·Uᵀ) for x [..., hidden]; `sm` is s ⊙ m (or m). */
export function hsmForward(x: Tensor, down: Tensor, up: Tensor, sm: Tensor): Tensor {
  const dt = x.dtype;
  const low = x.matmul(down.cast(dt).transpose()).matmul(up.cast(dt).transpose());
  return x.add(low).mul(sm.cast(dt));
}

/**
 * L_mask = w·|Σ_j bin(μ_j) − k| / k + mean_{μ>0}(μ − ½)² + mean_{μ≤0}(μ + ½)², where bin(μ) =
 * sg(1[μ ≥ 0] − μ) + μ is 1[μ ≥ 0] with the straight-through gradient 1, and an empty set's mean
 * is 0 (the authors' torch code gives NaN there, with the same gradients).
 */
export function maskLoss(mu: Tensor, keep: number, weight: number): Tensor {
  const f = mu.cast("f32");
  const bin = f.ge(0).cast("f32").sub(f).stopGradient().add(f);
  const count = bin
    .sum()
    .sub(keep)
    .abs()
    .mul(weight / keep);
  const pos = f.gt(0).cast("f32");
  const neg = pos.neg().add(1);
  const meanOver = (sel: Tensor, v: Tensor) => sel.mul(v).sum().div(sel.sum().maximum(1));
  return count.add(meanOver(pos, f.sub(0.5).square())).add(meanOver(neg, f.add(0.5).square()));
}

/** MSE(D·Dᵀ, I_rank): D's rows orthonormal, so D carries no scale (the identity loss). */
export function identityLoss(down: Tensor): Tensor {
  const d = down.cast("f32");
  const r = d.shape[0] as number;
  const eye = iota([r, 1], 0)
    .eq(iota([1, r], 1))
    .cast("f32");
  return d.matmul(d.transpose()).sub(eye).square().mean();
}

/** The sites whose identity loss enters the objective (all, or the authors' embedding + last layer). */
export function identitySites(info: ModelInfo, c: PatConfig): HsmSite[] {
  const sites = hsmSites(info);
  if (!c.identityLossLastLayerOnly) return sites;
  return sites.filter((s) => s.layer === -1 || s.layer === info.numLayers - 1);
}

/** The rounded mask's kept channels, ascending: {j : μ_j ≥ 0}. */
export function keptChannels(mu: HostTensor): number[] {
  const out: number[] = [];
  const v = mu.data as Float32Array;
  for (let j = 0; j < v.length; j++) if (v[j] >= 0) out.push(j);
  return out;
}
