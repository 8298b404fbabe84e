/**
 * Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"):
 * n trainable soft-token embeddings are prepended to the input embeddings of a frozen model. The
 * model sees them as ordinary tokens (attention mask 1, positions 0..n−1 just before each row's
 * first real token, so left padding changes nothing), so logits come back for n + T positions; training pads labels with n × −100. Saved as PEFT's
 * `prompt_embeddings` [n, token_dim].
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { concat, type Tensor } from "../../engine/trace/tensor.js";
import { PreTrainedTokenizer } from "../../io/tokenizer.js";
import type { ForwardContext } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type PromptTuningConfig, parsePromptTuningConfig, promptTuningConfigJson, resolvePromptLearning } from "./config.js";

export const PROMPT_KEY = "prompt_embeddings";

/** The input word-embedding table, found as PEFT does: the embedding whose rows are the vocabulary. */
export function wordEmbeddingName(info: ModelInfo): string | null {
  const names = info.weightNames();
  for (const suffix of ["embeddings.word_embeddings.weight", "embed_tokens.weight", "wte.weight"]) {
    const hit = names.find((n) => n === suffix || n.endsWith(`.${suffix}`));
    if (hit) return hit;
  }
  return null;
}

function shapeOf(info: ModelInfo, c: PromptTuningConfig): [number, number] {
  const r = resolvePromptLearning(info, c);
  if (r.tokenDim !== info.hidden)
    throw new PeftConfigError(`prompt tuning: token_dim ${r.tokenDim} must equal the model's hidden size ${info.hidden}`);
  return [r.numVirtualTokens * (r.numTransformerSubmodules ?? 1), r.tokenDim];
}

/**
 * Token ids of the init text with a tokenizer folder (tokenizer_name_or_path, else the model's
 * folder), read synchronously because adapters are created synchronously. With special tokens,
 * as PEFT's `tokenizer(text)["input_ids"]`.
 */
export function initTextIds(text: string, dir: string): number[] {
  const read = (name: string, required: boolean): Record<string, unknown> | null => {
    try {
      return JSON.parse(readFileSync(join(dir, name), "utf8")) as Record<string, unknown>;
    } catch (e) {
      if (!required) return null;
      throw new PeftConfigError(
        `prompt tuning TEXT init: cannot read ${join(dir, name)} (${(e as Error).message}); give prompt_tuning_init_token_ids instead`,
      );
    }
  };
  const tokenizerJson = read("tokenizer.json", true) as Record<string, unknown>;
  const tok = new PreTrainedTokenizer({
    dir,
    tokenizerJson,
    config: read("tokenizer_config.json", false) ?? {},
    specialTokensMap: read("special_tokens_map.json", false),
    chatTemplate: null,
  } as ConstructorParameters<typeof PreTrainedTokenizer>[0]);
  return tok.encode(text);
}

/** `ids` repeated and cut to `total`, as PEFT does with the init text's tokens. */
export function fitIds(ids: readonly number[], total: number): number[] {
  return Array.from({ length: total }, (_, i) => ids[i % ids.length]);
}

function create(info: ModelInfo, c: PromptTuningConfig, rng: Rng): CreatedAdapter {
  // The soft tokens sit in the sequence, so a per-token head would score n more positions than
  // there are labels; rather than guess which outputs to drop, refuse in one line.
  if (info.model.head === "token_classification")
    throw new PeftConfigError(
      "prompt tuning does not support token classification: its soft tokens shift the per-token outputs against the labels (use prefix tuning, which adds no positions, or LoRA)",
    );
  const [rows, dim] = shapeOf(info, c);
  Object.assign(c, resolvePromptLearning(info, c));
  let data: Float32Array;
  // PEFT uses the vocabulary only when not in inference mode (a loaded adapter overwrites it anyway).
  if (c.promptTuningInit === "RANDOM" || c.inferenceMode) data = fillNormal(rows * dim, 1, rng);
  else {
    const embName = wordEmbeddingName(info);
    if (!embName)
      throw new PeftConfigError(`prompt tuning ${c.promptTuningInit} init: this ${info.modelType} model has no word embeddings`);
    const emb = info.weight(embName);
    const vocab = emb.shape[0];
    let ids: number[];
    if (c.promptTuningInit === "SAMPLE_VOCAB") ids = Array.from({ length: rows }, () => Math.floor(rng.next() * vocab));
    else {
      let textIds = c.promptTuningInitTokenIds;
      if (!textIds) {
        const dir = c.tokenizerNameOrPath ?? info.model.dir;
        if (!dir) throw new PeftConfigError("prompt tuning TEXT init: set tokenizer_name_or_path or prompt_tuning_init_token_ids");
        textIds = initTextIds(c.promptTuningInitText as string, dir);
      }
      if (textIds.length === 0) throw new PeftConfigError("prompt tuning TEXT init: the init text gives no tokens");
      const bad = textIds.find((t) => t >= vocab);
      if (bad !== undefined)
        throw new PeftConfigError(`prompt tuning TEXT init: token id ${bad} is outside the model's vocabulary (${vocab})`);
      ids = fitIds(textIds, rows);
    }
    const src = emb.data as Float32Array;
    data = new Float32Array(rows * dim);
    ids.forEach((t, i) => {
      data.set(src.subarray(t * dim, (t + 1) * dim), i * dim);
    });
  }
  return { tensors: new Map<string, HostTensor>([[PROMPT_KEY, hostTensor("f32", [rows, dim], data)]]) };
}

class PromptTuningContext extends DelegatingContext {
  constructor(
    inner: ForwardContext,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
  }

  override softPrompt(batch: Tensor): Tensor | null {
    const p = this.opts.tensor(PROMPT_KEY);
    const [n, d] = p.shape;
    const mine = p.unsqueeze(0).expand([batch.shape[0], n, d]);
    const inner = this.inner.softPrompt(batch);
    return inner ? concat([mine, inner], 1) : mine;
  }
}

export const PROMPT_TUNING: Tuner<PromptTuningConfig> = {
  peftType: "PROMPT_TUNING",
  parseConfig: parsePromptTuningConfig,
  toJson: promptTuningConfigJson,
  create,
  expectedTensors: (info, c) => new Map([[PROMPT_KEY, shapeOf(info, c)]]),
  wrap: (base, info, c, opts) => {
    shapeOf(info, c);
    return new PromptTuningContext(base, opts);
  },
  supportsMixedBatch: false,
  promptLearning: true,
  virtualTokens: (c) => c.numVirtualTokens,
};
