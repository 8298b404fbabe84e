/**
 * The calibration pass of `peftkit train` (--calibration-data FILE --calibration-samples N): the
 * first N examples of the file, in file order, batched without shuffling, streamed through the
 * frozen model (src/calibration/). The same file and N always give the same statistics, so a
 * resumed run recomputes the same initialisation.
 */
import { CalibrationError, runCalibration } from "../calibration/index.js";
import type { PreTrainedTokenizer } from "../io/tokenizer.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import type { CalibrationRequest, CalibrationStats } from "../tuners/tuner.js";
import { BatchStream, type DataFormat, loadDataset, type OnBadRecord } from "./data/index.js";

export interface CalibrationDataOptions {
  file: string;
  samples: number;
  batchSize: number;
  tokenizer: PreTrainedTokenizer;
  maxLength: number;
  onBadRecord?: OnBadRecord;
  /** Classification runs read the file as the training data's format and classes. */
  format?: DataFormat;
  labels?: readonly string[];
  /** Where progress lines go (one per about a tenth of the batches, and the last). */
  log: (line: string) => void;
}

/** Too few examples: one line naming the file and both counts. */
export class CalibrationDataError extends CalibrationError {}

export async function calibrateFromFile(
  model: PreTrainedModel,
  request: CalibrationRequest,
  o: CalibrationDataOptions,
): Promise<CalibrationStats> {
  const data = await loadDataset(o.file, {
    tokenizer: o.tokenizer,
    maxLength: o.maxLength,
    onBadRecord: o.onBadRecord ?? "error",
    ...(o.format ? { format: o.format } : {}),
    ...(o.labels ? { labels: o.labels } : {}),
  });
  if (data.examples.length < o.samples)
    throw new CalibrationDataError(
      `${o.file}: ${data.examples.length} usable example(s), fewer than the ${o.samples} --calibration-samples asks for`,
    );
  const examples = data.examples.slice(0, o.samples);
  const padId = o.tokenizer.padTokenId ?? o.tokenizer.eosTokenId ?? 0;
  const stream = new BatchStream(examples, { batchSize: o.batchSize, seed: 0, padId, shuffle: false });
  const total = stream.batchesPerEpoch;
  const every = Math.max(1, Math.ceil(total / 10));
  const what = [request.inputCovariance && "input covariances", (request.gradientSum || request.gradientSquareSum) && "gradients"]
    .filter(Boolean)
    .join(" and ");
  o.log(`calibration: ${what} of ${request.layers.length} layer(s) on the first ${o.samples} examples of ${o.file} (${total} batches)`);
  const t0 = performance.now();
  function* batches() {
    for (let i = 0; i < total; i++) yield stream.batch(0, i);
  }
  return runCalibration(model, batches(), request, {
    onProgress: (p) => {
      if (p.batches % every !== 0 && p.batches !== total) return;
      const s = (performance.now() - t0) / 1000;
      const loss = p.loss !== undefined ? ` loss ${p.loss.toFixed(4)}` : "";
      o.log(`calibration: batch ${p.batches}/${total} (${p.samples} examples, ${p.tokens} tokens)${loss} ${s.toFixed(1)} s`);
    },
  });
}
