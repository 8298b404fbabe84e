import { iota, type Tensor } from "../engine/trace/tensor.js";

/**
 * Rows of x [B, T, H] at the last real token of each sequence (mask [B, T], 1 = real), as
 * transformers' *ForSequenceClassification decoders pool; works for left and right padding.
 */
export function lastTokenPool(x: Tensor, mask: Tensor | undefined): Tensor {
  const [b, t] = x.shape;
  const positions = iota([b, t], 1, "f32");
  const idx = (mask ? positions.mul(mask.ne(0).cast("f32")) : positions).argmax(1, true);
  return x.takeAlongAxis(idx.unsqueeze(-1).expand([b, 1, x.shape[2]]), 1).squeeze(1);
}
