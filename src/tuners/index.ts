/** PEFT methods: the public surface. */
import type { PreTrainedModel } from "../models/pretrained.js";
import { type AddAdapterOptions, PeftModel } from "./peft-model.js";

export { PeftConfigError } from "./config.js";
export { saveConvertedLora } from "./lora/convert.js";
export { type Adapter, type AddAdapterOptions, BASE_ROW, calibrationRequest, PeftModel, parsePeftConfig } from "./peft-model.js";
export { registerTuner, supportedPeftTypes } from "./registry.js";
export { PeftTrainer, type PeftTrainerOptions, type TrainBatch } from "./train.js";
export type { CalibrationRequest, CalibrationStats, ModelInfo, Tuner, WrapOptions } from "./tuner.js";

/** getPeftModel(model, config): attaches a fresh adapter named "default". */
export function getPeftModel(
  model: PreTrainedModel,
  config: Readonly<Record<string, unknown>>,
  opts: AddAdapterOptions & { adapterName?: string } = {},
): PeftModel {
  return PeftModel.create(model, config, opts);
}
