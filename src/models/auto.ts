/** transformers-style entry points: AutoModel*.fromPretrained(dir). */
import { type LoadOptions, PreTrainedModel } from "./pretrained.js";

export const AutoModel = {
  fromPretrained: (dir: string, opts: LoadOptions = {}) => PreTrainedModel.load(dir, "base", opts),
};

export const AutoModelForCausalLM = {
  fromPretrained: (dir: string, opts: LoadOptions = {}) => PreTrainedModel.load(dir, "causal_lm", opts),
};

export const AutoModelForMaskedLM = {
  fromPretrained: (dir: string, opts: LoadOptions = {}) => PreTrainedModel.load(dir, "masked_lm", opts),
};

export const AutoModelForSequenceClassification = {
  fromPretrained: (dir: string, opts: LoadOptions = {}) => PreTrainedModel.load(dir, "sequence_classification", opts),
};

export const AutoModelForTokenClassification = {
  fromPretrained: (dir: string, opts: LoadOptions = {}) => PreTrainedModel.load(dir, "token_classification", opts),
};

export const AutoModelForImageClassification = {
  fromPretrained: (dir: string, opts: LoadOptions = {}) => PreTrainedModel.load(dir, "image_classification", opts),
};
