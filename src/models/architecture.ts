/** The contract every architecture module fulfils; the registry maps config.json's model_type to one. */
import type { Tensor } from "../engine/trace/tensor.js";
import type { ForwardContext } from "../nn/context.js";
import type { RawConfig } from "./config.js";

export type TaskHead = "base" | "causal_lm" | "masked_lm" | "sequence_classification" | "token_classification" | "image_classification";

export interface KeyValue {
  key: Tensor;
  value: Tensor;
}

export interface ArchInputs {
  inputIds?: Tensor;
  /** [B, past+seq] i64, 1 = real token. */
  attentionMask?: Tensor;
  /** [B, seq] i64 positions (decoders: from the mask when left-padded). */
  positionIds?: Tensor;
  tokenTypeIds?: Tensor;
  pixelValues?: Tensor;
  /** Decoders with a KV cache: [seq] i64 absolute positions of the new queries, and the past per layer. */
  cachePosition?: Tensor;
  past?: KeyValue[];
}

export interface ArchOutputs {
  logits?: Tensor;
  lastHiddenState?: Tensor;
  poolerOutput?: Tensor;
  present?: KeyValue[];
}

export interface DecoderShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

export interface Architecture<C = unknown> {
  readonly name: string;
  readonly modelTypes: readonly string[];
  readonly heads: readonly TaskHead[];
  /** Checkpoint prefix of the backbone in task models ("model.", "transformer.", "bert.", ...). */
  basePrefix(cfg: C): string;
  parseConfig(raw: RawConfig, opts: { numLabels?: number }): C;
  /** Every weight the model needs for this head, with its shape, under canonical (prefixed) names. */
  expectedWeights(cfg: C, head: TaskHead): Map<string, number[]>;
  /** Checkpoint keys that are buffers or duplicates, safe to ignore. */
  ignorable(name: string): boolean;
  /** Weights that tie to another one when the checkpoint omits them (e.g. lm_head → embed_tokens). */
  tiedWeights(cfg: C, head: TaskHead): Map<string, string>;
  forward(ctx: ForwardContext, cfg: C, inputs: ArchInputs, head: TaskHead): ArchOutputs;
  /** Present for decoders that support a KV cache. */
  decoderShape?(cfg: C): DecoderShape;
  /** Token ids of the config (bos/eos/pad), when it has them. */
  specialTokens(cfg: C): { bos: number[]; eos: number[]; pad: number | null };
  /** Names of the linear layers (paths without ".weight"), for target matching in tuners. */
  linearLayers(cfg: C, head: TaskHead): string[];
  /** Whether linear weights are stored [in, out] (GPT-2 Conv1D). */
  fanInFanOut: boolean;
  /** Token types the model embeds (BERT's type_vocab_size); absent = it takes no token_type_ids. */
  tokenTypes?(cfg: C): number;
}

/** Linear-layer paths: every layer's (keys of `perLayer(i)`), then the head's. */
export function linearLayerPaths(layers: number, perLayer: (i: number) => object, head: readonly string[]): string[] {
  return [...Array.from({ length: layers }, (_, i) => Object.keys(perLayer(i))).flat(), ...head];
}

/** The output linear of a decoder's task head. */
export function decoderHeadLinears(head: TaskHead): string[] {
  return head === "causal_lm" ? ["lm_head"] : head === "sequence_classification" || head === "token_classification" ? ["score"] : [];
}
