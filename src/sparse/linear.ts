/**
 * A linear layer whose weight carries a sparse delta: y = x·(W + S)ᵀ, where S is zero except at
 * `indices` (flat positions in W's stored layout) where it holds `values`. This is how sparse
 * fine-tuning (SpIEL, LT-SFT, SaRA, ...) trains chosen entries of a frozen base weight.
 *
 * Memory is what makes it worth a hand-written derivative. Differentiated naively, W + S would be
 * kept from the forward to the backward pass for every layer: one more copy of every targeted
 * weight, which is what full fine-tuning costs in weights. Here the region's backward rebuilds
 * W + S from W and the values (a scatter, cheap next to the matmuls), so the dense sum lives
 * only while one layer's product runs. The values' gradient is the dense ∂L/∂W = gᵀx of that
 * layer, gathered at the indices: optimizer state and the kept gradient are k numbers, the dense
 * product is transient.
 */
import { concat, type Tensor, zeros } from "../engine/trace/tensor.js";
import { customVjp } from "../engine/trace/trace.js";

export interface SparseLinearOptions {
  /** GPT-2's Conv1D stores weights [in, out] (y = x·W): the indices are positions in that layout. */
  fanInFanOut?: boolean;
  /**
   * Reads of the dense ∂L/∂W the backward pass forms anyway, for controllers that choose entries
   * by gradient (SpIEL's regrowth). Each is a zero-valued "slot" tensor passed in as an extra
   * input of the region: its cotangent is the statistic, so a training step gets it by probing
   * the slot (LossContext.probe with reduce (_, g) => g).
   */
  taps?: SparseLinearTaps;
}

/** What the topScores tap subtracts at excluded positions (finite, so f32 arithmetic stays exact elsewhere). */
const EXCLUDED = 1e30;

/** Splits flat positions so f32 holds them exactly (positions up to 2^36). */
export const POSITION_SPLIT = 4096;

export interface SparseLinearTaps {
  /** slot [m]: its cotangent is ∂L/∂W at the flat positions `indices` [m]. */
  gradientAt?: { slot: Tensor; indices: Tensor };
  /**
   * slot [3, m]: its cotangent holds the m entries of ∂L/∂W largest in magnitude, as rows
   * (position div POSITION_SPLIT, position mod POSITION_SPLIT, gradient).
   */
  largest?: { slot: Tensor; m: number };
  /**
   * ID³'s D³ score |∂L/∂W| / (ε + |W + S|)^μ: slot [3, m] gets, as `largest`, the m highest scores
   * as rows (position div POSITION_SPLIT, position mod POSITION_SPLIT, score), leaving out the
   * positions `exclude.indices` [k] whose `exclude.weight` [k] (f32) is nonzero (chosen entries).
   */
  topScores?: { slot: Tensor; m: number; eps: number; exp: number; exclude: { indices: Tensor; weight: Tensor } };
}

/** Rows (position div POSITION_SPLIT, position mod POSITION_SPLIT, value) of positions `pos` [m] with `vals` [m]. */
function positionRows(pos: Tensor, vals: Tensor, dtype: Tensor["dtype"]): Tensor {
  const hi = pos.div(POSITION_SPLIT);
  const lo = pos.sub(hi.mul(POSITION_SPLIT));
  return concat([hi.cast(dtype).unsqueeze(0), lo.cast(dtype).unsqueeze(0), vals.cast(dtype).unsqueeze(0)], 0);
}

/** W with `values` added at the flat positions `indices` (any layout; W's shape is kept). */
export function addSparse(weight: Tensor, indices: Tensor, values: Tensor): Tensor {
  const shape = [...weight.shape];
  const n = shape.reduce<number>((a, d) => a * (d as number), 1);
  return weight.reshape([n]).scatterAdd(indices, values.cast(weight.dtype), 0).reshape(shape);
}

/**
 * y = x·(W + S)ᵀ without bias, for x [..., in]; W [out, in] (or [in, out] with fanInFanOut),
 * `indices` [k] (i32/i64) fixed, `values` [k] trained. The gradient reaches x, values and, when
 * it trains, W.
 */
export function sparseLinear(x: Tensor, weight: Tensor, indices: Tensor, values: Tensor, opts: SparseLinearOptions = {}): Tensor {
  const [rows, cols] = weight.shape as [number, number];
  const inFeatures = opts.fanInFanOut ? rows : cols;
  const outFeatures = opts.fanInFanOut ? cols : rows;
  const product = (xx: Tensor, w: Tensor) => xx.matmul(opts.fanInFanOut ? w : w.transpose());
  const taps = opts.taps ?? {};
  const slots = [taps.gradientAt?.slot, taps.largest?.slot, taps.topScores?.slot].filter((t): t is Tensor => t !== undefined);
  const region = customVjp(
    "sparse_linear",
    (xx, v, w) => [product(xx, addSparse(w, indices, v))],
    ([xx, v, w0], _outs, [g]) => {
      if (!g) return [null, null, null, ...slots.map(() => null)];
      // The rebuilt weight depends on the cotangent, so the runtime cannot merge it with the
      // forward's copy (common-subexpression elimination would keep that copy alive instead).
      const late = v.add(g.sum().mul(0).cast(v.dtype));
      const w = addSparse(w0, indices, late);
      const gx = g.matmul(opts.fanInFanOut ? w.transpose() : w);
      const g2 = g.reshape([-1, outFeatures]);
      const x2 = xx.reshape([-1, inFeatures]);
      const dense = opts.fanInFanOut ? x2.transpose().matmul(g2) : g2.transpose().matmul(x2);
      const flat = dense.reshape([rows * cols]);
      const gv = flat.gather(indices, 0).cast(v.dtype);
      const tapped: Tensor[] = [];
      if (taps.gradientAt) tapped.push(flat.gather(taps.gradientAt.indices, 0).cast(taps.gradientAt.slot.dtype));
      if (taps.largest) {
        const [, pos] = flat.abs().topk(taps.largest.m, 0, true);
        tapped.push(positionRows(pos, flat.gather(pos, 0), taps.largest.slot.dtype));
      }
      if (taps.topScores) {
        const { m, eps, exp, exclude } = taps.topScores;
        let score = flat.abs();
        if (exp !== 0)
          score = score.div(
            w
              .reshape([rows * cols])
              .abs()
              .add(eps)
              .pow(exp),
          );
        // Chosen positions sink far below every score (scores are >= 0; unused slots add 0).
        const sink = zeros([rows * cols], score.dtype).scatterAdd(
          exclude.indices,
          exclude.weight.cast(score.dtype).ne(0).cast(score.dtype).mul(EXCLUDED),
          0,
        );
        const [top, pos] = score.sub(sink).topk(m, 0, true);
        tapped.push(positionRows(pos, top, taps.topScores.slot.dtype));
      }
      // W's own gradient (the same dense product) is used only where W trains.
      return [gx, gv, dense.cast(w0.dtype), ...tapped];
    },
  );
  return region(x, values, weight, ...slots)[0];
}
