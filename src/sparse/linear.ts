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
import type { Tensor } from "../engine/trace/tensor.js";
import { customVjp } from "../engine/trace/trace.js";

export interface SparseLinearOptions {
  /** GPT-2's Conv1D stores weights [in, out] (y = x·W): the indices are positions in that layout. */
  fanInFanOut?: boolean;
}

/** W with `values` added at the flat positions `indices` (any layout; W's shape is kept). */
export function addSparse(weight: Tensor, indices: Tensor, values: Tensor): Tensor {
  const shape = [...weight.shape];
  const n = shape.reduce<number>((a, d) => a * (d as number), 1);
  return weight.reshape([n]).scatterAdd(indices, values.cast(weight.dtype), 0).reshape(shape);
}

/**
 * y = x·(W + S)ᵀ without bias, for x [..., in]; W [out, in] (or [in, out] with fanInFanOut) is
 * frozen, `indices` [k] (i32/i64) fixed, `values` [k] trained. The gradient reaches x and values.
 */
export function sparseLinear(x: Tensor, weight: Tensor, indices: Tensor, values: Tensor, opts: SparseLinearOptions = {}): Tensor {
  const [rows, cols] = weight.shape as [number, number];
  const inFeatures = opts.fanInFanOut ? rows : cols;
  const outFeatures = opts.fanInFanOut ? cols : rows;
  const product = (xx: Tensor, w: Tensor) => xx.matmul(opts.fanInFanOut ? w : w.transpose());
  const region = customVjp(
    "sparse_linear",
    (xx, v) => [product(xx, addSparse(weight, indices, v))],
    ([xx, v], _outs, [g]) => {
      if (!g) return [null, null];
      // The rebuilt weight depends on the cotangent, so the runtime cannot merge it with the
      // forward's copy (common-subexpression elimination would keep that copy alive instead).
      const late = v.add(g.sum().mul(0).cast(v.dtype));
      const w = addSparse(weight, indices, late);
      const gx = g.matmul(opts.fanInFanOut ? w.transpose() : w);
      const g2 = g.reshape([-1, outFeatures]);
      const x2 = xx.reshape([-1, inFeatures]);
      const dense = opts.fanInFanOut ? x2.transpose().matmul(g2) : g2.transpose().matmul(x2);
      const gv = dense
        .reshape([rows * cols])
        .gather(indices, 0)
        .cast(v.dtype);
      return [gx, gv];
    },
  );
  return region(x, values)[0];
}
