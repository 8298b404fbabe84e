/**
 * Tokenisation of typed records into training examples: token ids plus per-token labels
 * (-100 = no loss) for language modelling, or a class id for classification.
 *
 * Truncation to `maxLength` (the rule is the same everywhere: keep the start), except:
 * - prompt_completion keeps the completion (and its EOS) whole whenever it fits next to at least
 *   one prompt token, and cuts the prompt from its start instead (keeping the prompt's end, which
 *   leads into the completion). When the completion alone is too long, the prompt keeps its last
 *   ⌊room/2⌋ tokens and the completion is cut at its end (losing the EOS).
 * - classification keeps the tokenizer's special tokens around the text ([CLS] ... [SEP]).
 * - pair_classification uses the tokenizer's pair template ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>)
 *   and cuts the longer text first ("longest_first", see longestFirstLengths in io/tokenizer.ts).
 * - token_classification keeps the special tokens and the first words; the tags of cut words are lost.
 */
import type { ChatMessage, PreTrainedTokenizer } from "../../io/tokenizer.js";
import { DatasetError } from "./errors.js";
import { RecordError, type TypedRecord } from "./formats.js";

export const IGNORE_INDEX = -100;

export interface Example {
  inputIds: number[];
  /**
   * Language modelling: one label per token (the token itself), -100 where no loss is taken.
   * Token classification: one class id per token, on the first sub-token of each word; -100 elsewhere.
   * Absent for (pair) classification.
   */
  labels?: number[];
  /** Classification: the class id. */
  label?: number;
  /**
   * Pair classification: the tokenizer's token type ids (BERT: 0 on `[CLS] A [SEP]`, 1 on
   * `B [SEP]`), present when some id is not 0. Fed only to models with token types (see
   * PreTrainedModel.usesTokenTypeIds); absent means all 0.
   */
  tokenTypeIds?: number[];
  /** Where the record came from (`data.jsonl:17`), for messages about this example. */
  source: string;
  /**
   * The record's `task` field (a name or a non-negative integer), in any format: the task whose
   * routing a multi-task method (POLY) uses for this example.
   */
  task?: string | number;
  /** `task` resolved to a row of the run's routing table (src/train/data/tasks.ts); batches carry it as taskIds. */
  taskId?: number;
}

export interface TokenizeSettings {
  tokenizer: PreTrainedTokenizer;
  /** Longest example in tokens; null = no truncation. */
  maxLength: number | null;
  /** Overrides the tokenizer's chat template. */
  chatTemplate?: string;
  /** Extra chat template variables (e.g. `{ enable_thinking: false }`). */
  chatTemplateVars?: Record<string, unknown>;
}

/** Ids the tokenizer's post-processor puts before and after a single sequence (BOS, [CLS]/[SEP]). */
export function specialFrame(tok: PreTrainedTokenizer): { prefix: number[]; suffix: number[] } {
  const probe = "peftkit";
  const bare = tok.encode(probe, { addSpecialTokens: false });
  const framed = tok.encode(probe, { addSpecialTokens: true });
  for (let at = 0; at + bare.length <= framed.length; at++) {
    if (bare.every((id, k) => framed[at + k] === id)) return { prefix: framed.slice(0, at), suffix: framed.slice(at + bare.length) };
  }
  return { prefix: [], suffix: [] };
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && isPrefix(a, b);
}

function isPrefix(a: readonly number[], b: readonly number[]): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class RecordTokenizer {
  private readonly frame: { prefix: number[]; suffix: number[] };
  private readonly eos: number | null;
  private checkedGenerationPrompt = false;

  constructor(
    private readonly s: TokenizeSettings,
    private readonly labelIds?: Map<string, number>,
  ) {
    this.frame = specialFrame(s.tokenizer);
    this.eos = s.tokenizer.eosTokenId;
  }

  /** The shortest maxLength that leaves room for one token of content (and an EOS where one is added). */
  minLength(format: TypedRecord["format"]): number {
    if (format === "classification" || format === "token_classification") return this.frame.prefix.length + this.frame.suffix.length + 1;
    if (format === "pair_classification") {
      const f = this.s.tokenizer.pairSpecialFrame();
      return f.prefix.length + f.middle.length + f.suffix.length + 2;
    }
    if (format === "chat") return 1;
    return this.frame.prefix.length + 2;
  }

  get eosId(): number | null {
    return this.eos;
  }

  /** Returns the example (without `source`) and whether it was cut to maxLength. */
  tokenize(rec: TypedRecord): { example: Omit<Example, "source">; truncated: boolean } {
    const tok = this.s.tokenizer;
    const max = this.s.maxLength ?? Number.POSITIVE_INFINITY;
    switch (rec.format) {
      case "text": {
        const body = [...this.frame.prefix, ...tok.encode(rec.text, { addSpecialTokens: false })];
        if (this.eos !== null && body[body.length - 1] !== this.eos) body.push(this.eos);
        const ids = body.length > max ? body.slice(0, max) : body;
        return { example: { inputIds: ids, labels: [...ids] }, truncated: ids.length < body.length };
      }
      case "prompt_completion": {
        if (this.eos === null)
          throw new DatasetError("prompt_completion needs an EOS token to end the completion, and the tokenizer has none");
        const pre = this.frame.prefix;
        let prompt = tok.encode(rec.prompt, { addSpecialTokens: false });
        let tail = [...tok.encode(rec.completion, { addSpecialTokens: false }), this.eos];
        const room = max - pre.length;
        const truncated = prompt.length + tail.length > room;
        if (truncated) {
          if (tail.length < room) prompt = prompt.slice(prompt.length - (room - tail.length));
          else {
            const keep = Math.min(prompt.length, Math.floor(room / 2));
            prompt = prompt.slice(prompt.length - keep);
            tail = tail.slice(0, room - keep);
          }
        }
        const inputIds = [...pre, ...prompt, ...tail];
        const labels = [...new Array<number>(pre.length + prompt.length).fill(IGNORE_INDEX), ...tail];
        return { example: { inputIds, labels }, truncated };
      }
      case "classification": {
        const { prefix, suffix } = this.frame;
        let body = tok.encode(rec.text, { addSpecialTokens: false });
        const room = max - prefix.length - suffix.length;
        const truncated = body.length > room;
        if (truncated) body = body.slice(0, room);
        return { example: { inputIds: [...prefix, ...body, ...suffix], label: this.classId(rec.label) }, truncated };
      }
      case "pair_classification": {
        const whole = tok.encodePairWithTypes(rec.text, rec.textPair);
        const enc = whole.ids.length > max ? tok.encodePairWithTypes(rec.text, rec.textPair, { maxLength: max }) : whole;
        const example: Omit<Example, "source"> = { inputIds: enc.ids, label: this.classId(rec.label) };
        if (enc.tokenTypeIds.some((t) => t !== 0)) example.tokenTypeIds = enc.tokenTypeIds;
        return { example, truncated: enc.ids.length < whole.ids.length };
      }
      case "token_classification": {
        const { prefix, suffix } = this.frame;
        const pieces = this.wordPieces(rec.tokens);
        const body: number[] = [];
        const tags: number[] = [];
        pieces.forEach((ids, w) => {
          const tag = this.classId(rec.tags[w]);
          ids.forEach((id, k) => {
            body.push(id);
            tags.push(k === 0 ? tag : IGNORE_INDEX);
          });
        });
        const room = max - prefix.length - suffix.length;
        const truncated = body.length > room;
        const n = truncated ? room : body.length;
        const none = (k: number) => new Array<number>(k).fill(IGNORE_INDEX);
        return {
          example: {
            inputIds: [...prefix, ...body.slice(0, n), ...suffix],
            labels: [...none(prefix.length), ...tags.slice(0, n), ...none(suffix.length)],
          },
          truncated,
        };
      }
      case "chat": {
        const { inputIds, labels } = this.chat(rec.messages);
        const truncated = inputIds.length > max;
        return {
          example: truncated ? { inputIds: inputIds.slice(0, max), labels: labels.slice(0, max) } : { inputIds, labels },
          truncated,
        };
      }
    }
  }

  private classId(label: number | string): number {
    const id = typeof label === "number" ? label : this.labelIds?.get(label);
    if (id === undefined) throw new RecordError(`label ${JSON.stringify(label)} has no class id`);
    return id;
  }

  /**
   * The sub-tokens of each word of `words` joined with single spaces. Each word is encoded on its
   * own (with the space before it, so byte-level BPE sees "Ġword" as in the joined text), and the
   * pieces must add up to the joined text's encoding; when a tokenizer merges across words, the
   * split comes from encoding growing prefixes of the text instead.
   */
  private wordPieces(words: readonly string[]): number[][] {
    const tok = this.s.tokenizer;
    const joined = tok.encode(words.join(" "), { addSpecialTokens: false });
    const pieces = words.map((w, i) => tok.encode(i === 0 ? w : ` ${w}`, { addSpecialTokens: false }));
    if (sameIds(pieces.flat(), joined)) return this.checkPieces(pieces, words);
    const out: number[][] = [];
    let before: number[] = [];
    for (let i = 0; i < words.length; i++) {
      const upTo = i === words.length - 1 ? joined : tok.encode(words.slice(0, i + 1).join(" "), { addSpecialTokens: false });
      if (!isPrefix(before, upTo))
        throw new RecordError(
          `field "tokens": the tokenizer does not split "${words.slice(0, i + 1).join(" ")}" at word boundaries, so tags cannot be placed`,
        );
      out.push(upTo.slice(before.length));
      before = upTo;
    }
    return this.checkPieces(out, words);
  }

  private checkPieces(pieces: number[][], words: readonly string[]): number[][] {
    const empty = pieces.findIndex((p) => p.length === 0);
    if (empty >= 0)
      throw new RecordError(`field "tokens[${empty}]": ${JSON.stringify(words[empty])} encodes to no token, so its tag cannot be placed`);
    return pieces;
  }

  private render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): number[] {
    try {
      return this.s.tokenizer.applyChatTemplate(messages, {
        tokenize: true,
        addGenerationPrompt,
        chatTemplate: this.s.chatTemplate,
        templateVars: this.s.chatTemplateVars,
      });
    } catch (e) {
      throw new RecordError(`chat template failed: ${(e as Error).message}`);
    }
  }

  /**
   * Loss on assistant turns only. The conversation is rendered whole, then for each assistant
   * message the prefix before it (with the generation prompt that opens its turn) and the prefix
   * through it; their token counts bound the assistant's tokens, end-of-turn marker included.
   * This is only sound when every such prefix renders as a prefix of the whole, which is checked.
   */
  private chat(messages: readonly ChatMessage[]): { inputIds: number[]; labels: number[] } {
    const full = this.render(messages, false);
    const labels = new Array<number>(full.length).fill(IGNORE_INDEX);
    const unstable = (upTo: number) =>
      new RecordError(
        `the chat template does not render the conversation through messages[${upTo}] as a prefix of the whole conversation, so the assistant tokens cannot be located; ` +
          "pass a training chat template (option chatTemplate) that renders earlier turns unchanged",
      );
    for (let i = 0; i < messages.length; i++) {
      if (messages[i].role !== "assistant") continue;
      if (!this.checkedGenerationPrompt) {
        // A template that always appends the assistant header would put it inside the span.
        const through = this.render(messages.slice(0, i + 1), false);
        const withPrompt = this.render(messages.slice(0, i + 1), true);
        if (withPrompt.length === through.length && isPrefix(withPrompt, through)) {
          throw new DatasetError(
            "the chat template ignores add_generation_prompt (it always opens a new assistant turn), so the end of an assistant turn cannot be located; pass a training chat template (option chatTemplate)",
          );
        }
        this.checkedGenerationPrompt = true;
      }
      let start = 0;
      if (i > 0) {
        const before = this.render(messages.slice(0, i), true);
        if (!isPrefix(before, full)) throw unstable(i - 1);
        start = before.length;
      } else {
        // A conversation opening with the assistant: the template may still write a preamble.
        try {
          const before = this.s.tokenizer.applyChatTemplate([], {
            tokenize: true,
            addGenerationPrompt: true,
            chatTemplate: this.s.chatTemplate,
            templateVars: this.s.chatTemplateVars,
          });
          if (isPrefix(before, full)) start = before.length;
        } catch {
          start = 0;
        }
      }
      const through = this.render(messages.slice(0, i + 1), false);
      if (!isPrefix(through, full)) throw unstable(i);
      for (let k = start; k < through.length; k++) labels[k] = full[k];
    }
    return { inputIds: full, labels };
  }
}
