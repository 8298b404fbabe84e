/** peftkit's public API. */
import { installNodeCompileCache } from "./io/compile-cache.js";

// In Node, compiled models persist across processes (PEFTKIT_CACHE); a browser entry would not install this.
installNodeCompileCache();

export {
  type CalibrationBatch,
  CalibrationError,
  type CalibrationOptions,
  type CalibrationProgress,
  runCalibration,
} from "./calibration/index.js";
export {
  CompeftError,
  type CompeftOptions,
  type CompressedAdapter,
  compressTensors,
  decompressAdapter,
} from "./compress/compeft.js";
export { COMPEFT_WEIGHTS, compressAdapterFolder, decompressAdapterFolder, readCompeftFile } from "./compress/file.js";
export * from "./engine/index.js";
export { CompileCacheError, cacheLocation, DiskCompileCache, nodeCompileCache } from "./io/compile-cache.js";
export { CheckpointError, loadConfig, openCheckpoint } from "./io/hf-folder.js";
export { type LabelConfig, LabelConfigError, readLabelConfig, writeLabelConfig } from "./io/label-config.js";
export { readSafetensors, SafetensorsError, SafetensorsFile, writeSafetensors } from "./io/safetensors.js";
export { AutoTokenizer, PreTrainedTokenizer, TokenizerError } from "./io/tokenizer.js";
export {
  AutoModel,
  AutoModelForCausalLM,
  AutoModelForImageClassification,
  AutoModelForMaskedLM,
  AutoModelForSequenceClassification,
  AutoModelForTokenClassification,
} from "./models/auto.js";
export type { GenerateOptions } from "./models/generate.js";
export { type ForwardInputs, type LoadOptions, type ModelOutput, PreTrainedModel } from "./models/pretrained.js";
export { supportedModelTypes } from "./models/registry.js";
export { ModelError } from "./nn/context.js";
export { PruneError, pruneHiddenSize } from "./prune/hidden-size.js";
export { loadSparseDeltas, saveSparseDeltas } from "./sparse/file.js";
export * from "./sparse/index.js";
export { LayerSelectionError } from "./train/layer-selection.js";
export { hftPolicy, lisaPolicy, type SelectionPolicy, SelectiveTrainer } from "./train/selective.js";
export { applyTrainedTensors } from "./train/selective-run.js";
export * from "./tuners/index.js";
export { patKeptChannels } from "./tuners/pat/index.js";
export { weightsFingerprint } from "./util/fingerprint.js";
