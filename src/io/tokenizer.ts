import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { type ChatMessage, renderChatTemplate, selectChatTemplate } from "./chat-template.js";
import { TokenizerError } from "./tokenizer-error.js";

export type { ChatMessage } from "./chat-template.js";
export { TokenizerError } from "./tokenizer-error.js";

export type PaddingSide = "left" | "right";

export interface EncodeOptions {
  /** Add the tokens the tokenizer's post-processor puts around a sequence (BOS, [CLS]/[SEP], ...). Default true. */
  addSpecialTokens?: boolean;
  /** A second text, joined by the post-processor's pair template (RoBERTa `<s> A </s></s> B </s>`, BERT `[CLS] A [SEP] B [SEP]`). */
  textPair?: string;
}

export interface PairEncodeOptions extends EncodeOptions {
  /** Longest result in ids, special tokens included; the longer text is cut first ("longest_first"). */
  maxLength?: number;
}

/** The ids a post-processor puts around a pair of sequences: prefix A middle B suffix. */
export interface PairFrame {
  prefix: number[];
  middle: number[];
  suffix: number[];
}

/**
 * The token type id of each part of a pair encoding (prefix A middle B suffix), as the Rust
 * tokenizers library's post-processors assign them (what transformers' fast tokenizers return as
 * token_type_ids): TemplateProcessing gives every piece of its `pair` template its own `type_id`
 * ("[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1" for BERT; https://docs.rs/tokenizers/0.21.4/src/tokenizers/processors/template.rs.html),
 * BertProcessing 0 through the first [SEP] and 1 after it, RobertaProcessing 0 everywhere (its
 * `pair_type_ids = vec![0; ...]`; RoBERTa has no token types). Without a post-processor that adds
 * special tokens, the second sequence keeps the type 1 the library encodes it with.
 */
export interface PairTypeFrame {
  prefix: number[];
  a: number;
  middle: number[];
  b: number;
  suffix: number[];
}

/** A pair encoding with its token type ids (one per id). */
export interface PairEncoding {
  ids: number[];
  tokenTypeIds: number[];
}

/**
 * Lengths of the two sequences of a pair cut to `room` tokens in all, as the Rust tokenizers
 * library's "longest_first" does (transformers' fast tokenizers): the shorter keeps its length
 * when the longer can take the whole cut; otherwise the shorter gets ⌊room/2⌋ and the longer the
 * rest. Sides that fit are not cut.
 */
export function longestFirstLengths(a: number, b: number, room: number): [number, number] {
  if (a + b <= room) return [a, b];
  const swap = a > b;
  let n1 = swap ? b : a;
  let n2 = n1 > room ? n1 : Math.max(n1, room - n1);
  if (n1 + n2 > room) {
    n1 = Math.floor(room / 2);
    n2 = n1 + (room % 2);
  }
  return swap ? [n2, n1] : [n1, n2];
}

export interface DecodeOptions {
  /** Drop every id in `allSpecialIds` before decoding. Default false. */
  skipSpecialTokens?: boolean;
  /** Override tokenizer_config.json's `clean_up_tokenization_spaces` (which defaults to false here). */
  cleanUpTokenizationSpaces?: boolean;
}

export interface BatchOptions {
  /** "longest": pad to the longest row; "max_length": pad to `maxLength`; false: rows keep their lengths. */
  padding?: "longest" | "max_length" | false;
  /** Target length for `padding: "max_length"` and limit for `truncation`; defaults to `model_max_length`. */
  maxLength?: number;
  /** Cut rows longer than `maxLength`, keeping the special tokens, on tokenizer_config's `truncation_side`. */
  truncation?: boolean;
  /** Defaults to tokenizer_config.json's `padding_side`, else "right". */
  paddingSide?: PaddingSide;
  addSpecialTokens?: boolean;
}

export interface BatchEncoding {
  inputIds: number[][];
  attentionMask: number[][];
}

export interface ChatTemplateOptions {
  /** Append the prompt that opens the assistant's turn. Default false. */
  addGenerationPrompt?: boolean;
  /** Return token ids (encoded without adding special tokens again) instead of the rendered text. */
  tokenize?: boolean;
  /** Extra template variables (e.g. `tools`, `enable_thinking`); they override the standard ones. */
  templateVars?: Record<string, unknown>;
  /** Render this template instead of the tokenizer's own. */
  chatTemplate?: string;
}

/** The special-token fields of tokenizer_config.json / special_tokens_map.json, as plain strings. */
const NAMED_SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;
type NamedSpecialToken = (typeof NAMED_SPECIAL_TOKENS)[number];

/** Token fields whose id callers rely on; a value missing from the vocabulary is an error for these. */
const REQUIRED_IN_VOCAB: readonly NamedSpecialToken[] = ["bos_token", "eos_token", "unk_token", "pad_token"];

/** transformers writes this sentinel (int(1e30)) when a model has no length limit. */
const UNBOUNDED_MAX_LENGTH = 1e18;

type Json = Record<string, unknown>;

/** A special token value: a string, an AddedToken object `{content, ...}`, or null/absent. */
function tokenContent(value: unknown, file: string, field: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return value;
  if (typeof value === "object" && !Array.isArray(value)) {
    const content = (value as { content?: unknown }).content;
    if (typeof content === "string") return content;
  }
  throw new TokenizerError(`${file}: ${field} must be a string or an object with a string "content"`);
}

async function readJson(path: string, required: boolean): Promise<Json | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && !required) return null;
    throw new TokenizerError(`cannot read ${path}: ${(e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(`${path}: malformed JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new TokenizerError(`${path}: expected a JSON object at the top level`);
  }
  return parsed as Json;
}

async function readTextIfPresent(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new TokenizerError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

function checkLength(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0) throw new TokenizerError(`${what} must be a non-negative integer, got ${value}`);
  return value;
}

// biome-ignore lint/complexity/noStaticOnlyClass: the entry point mirrors transformers' AutoTokenizer.from_pretrained
export class AutoTokenizer {
  /**
   * Loads a Hugging Face tokenizer folder: tokenizer.json (required), tokenizer_config.json and
   * special_tokens_map.json (optional; the latter overrides the former's token fields, as in
   * transformers), and a chat template from tokenizer_config.json, chat_template.jinja or
   * chat_template.json. Reads only local files.
   */
  static async fromPretrained(dir: string): Promise<PreTrainedTokenizer> {
    try {
      const s = await stat(dir);
      if (!s.isDirectory()) throw new TokenizerError(`${dir} is not a folder (expected a tokenizer folder holding tokenizer.json)`);
    } catch (e) {
      if (e instanceof TokenizerError) throw e;
      throw new TokenizerError(`tokenizer folder ${dir} cannot be read: ${(e as Error).message}`);
    }
    const tokenizerPath = join(dir, "tokenizer.json");
    const configPath = join(dir, "tokenizer_config.json");
    const mapPath = join(dir, "special_tokens_map.json");
    try {
      await stat(tokenizerPath);
    } catch {
      throw new TokenizerError(
        `folder ${dir} has no tokenizer.json; peftkit needs the fast-tokenizer file (tokenizer.json), not only vocab/merges or a SentencePiece model`,
      );
    }
    const tokenizerJson = (await readJson(tokenizerPath, true))!;
    const config = (await readJson(configPath, false)) ?? {};
    const specialMap = await readJson(mapPath, false);

    let chatTemplate = selectChatTemplate(config.chat_template, configPath);
    if (chatTemplate === null) chatTemplate = await readTextIfPresent(join(dir, "chat_template.jinja"));
    if (chatTemplate === null) {
      const ctPath = join(dir, "chat_template.json");
      const ct = await readJson(ctPath, false);
      if (ct !== null) chatTemplate = selectChatTemplate(ct.chat_template, ctPath);
    }
    return new PreTrainedTokenizer({
      dir,
      tokenizerJson,
      config,
      specialTokensMap: specialMap,
      chatTemplate,
    });
  }
}

interface TokenizerParts {
  dir: string;
  tokenizerJson: Json;
  config: Json;
  specialTokensMap: Json | null;
  chatTemplate: string | null;
}

/** A loaded tokenizer: encoding, decoding, batching with padding/truncation, and chat templates. */
export class PreTrainedTokenizer {
  /** The folder this tokenizer was loaded from. */
  readonly dir: string;
  /** Number of ids the tokenizer can produce, added tokens included (transformers' `len(tokenizer)`). */
  readonly vocabSize: number;
  /** tokenizer_config.json's `model_max_length`, or null when absent or the "unbounded" sentinel. */
  readonly modelMaxLength: number | null;
  readonly paddingSide: PaddingSide;
  readonly truncationSide: PaddingSide;
  /** The template applyChatTemplate renders by default, or null. */
  chatTemplate: string | null;

  private readonly tk: Tokenizer;
  private readonly tokens = new Map<NamedSpecialToken, string | null>();
  private readonly additionalSpecial: string[] = [];
  private readonly addedSpecialIds: number[] = [];
  private readonly cleanUpSpaces: boolean;
  private readonly files: { tokenizer: string; config: string; map: string };
  /** Ids the post-processor puts before/after one sequence; computed on first use. */
  private frame: { prefix: number[]; suffix: number[] } | null = null;
  private pairFrameIds: PairFrame | null = null;
  private readonly pairTypes = new Map<boolean, PairTypeFrame>();
  /** The post-processor's type, and its parts' for a Sequence. */
  private readonly postProcessorTypes: string[];

  constructor(parts: TokenizerParts) {
    const { dir, tokenizerJson, config, specialTokensMap } = parts;
    this.dir = dir;
    this.files = {
      tokenizer: join(dir, "tokenizer.json"),
      config: join(dir, "tokenizer_config.json"),
      map: join(dir, "special_tokens_map.json"),
    };
    if (typeof tokenizerJson.model !== "object" || tokenizerJson.model === null) {
      throw new TokenizerError(`${this.files.tokenizer}: missing or invalid "model" object`);
    }
    if (tokenizerJson.added_tokens !== undefined && !Array.isArray(tokenizerJson.added_tokens)) {
      throw new TokenizerError(`${this.files.tokenizer}: "added_tokens" must be a list`);
    }

    // Where each token field came from, so errors name the right file.
    const origin = new Map<NamedSpecialToken, string>();
    for (const name of NAMED_SPECIAL_TOKENS) {
      if (specialTokensMap !== null && name in specialTokensMap) {
        this.tokens.set(name, tokenContent(specialTokensMap[name], this.files.map, name));
        origin.set(name, this.files.map);
      } else if (name in config) {
        this.tokens.set(name, tokenContent(config[name], this.files.config, name));
        origin.set(name, this.files.config);
      } else {
        this.tokens.set(name, null);
      }
    }
    const additionalSource =
      specialTokensMap !== null && "additional_special_tokens" in specialTokensMap
        ? { value: specialTokensMap.additional_special_tokens, file: this.files.map }
        : { value: config.additional_special_tokens, file: this.files.config };
    if (additionalSource.value !== undefined && additionalSource.value !== null) {
      if (!Array.isArray(additionalSource.value)) {
        throw new TokenizerError(`${additionalSource.file}: additional_special_tokens must be a list`);
      }
      additionalSource.value.forEach((v, i) => {
        const c = tokenContent(v, additionalSource.file, `additional_special_tokens[${i}]`);
        if (c !== null) this.additionalSpecial.push(c);
      });
    }
    // The model's own unknown token stands in when the config files name none.
    if (this.tokens.get("unk_token") === null) {
      const modelUnk = (tokenizerJson.model as { unk_token?: unknown }).unk_token;
      if (typeof modelUnk === "string") {
        this.tokens.set("unk_token", modelUnk);
        origin.set("unk_token", `${this.files.tokenizer} (model.unk_token)`);
      }
    }

    // The library reads a few config fields itself; give it plain strings, never AddedToken objects.
    const libConfig: Json = {
      ...config,
      additional_special_tokens: this.additionalSpecial,
      clean_up_tokenization_spaces: false,
    };
    for (const name of NAMED_SPECIAL_TOKENS) {
      const v = this.tokens.get(name);
      if (v === null) delete libConfig[name];
      else libConfig[name] = v;
    }
    // The library requires these keys to exist; null means "none" in tokenizer.json too.
    const tokJson: Json = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      added_tokens: [],
      ...tokenizerJson,
    };
    try {
      this.tk = new Tokenizer(tokJson, libConfig);
    } catch (e) {
      throw new TokenizerError(`${this.files.tokenizer}: unsupported or invalid tokenizer: ${(e as Error).message}`);
    }
    this.vocabSize = this.tk.model!.vocab.length;
    this.postProcessorTypes = postProcessorTypes(tokenizerJson.post_processor);

    for (const name of REQUIRED_IN_VOCAB) {
      const v = this.tokens.get(name);
      if (v !== null && v !== undefined && this.tk.token_to_id(v) === undefined) {
        throw new TokenizerError(`${origin.get(name)}: ${name} ${JSON.stringify(v)} is not in the vocabulary of ${this.files.tokenizer}`);
      }
    }
    for (const t of this.tk.get_added_tokens_decoder().values()) if (t.special) this.addedSpecialIds.push(t.id);

    const mml = config.model_max_length;
    this.modelMaxLength = typeof mml === "number" && Number.isInteger(mml) && mml > 0 && mml < UNBOUNDED_MAX_LENGTH ? mml : null;
    this.paddingSide = this.side(config.padding_side, "padding_side");
    this.truncationSide = this.side(config.truncation_side, "truncation_side");
    const cleanup = config.clean_up_tokenization_spaces;
    if (cleanup !== undefined && typeof cleanup !== "boolean") {
      throw new TokenizerError(`${this.files.config}: clean_up_tokenization_spaces must be a boolean`);
    }
    this.cleanUpSpaces = cleanup ?? false;
    this.chatTemplate = parts.chatTemplate;
  }

  private side(value: unknown, field: string): PaddingSide {
    if (value === undefined || value === null) return "right";
    if (value === "left" || value === "right") return value;
    throw new TokenizerError(`${this.files.config}: ${field} must be "left" or "right", got ${JSON.stringify(value)}`);
  }

  private idOf(name: NamedSpecialToken): number | null {
    const t = this.tokens.get(name);
    if (t === null || t === undefined) return null;
    return this.tk.token_to_id(t) ?? null;
  }

  get bosToken(): string | null {
    return this.tokens.get("bos_token") ?? null;
  }
  get eosToken(): string | null {
    return this.tokens.get("eos_token") ?? null;
  }
  get unkToken(): string | null {
    return this.tokens.get("unk_token") ?? null;
  }
  get padToken(): string | null {
    return this.tokens.get("pad_token") ?? null;
  }
  /** Set the padding token (commonly to the EOS token for models that ship none). */
  set padToken(token: string | null) {
    if (token !== null && this.tk.token_to_id(token) === undefined) {
      throw new TokenizerError(`pad token ${JSON.stringify(token)} is not in the vocabulary of ${this.files.tokenizer}`);
    }
    this.tokens.set("pad_token", token);
  }
  get sepToken(): string | null {
    return this.tokens.get("sep_token") ?? null;
  }
  get clsToken(): string | null {
    return this.tokens.get("cls_token") ?? null;
  }
  get maskToken(): string | null {
    return this.tokens.get("mask_token") ?? null;
  }
  get bosTokenId(): number | null {
    return this.idOf("bos_token");
  }
  get eosTokenId(): number | null {
    return this.idOf("eos_token");
  }
  get unkTokenId(): number | null {
    return this.idOf("unk_token");
  }
  get padTokenId(): number | null {
    return this.idOf("pad_token");
  }
  get sepTokenId(): number | null {
    return this.idOf("sep_token");
  }
  get clsTokenId(): number | null {
    return this.idOf("cls_token");
  }
  get maskTokenId(): number | null {
    return this.idOf("mask_token");
  }
  /** additional_special_tokens from the config files, as strings. */
  get additionalSpecialTokens(): string[] {
    return [...this.additionalSpecial];
  }

  /** Ids of the named special tokens, the additional ones, and every added token marked special; sorted. */
  get allSpecialIds(): number[] {
    const ids = new Set<number>(this.addedSpecialIds);
    for (const name of NAMED_SPECIAL_TOKENS) {
      const id = this.idOf(name);
      if (id !== null) ids.add(id);
    }
    for (const t of this.additionalSpecial) {
      const id = this.tk.token_to_id(t);
      if (id !== undefined) ids.add(id);
    }
    return [...ids].sort((a, b) => a - b);
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== "string") throw new TokenizerError(`encode expects a string, got ${typeof text}`);
    const pair = options.textPair;
    if (pair !== undefined && typeof pair !== "string") throw new TokenizerError(`encode: textPair must be a string, got ${typeof pair}`);
    // One pair path for both entry points (encodePair also handles post-processors without a pair template).
    if (pair !== undefined) return this.encodePair(text, pair, { addSpecialTokens: options.addSpecialTokens });
    return this.tk.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /**
   * encode with token type ids: a pair's as encodePairWithTypes gives them; a single sequence's
   * are all 0 (what BERT's template "[CLS]:0 $A:0 [SEP]:0" and every stock single template give).
   */
  encodeWithTypes(text: string, options: EncodeOptions = {}): PairEncoding {
    if (options.textPair !== undefined)
      return this.encodePairWithTypes(text, options.textPair, { addSpecialTokens: options.addSpecialTokens });
    const ids = this.encode(text, options);
    return { ids, tokenTypeIds: ids.map(() => 0) };
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    for (const id of ids) this.checkId(id);
    let kept = ids;
    if (options.skipSpecialTokens) {
      const special = new Set(this.allSpecialIds);
      kept = ids.filter((id) => !special.has(id));
    }
    if (kept.length === 0) return "";
    return this.tk.decode([...kept], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces ?? this.cleanUpSpaces,
    });
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.tk.id_to_token(id) === undefined) {
      throw new TokenizerError(`token id ${id} is outside the vocabulary of ${this.files.tokenizer} (size ${this.vocabSize})`);
    }
  }

  convertTokensToIds(tokens: string): number;
  convertTokensToIds(tokens: readonly string[]): number[];
  convertTokensToIds(tokens: string | readonly string[]): number | number[] {
    const one = (t: string): number => {
      const id = this.tk.token_to_id(t) ?? this.unkTokenId;
      if (id === null) throw new TokenizerError(`token ${JSON.stringify(t)} is not in the vocabulary and the tokenizer has no unk_token`);
      return id;
    };
    return typeof tokens === "string" ? one(tokens) : tokens.map(one);
  }

  convertIdsToTokens(ids: number): string;
  convertIdsToTokens(ids: readonly number[]): string[];
  convertIdsToTokens(ids: number | readonly number[]): string | string[] {
    const one = (id: number): string => {
      this.checkId(id);
      return this.tk.id_to_token(id)!;
    };
    return typeof ids === "number" ? one(ids) : ids.map(one);
  }

  /** The ids the post-processor wraps around a single sequence, found by post-processing a marker. */
  private specialFrame(): { prefix: number[]; suffix: number[] } {
    if (this.frame !== null) return this.frame;
    const pp = this.tk.post_processor;
    if (pp === null) {
      this.frame = { prefix: [], suffix: [] };
      return this.frame;
    }
    const marker = "\u0000peftkit-sequence\u0000";
    const out = pp([marker], null, true).tokens;
    const at = out.indexOf(marker);
    if (at < 0 || out.lastIndexOf(marker) !== at) {
      throw new TokenizerError(`${this.files.tokenizer}: post_processor does not keep the sequence intact; cannot truncate around it`);
    }
    const toId = (t: string): number => {
      const id = this.tk.token_to_id(t);
      if (id === undefined)
        throw new TokenizerError(`${this.files.tokenizer}: post_processor adds ${JSON.stringify(t)}, which is not in the vocabulary`);
      return id;
    };
    this.frame = { prefix: out.slice(0, at).map(toId), suffix: out.slice(at + 1).map(toId) };
    return this.frame;
  }

  /**
   * The ids the post-processor (TemplateProcessing's `pair`, BertProcessing, RobertaProcessing, a
   * Sequence of them) puts around a pair, found by post-processing two markers. A post-processor
   * that adds nothing for pairs (ByteLevel, or none) concatenates them, as tokenizers does.
   */
  pairSpecialFrame(): PairFrame {
    if (this.pairFrameIds !== null) return { ...this.pairFrameIds };
    const pp = this.tk.post_processor;
    if (pp === null) {
      this.pairFrameIds = { prefix: [], middle: [], suffix: [] };
      return { ...this.pairFrameIds };
    }
    const a = "\u0000peftkit-first\u0000";
    const b = "\u0000peftkit-second\u0000";
    const out = pp([a], [b], true) as { tokens: string[]; tokens_pair?: string[] | null };
    // ByteLevel hands both sequences back unmerged; tokenizers then concatenates them.
    const tokens = out.tokens.includes(b) ? out.tokens : [...out.tokens, ...(out.tokens_pair ?? [])];
    const at = tokens.indexOf(a);
    const bt = tokens.indexOf(b);
    if (at < 0 || bt < at || tokens.lastIndexOf(a) !== at || tokens.lastIndexOf(b) !== bt) {
      throw new TokenizerError(`${this.files.tokenizer}: post_processor does not keep a pair of sequences intact and in order`);
    }
    const toId = (t: string): number => {
      const id = this.tk.token_to_id(t);
      if (id === undefined)
        throw new TokenizerError(`${this.files.tokenizer}: post_processor adds ${JSON.stringify(t)}, which is not in the vocabulary`);
      return id;
    };
    this.pairFrameIds = {
      prefix: tokens.slice(0, at).map(toId),
      middle: tokens.slice(at + 1, bt).map(toId),
      suffix: tokens.slice(bt + 1).map(toId),
    };
    return { ...this.pairFrameIds };
  }

  /** The token type ids of a pair's parts (see PairTypeFrame); with or without the special tokens. */
  pairTypeFrame(addSpecialTokens = true): PairTypeFrame {
    const known = this.pairTypes.get(addSpecialTokens);
    if (known) return { ...known };
    const f = addSpecialTokens ? this.pairSpecialFrame() : { prefix: [], middle: [], suffix: [] };
    const zeros = (ids: readonly number[]) => ids.map(() => 0);
    let t: PairTypeFrame;
    const pp = this.tk.post_processor;
    if (addSpecialTokens && this.postProcessorTypes.includes("RobertaProcessing")) {
      t = { prefix: zeros(f.prefix), a: 0, middle: zeros(f.middle), b: 0, suffix: zeros(f.suffix) };
    } else {
      // Default (no post-processor, ByteLevel, BertProcessing without special tokens): A 0, B 1.
      t = { prefix: zeros(f.prefix), a: 0, middle: zeros(f.middle), b: 1, suffix: f.suffix.map(() => 1) };
      if (pp !== null) {
        const a = "\u0000peftkit-first\u0000";
        const b = "\u0000peftkit-second\u0000";
        const out = pp([a], [b], addSpecialTokens) as { tokens: string[]; token_type_ids?: number[] };
        const types = out.token_type_ids;
        const at = out.tokens.indexOf(a);
        const bt = out.tokens.indexOf(b);
        // Only when the output is the merged pair (ByteLevel hands the sequences back unmerged).
        if (Array.isArray(types) && types.length === out.tokens.length && at >= 0 && bt > at) {
          const typeAt = (i: number) => {
            const v = types[i];
            if (!Number.isInteger(v) || v < 0)
              throw new TokenizerError(
                `${this.files.tokenizer}: post_processor gives the type id ${JSON.stringify(v)}; expected a non-negative integer`,
              );
            return v;
          };
          const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => typeAt(from + k));
          t = { prefix: range(0, at), a: typeAt(at), middle: range(at + 1, bt), b: typeAt(bt), suffix: range(bt + 1, types.length) };
        }
      }
    }
    this.pairTypes.set(addSpecialTokens, t);
    return { ...t };
  }

  /**
   * Encodes a text pair with the post-processor's pair template (e.g. BERT `[CLS] A [SEP] B [SEP]`,
   * RoBERTa `<s> A </s></s> B </s>`). With `maxLength` the longer text is cut first (see
   * longestFirstLengths); the special tokens are always kept.
   */
  encodePair(text: string, pair: string, options: PairEncodeOptions = {}): number[] {
    return this.encodePairWithTypes(text, pair, options).ids;
  }

  /**
   * encodePair with the token type ids transformers returns for the pair (`token_type_ids`:
   * BERT 0 on `[CLS] A [SEP]`, 1 on `B [SEP]`; see PairTypeFrame).
   */
  encodePairWithTypes(text: string, pair: string, options: PairEncodeOptions = {}): PairEncoding {
    if (typeof text !== "string" || typeof pair !== "string")
      throw new TokenizerError(`encodePair expects two strings, got ${typeof text} and ${typeof pair}`);
    let a = this.encode(text, { addSpecialTokens: false });
    let b = this.encode(pair, { addSpecialTokens: false });
    const special = options.addSpecialTokens ?? true;
    const f = special ? this.pairSpecialFrame() : { prefix: [], middle: [], suffix: [] };
    if (options.maxLength !== undefined) {
      const room = checkLength(options.maxLength, "maxLength") - f.prefix.length - f.middle.length - f.suffix.length;
      if (room < 0)
        throw new TokenizerError(`maxLength ${options.maxLength} leaves no room for the special tokens this tokenizer adds to a pair`);
      const [na, nb] = longestFirstLengths(a.length, b.length, room);
      a = this.truncationSide === "right" ? a.slice(0, na) : a.slice(a.length - na);
      b = this.truncationSide === "right" ? b.slice(0, nb) : b.slice(b.length - nb);
    }
    const t = this.pairTypeFrame(special);
    return {
      ids: [...f.prefix, ...a, ...f.middle, ...b, ...f.suffix],
      tokenTypeIds: [...t.prefix, ...a.map(() => t.a), ...t.middle, ...b.map(() => t.b), ...t.suffix],
    };
  }

  /** Encodes one text, cut to `maxLength` ids in total (special tokens kept) on the truncation side. */
  private encodeTruncated(text: string, addSpecialTokens: boolean, maxLength: number): number[] {
    const content = this.encode(text, { addSpecialTokens: false });
    const { prefix, suffix } = addSpecialTokens ? this.specialFrame() : { prefix: [], suffix: [] };
    const room = maxLength - prefix.length - suffix.length;
    if (room < 0) {
      throw new TokenizerError(
        `maxLength ${maxLength} leaves no room for the ${prefix.length + suffix.length} special tokens this tokenizer adds`,
      );
    }
    const kept =
      content.length <= room ? content : this.truncationSide === "right" ? content.slice(0, room) : content.slice(content.length - room);
    return [...prefix, ...kept, ...suffix];
  }

  /** Encodes a batch into rectangular (when padding) ids and attention masks. */
  call(texts: readonly string[], options: BatchOptions = {}): BatchEncoding {
    if (!Array.isArray(texts)) throw new TokenizerError("call expects a list of strings");
    const padding = options.padding ?? false;
    if (padding !== false && padding !== "longest" && padding !== "max_length") {
      throw new TokenizerError(`padding must be "longest", "max_length" or false, got ${JSON.stringify(padding)}`);
    }
    const side = options.paddingSide ?? this.paddingSide;
    if (side !== "left" && side !== "right") throw new TokenizerError(`paddingSide must be "left" or "right", got ${JSON.stringify(side)}`);
    const addSpecialTokens = options.addSpecialTokens ?? true;
    const needsLimit = options.truncation === true || padding === "max_length";
    let limit: number | null = null;
    if (options.maxLength !== undefined) limit = checkLength(options.maxLength, "maxLength");
    else if (needsLimit) {
      if (this.modelMaxLength === null) {
        throw new TokenizerError(
          `${padding === "max_length" ? 'padding "max_length"' : "truncation"} needs maxLength: ${this.files.config} gives no finite model_max_length`,
        );
      }
      limit = this.modelMaxLength;
    }

    const rows = texts.map((t) =>
      options.truncation === true && limit !== null
        ? this.encodeTruncated(t, addSpecialTokens, limit)
        : this.encode(t, { addSpecialTokens }),
    );
    const masks = rows.map((r) => r.map(() => 1));
    if (padding === false) return { inputIds: rows, attentionMask: masks };

    let target = padding === "max_length" ? limit! : Math.max(0, ...rows.map((r) => r.length));
    if (padding === "max_length") target = Math.max(target, ...rows.map((r) => r.length));
    const padId = this.padTokenId;
    if (padId === null && rows.some((r) => r.length < target)) {
      throw new TokenizerError(
        `padding needs a pad token, and neither ${this.files.config} nor ${this.files.map} sets pad_token (assign tokenizer.padToken, e.g. to the EOS token)`,
      );
    }
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    rows.forEach((r, i) => {
      const n = target - r.length;
      const pads = new Array<number>(n).fill(padId ?? 0);
      const zeros = new Array<number>(n).fill(0);
      inputIds.push(side === "right" ? [...r, ...pads] : [...pads, ...r]);
      attentionMask.push(side === "right" ? [...masks[i], ...zeros] : [...zeros, ...masks[i]]);
    });
    return { inputIds, attentionMask };
  }

  /** The variables a chat template sees for each special token (only those that are set). */
  private templateTokens(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const name of NAMED_SPECIAL_TOKENS) {
      const v = this.tokens.get(name);
      if (v !== null && v !== undefined) out[name] = v;
    }
    if (this.additionalSpecial.length > 0) out.additional_special_tokens = [...this.additionalSpecial];
    return out;
  }

  /**
   * Renders a conversation with the tokenizer's chat template (Jinja, as in transformers).
   * With `tokenize: true` the rendered text is encoded without adding special tokens, since the
   * template already wrote them.
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions & { tokenize: true }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions & { tokenize?: false }): string;
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string | number[];
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string | number[] {
    const template = options.chatTemplate ?? this.chatTemplate;
    if (template === null) {
      throw new TokenizerError(
        `tokenizer in ${this.dir} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja or chat_template.json)`,
      );
    }
    if (!Array.isArray(messages)) throw new TokenizerError("applyChatTemplate expects a list of {role, content} messages");
    messages.forEach((m, i) => {
      if (typeof m !== "object" || m === null || typeof m.role !== "string" || typeof m.content !== "string") {
        throw new TokenizerError(`messages[${i}] must be {role: string, content: string}`);
      }
    });
    const text = renderChatTemplate(template, messages, {
      addGenerationPrompt: options.addGenerationPrompt ?? false,
      specialTokens: this.templateTokens(),
      extra: options.templateVars,
    });
    return options.tokenize ? this.encode(text, { addSpecialTokens: false }) : text;
  }
}

/** The type of a tokenizer.json post_processor, and those of a Sequence's parts. */
function postProcessorTypes(pp: unknown): string[] {
  if (typeof pp !== "object" || pp === null) return [];
  const o = pp as { type?: unknown; processors?: unknown };
  const own = typeof o.type === "string" ? [o.type] : [];
  const parts = Array.isArray(o.processors) ? o.processors.flatMap(postProcessorTypes) : [];
  return [...own, ...parts];
}
