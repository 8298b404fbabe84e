/** model_type → architecture. A new architecture is one module plus one line here. */
import type { Architecture } from "./architecture.js";
import { BERT } from "./bert.js";
import { GPT2 } from "./gpt2.js";
import { LLAMA } from "./llama.js";
import { VIT } from "./vit.js";

const ARCHITECTURES: readonly Architecture<never>[] = [LLAMA, GPT2, BERT, VIT] as unknown as Architecture<never>[];

export function architectureFor(modelType: string): Architecture<unknown> | undefined {
  return ARCHITECTURES.find((a) => a.modelTypes.includes(modelType)) as Architecture<unknown> | undefined;
}

export function supportedModelTypes(): string[] {
  return ARCHITECTURES.flatMap((a) => [...a.modelTypes]);
}
