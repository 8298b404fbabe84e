/** Attention building blocks shared by the architectures. */
import { hostTensor } from "../engine/ir/host.js";
import { concat, constant, iota, scalar, type Tensor, where } from "../engine/trace/tensor.js";
import { customVjp } from "../engine/trace/trace.js";

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

/**
 * `allowed` [B|1, T, S] narrowed to a causal sliding window of `window` keys, as transformers'
 * sliding_window_overlay (masking_utils.py: `kv_idx > q_idx - sliding_window`, and'ed with the
 * causal `kv_idx <= q_idx`): the query in slot q keeps the keys in slots q−window+1 … q, itself
 * included. Slots count along the key axis (`querySlots` [T] holds each query's), padding and any
 * prompt-learning rows included, as transformers counts cache positions rather than position ids;
 * for left padding the two agree, since the real tokens of a row sit in consecutive slots.
 */
export function slidingWindow(allowed: Tensor, querySlots: Tensor, window: number): Tensor {
  const inside = iota([1, allowed.shape[2]], 1).add(window).gt(querySlots.unsqueeze(-1));
  return allowed.and(inside.unsqueeze(0));
}

function gatherSwapped(x: Tensor): Tensor {
  const shape = [...x.shape];
  const half = x.dim(-1) / 2;
  const swap = constant(hostTensor("i64", [2], BigInt64Array.from([1n, 0n])));
  return x
    .reshape([...shape.slice(0, -1), 2, half])
    .gather(swap, -2)
    .reshape(shape);
}

/**
 * cat(x[d/2:], x[:d/2]). Swapping is its own inverse, so the backward is the same gather; split,
 * negate and concatenate would cost pads and adds in the backward pass instead.
 */
const swapHalves = customVjp(
  "swap_halves",
  (x) => [gatherSwapped(x)],
  (_primals, _outs, [g]) => [g ? gatherSwapped(g) : null],
);

/**
 * cos and sign-adjusted sin of shape [B, 1, T, D] for position ids [B, T] and inverse
 * frequencies [D/2], laid out as transformers does ([freqs, freqs]).
 */
export function rotaryTables(positionIds: Tensor, invFreq: Tensor): RotaryTables {
  const freqs = positionIds.cast("f32").unsqueeze(-1).mul(invFreq).unsqueeze(1);
  const c = freqs.cos();
  const s = freqs.sin();
  return { cos: concat([c, c], -1), signedSin: concat([s.neg(), s], -1) };
}

export interface RotaryTables {
  cos: Tensor;
  /** sin with the first half negated: rotate_half(x)·sin = swapHalves(x)·signedSin. */
  signedSin: Tensor;
}

/** x·cos + rotate_half(x)·sin, computed as x·cos + swapHalves(x)·signedSin (one gather, no slices). */
export function applyRotary(x: Tensor, rot: RotaryTables): Tensor {
  return x.mul(rot.cos).add(swapHalves(x)[0].mul(rot.signedSin));
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
