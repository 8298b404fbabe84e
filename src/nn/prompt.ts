/**
 * Helpers the architectures share for prompt-learning methods: soft tokens prepended to the
 * sequence (prompt tuning) and key/value rows prepended to attention (prefix tuning). Both add
 * key positions every query may attend to, so masks gain leading all-true columns.
 */
import { type Dim, sumDims } from "../engine/ir/shape.js";
import { concat, iota, type Tensor } from "../engine/trace/tensor.js";
import type { ForwardContext } from "./context.js";

/** A bool tensor of the given shape, all true. */
export function allTrue(shape: readonly Dim[]): Tensor {
  return iota(shape, 0).ge(0);
}

/** `allowed` [B|1, T, S] (or [B, 1, S]) with `extra` leading all-true key columns; null stays null. */
export function withLeadingKeys(allowed: Tensor | null, extra: number): Tensor | null {
  if (!allowed || extra === 0) return allowed;
  return concat([allTrue([allowed.shape[0], allowed.shape[1], extra]), allowed], 2);
}

/** An attention mask [B, S] (i64) with `n` leading ones for soft tokens. */
export function maskWithOnes(mask: Tensor, n: number): Tensor {
  if (n === 0) return mask;
  return concat([allTrue([mask.shape[0], n]).cast(mask.dtype), mask], 1);
}

/** The attention prefix of every layer (prefix tuning), and its length (0 when there is none). */
export function layerPrefixes(
  ctx: ForwardContext,
  layers: number,
  batch: Tensor,
): { prefixes: ({ key: Tensor; value: Tensor } | null)[]; length: number } {
  const prefixes = Array.from({ length: layers }, (_, i) => ctx.attentionPrefix(i, batch));
  const first = prefixes.find((p) => p !== null);
  return { prefixes, length: first ? first.key.dim(2) : 0 };
}

/** Causal mask [1, n, n] among n tokens that see only each other. */
export function causalSquare(n: number): Tensor {
  return iota([1, n], 1)
    .le(iota([n, 1], 0))
    .unsqueeze(0);
}

/**
 * concat([a, b], axis) for a fixed-size `a` and a `b` whose axis may be symbolic, built from
 * gathers so that gradients reach both without slicing a symbolic axis (which the engine's
 * slice, and so concat's gradient, cannot do).
 */
export function prependSeq(a: Tensor, b: Tensor, axis: number): Tensor {
  const ax = axis < 0 ? axis + a.rank : axis;
  const m = b.shape[ax];
  if (typeof m === "number") return concat([a, b], ax);
  const n = a.dim(ax);
  const idx = iota([sumDims([n, m])], 0);
  const first = idx.lt(n);
  const fromA = a.gather(idx.minimum(n - 1), ax);
  const fromB = b.gather(idx.sub(n).maximum(0), ax);
  const shape = fromA.shape.map((_, i) => (i === ax ? fromA.shape[i] : 1));
  return first.reshape(shape).where(fromA, fromB);
}

/** x without its first n entries along a symbolic axis, by a gather (differentiable). */
export function dropLeading(x: Tensor, n: number, axis: number, length: Dim): Tensor {
  return x.gather(iota([length], 0).add(n), axis);
}

type Kv = { key: Tensor; value: Tensor };

/**
 * Runs the n soft tokens of a causal decoder through every layer on their own (they attend only
 * to each other and to any prefix), returning their last hidden state and, per layer, the
 * key/value rows the real tokens then attend to (prefix rows first).
 */
export function softPromptPass(
  layers: number,
  prefixes: readonly (Kv | null)[],
  hidden: Tensor,
  layer: (i: number, h: Tensor, lead: Kv | null) => { h: Tensor; kv: Kv },
): { hidden: Tensor; leads: Kv[] } {
  let h = hidden;
  const leads: Kv[] = [];
  for (let i = 0; i < layers; i++) {
    const lead = prefixes[i];
    const r = layer(i, h, lead);
    h = r.h;
    leads.push(lead ? { key: prependSeq(lead.key, r.kv.key, 2), value: prependSeq(lead.value, r.kv.value, 2) } : r.kv);
  }
  return { hidden: h, leads };
}

/**
 * Positions [B, T] of the real tokens behind `prefix` key/value rows and `soft` soft tokens: the
 * positions the base model would give them (the given ones, which skip left padding, else
 * the cache positions, else 0..T−1), shifted by prefix + soft. Soft tokens take prefix..prefix+soft−1,
 * so they sit just before each row's first real token whatever its padding: a left-padded row
 * sees exactly what it sees alone. (PEFT drops given position ids for prompt tuning, which makes
 * a row's positions count its padding; prefix tuning it shifts by n, as here.)
 */
export function realTokenPositions(b: Dim, t: Dim, prefix: number, soft: number, positionIds?: Tensor, cachePosition?: Tensor): Tensor {
  const positions = positionIds ?? (cachePosition ? cachePosition.unsqueeze(0).expand([b, t]) : iota([b, t], 1));
  return prefix + soft ? positions.add(prefix + soft) : positions;
}
