/** Attention building blocks shared by the architectures. */
import { concat, scalar, type Tensor, where } from "../engine/trace/tensor.js";

/** Large negative used for masked scores: like transformers' finfo.min, fully masked rows stay finite. */
export const MASKED = -3.0e38;

/**
 * softmax(q·kᵀ·scale + mask)·v with grouped-query attention by broadcasting: q [B, H, T, D],
 * k and v [B, KV, S, D] with H a multiple of KV. `allowed` is a bool mask of rank 3 broadcastable
 * to [B, T, S] (true = may attend). Returns [B, H, T, D].
 */
export function attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | null, scale: number): Tensor {
  const [b, h, t, d] = q.shape;
  const kv = k.shape[1] as number;
  const group = (h as number) / kv;
  const qg = q.reshape([b, kv, group, t, d]);
  const kg = k.unsqueeze(2);
  const vg = v.unsqueeze(2);
  let scores = qg.matmul(kg.transpose(-1, -2)).mul(scale);
  // An additive bias (0 or MASKED) built on the small mask shape: adding it costs one fast
  // broadcast Add and nothing in the backward pass, where a Where over the full score tensor
  // cost a slow broadcast select forward and another one backward.
  if (allowed) scores = scores.add(where(allowed, scalar(0, scores.dtype), scalar(MASKED, scores.dtype)).unsqueeze(1).unsqueeze(1));
  const out = scores.softmax(-1).matmul(vg);
  return out.reshape([b, h, t, d]);
}

/** rotate_half as in transformers: cat(−x[d/2:], x[:d/2]). */
export function rotateHalf(x: Tensor): Tensor {
  const half = x.dim(-1) / 2;
  const [x1, x2] = x.split([half, half], -1);
  return concat([x2.neg(), x1], -1);
}

/**
 * cos and sin of shape [B, 1, T, D] for position ids [B, T] and inverse frequencies [D/2],
 * laid out as transformers does ([freqs, freqs]).
 */
export function rotaryTables(positionIds: Tensor, invFreq: Tensor): { cos: Tensor; sin: Tensor } {
  const freqs = positionIds.cast("f32").unsqueeze(-1).mul(invFreq);
  const emb = concat([freqs, freqs], -1).unsqueeze(1);
  return { cos: emb.cos(), sin: emb.sin() };
}

export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  return x.mul(cos).add(rotateHalf(x).mul(sin));
}

/** [B, T, H·D] → [B, H, T, D]. */
export function splitHeads(x: Tensor, heads: number, headDim: number): Tensor {
  const [b, t] = x.shape;
  return x.reshape([b, t, heads, headDim]).permute([0, 2, 1, 3]);
}

/** [B, H, T, D] → [B, T, H·D]. */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, t, d] = x.shape;
  return x.permute([0, 2, 1, 3]).reshape([b, t, (h as number) * (d as number)]);
}
