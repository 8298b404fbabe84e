/** PEFT methods: the public surface. */
import type { PreTrainedModel } from "../models/pretrained.js";
import { PeftModel } from "./peft-model.js";

export { PeftConfigError } from "./config.js";
export { type Adapter, BASE_ROW, PeftModel, parsePeftConfig } from "./peft-model.js";
export { supportedPeftTypes } from "./registry.js";
export { PeftTrainer, type PeftTrainerOptions, type TrainBatch } from "./train.js";
export type { ModelInfo, Tuner, WrapOptions } from "./tuner.js";

/** getPeftModel(model, config): attaches a fresh adapter named "default". */
export function getPeftModel(
  model: PreTrainedModel,
  config: Readonly<Record<string, unknown>>,
  opts: { adapterName?: string; seed?: number } = {},
): PeftModel {
  return PeftModel.create(model, config, opts);
}
