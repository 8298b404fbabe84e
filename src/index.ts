/** peftkit's public API. */
export * from "./engine/index.js";
export {
  AutoModel,
  AutoModelForCausalLM,
  AutoModelForImageClassification,
  AutoModelForSequenceClassification,
  AutoModelForTokenClassification,
} from "./models/auto.js";
export type { GenerateOptions } from "./models/generate.js";
export { PreTrainedModel, type ForwardInputs, type ModelOutput, type LoadOptions } from "./models/pretrained.js";
export { supportedModelTypes } from "./models/registry.js";
export { ModelError } from "./nn/context.js";
export { AutoTokenizer, PreTrainedTokenizer, TokenizerError } from "./io/tokenizer.js";
export { SafetensorsFile, SafetensorsError, readSafetensors, writeSafetensors } from "./io/safetensors.js";
export { CheckpointError, openCheckpoint, loadConfig } from "./io/hf-folder.js";
