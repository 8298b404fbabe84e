/** Test helper for SPT (not a test file): calibration statistics with random squared-gradient sums. */
import type { PreTrainedModel } from "../../models/pretrained.js";
import { type Matrix, matrix } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { calibrationRequest } from "../peft-model.js";
import type { CalibrationStats } from "../tuner.js";

/** Random Σ(∂L/∂W)² for the layers `config` asks about; layers ending in one of `hot` get 100× larger values. */
export function sptStats(model: PreTrainedModel, config: Record<string, unknown>, hot: readonly string[] = [], seed = 7): CalibrationStats {
  const req = calibrationRequest(model, config);
  const rng = new Rng(seed);
  const gradientSquareSum = new Map<string, Matrix>();
  for (const path of req?.layers ?? []) {
    const [d0, d1] = model.weights.get(`${path}.weight`)?.shape ?? [0, 0];
    const big = hot.some((h) => path.endsWith(h)) ? 100 : 1;
    gradientSquareSum.set(
      `${path}.weight`,
      matrix(
        d0,
        d1,
        Array.from({ length: d0 * d1 }, () => big * rng.next()),
      ),
    );
  }
  return { samples: 4, batches: 2, tokens: 20, inputCovariance: new Map(), gradientSum: new Map(), gradientSquareSum };
}
