/**
 * LyCORIS's two training-only dropouts, on a layer's update Δy = x·ΔWᵀ (PEFT's LoHaLayer /
 * LoKrLayer get_delta_weight and forward):
 * - rank dropout drops output rows of ΔW: keep_o = [u_o > p], optionally divided by mean(keep)
 *   (LoHa always, LoKr when rank_dropout_scale); dropping a row of ΔW is scaling feature o of Δy;
 * - module dropout skips the whole update with probability p (kept when u > p, no rescale).
 * Randomness comes from the step's seed plus a per-layer salt, so layers draw different masks
 * and a step replays exactly.
 */
import { randomUniform, type Tensor } from "../../engine/trace/tensor.js";
import { layerSeed } from "../layer-seed.js";

export interface DropoutSpec {
  rankDropout: number;
  moduleDropout: number;
  /** Divide the rank mask by its mean (LoHa: always; LoKr: rank_dropout_scale). */
  rescale: boolean;
}

/** Δy [..., out] with the dropouts of a training step applied; unchanged when seed is null. */
export function lycorisDropout(delta: Tensor, key: string, d: DropoutSpec, seed: Tensor | null): Tensor {
  if (!seed) return delta;
  let out = delta;
  if (d.rankDropout > 0) {
    const rows = delta.dim(-1);
    let keep = randomUniform(layerSeed(seed, key, 0), [rows], delta.dtype)
      .gt(d.rankDropout)
      .cast(delta.dtype);
    // PEFT divides by the mean even when every row dropped (0/0); a floor keeps that step finite.
    if (d.rescale) keep = keep.div(keep.mean().maximum(1 / rows));
    out = out.mul(keep);
  }
  if (d.moduleDropout > 0) {
    const keep = randomUniform(layerSeed(seed, key, 1), [1], delta.dtype)
      .gt(d.moduleDropout)
      .cast(delta.dtype);
    out = out.mul(keep);
  }
  return out;
}
