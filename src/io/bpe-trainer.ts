/**
 * Byte-level BPE training (GPT-2 style) that writes a Hugging Face tokenizer.json.
 *
 * Texts are split with GPT-2's pre-tokenization regex, each piece's UTF-8 bytes are mapped to
 * printable characters with GPT-2's byte→unicode table, and merges are learned greedily: the
 * most frequent adjacent pair is merged, ties broken by the pair's token strings (smaller
 * first), so the result depends only on the corpus and the options.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "./atomic-write.js";

/** GPT-2's pre-tokenization split (the one ByteLevel uses with use_regex: true). */
export const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's reversible byte→character table: printable Latin-1 bytes stand for themselves and
 * the rest (controls, space, …) are shifted to U+0100 and up, so no token contains whitespace.
 */
export function bytesToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const table = new Array<string>(256);
  const kept = new Set(keep);
  let n = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(kept.has(b) ? b : 256 + n++);
  return table;
}

export interface BpeTrainOptions {
  /** Final vocabulary size, special tokens and the 256 byte tokens included. */
  vocabSize: number;
  /** Special tokens, given the first ids in this order. Default ["<|endoftext|>"]. */
  specialTokens?: readonly string[];
  /** Pairs seen fewer times than this are never merged (default 2). */
  minFrequency?: number;
}

export interface TrainedBpe {
  /** Token string → id (ByteLevel characters), specials included. */
  vocab: Map<string, number>;
  /** Merges in the order learned. */
  merges: [string, string][];
  specialTokens: string[];
}

/** Counts the pre-tokenized, byte-mapped words of the texts. */
export function countWords(texts: Iterable<string>): Map<string, number> {
  const table = bytesToUnicode();
  const enc = new TextEncoder();
  const counts = new Map<string, number>();
  const mapped = new Map<string, string>();
  for (const text of texts) {
    for (const m of text.matchAll(GPT2_SPLIT)) {
      const piece = m[0];
      let w = mapped.get(piece);
      if (w === undefined) {
        w = "";
        for (const b of enc.encode(piece)) w += table[b];
        mapped.set(piece, w);
      }
      counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
  return counts;
}

/** Pair keys pack two ids (< 2^21 each) into one exact double. */
const SHIFT = 2 ** 21;
const pairKey = (a: number, b: number) => a * SHIFT + b;

/** A binary max-heap of [count, key] with lazy deletion (stale entries are skipped on pop). */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];
  constructor(private readonly better: (ca: number, ka: number, cb: number, kb: number) => boolean) {}
  get size(): number {
    return this.keys.length;
  }
  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.keys.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(this.counts[i], this.keys[i], this.counts[p], this.keys[p])) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]];
    const lastC = this.counts.pop() as number;
    const lastK = this.keys.pop() as number;
    if (this.keys.length > 0) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      const n = this.keys.length;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < n && this.better(this.counts[l], this.keys[l], this.counts[m], this.keys[m])) m = l;
        if (r < n && this.better(this.counts[r], this.keys[r], this.counts[m], this.keys[m])) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
  private swap(i: number, j: number): void {
    const c = this.counts[i];
    this.counts[i] = this.counts[j];
    this.counts[j] = c;
    const k = this.keys[i];
    this.keys[i] = this.keys[j];
    this.keys[j] = k;
  }
}

/** Learns byte-level BPE merges from word counts (see countWords) or raw texts. */
export function trainBpe(input: Iterable<string> | Map<string, number>, opts: BpeTrainOptions): TrainedBpe {
  const specials = [...(opts.specialTokens ?? ["<|endoftext|>"])];
  const minFreq = opts.minFrequency ?? 2;
  const wordCounts = input instanceof Map ? input : countWords(input);
  const tokens: string[] = [...specials];
  const vocab = new Map<string, number>();
  for (const [i, s] of specials.entries()) vocab.set(s, i);
  for (const ch of bytesToUnicode()) {
    if (vocab.has(ch)) throw new Error(`special token ${JSON.stringify(ch)} collides with a byte token`);
    vocab.set(ch, tokens.length);
    tokens.push(ch);
  }
  if (opts.vocabSize < tokens.length) throw new Error(`vocabSize ${opts.vocabSize} is below the ${tokens.length} special and byte tokens`);
  if (opts.vocabSize >= SHIFT) throw new Error(`vocabSize ${opts.vocabSize} is too large (max ${SHIFT - 1})`);

  // Words in a fixed order (sorted), so the result does not depend on Map insertion order.
  const entries = [...wordCounts].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const words: number[][] = entries.map(([w]) => Array.from(w, (ch) => vocab.get(ch) as number));
  const freq = entries.map(([, c]) => c);

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (wi: number, sign: 1 | -1, touched: Set<number>) => {
    const w = words[wi];
    for (let i = 0; i + 1 < w.length; i++) {
      const k = pairKey(w[i], w[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * freq[wi]);
      touched.add(k);
      if (sign > 0) {
        let s = pairWords.get(k);
        if (!s) {
          s = new Set();
          pairWords.set(k, s);
        }
        s.add(wi);
      }
    }
  };
  // Ties: the pair whose (left, right) token strings sort first wins.
  const better = (ca: number, ka: number, cb: number, kb: number): boolean => {
    if (ca !== cb) return ca > cb;
    const la = tokens[Math.floor(ka / SHIFT)];
    const lb = tokens[Math.floor(kb / SHIFT)];
    if (la !== lb) return la < lb;
    return tokens[ka % SHIFT] < tokens[kb % SHIFT];
  };
  const heap = new PairHeap(better);
  const init = new Set<number>();
  for (let wi = 0; wi < words.length; wi++) addPairs(wi, 1, init);
  for (const k of init) heap.push(pairCount.get(k) as number, k);

  const merges: [string, string][] = [];
  while (tokens.length < opts.vocabSize && heap.size > 0) {
    const [count, key] = heap.pop();
    if (pairCount.get(key) !== count) continue; // stale entry
    if (count < minFreq) break;
    const a = Math.floor(key / SHIFT);
    const b = key % SHIFT;
    const merged = tokens[a] + tokens[b];
    // Two different pairs can spell the same string; the first keeps the id.
    let id = vocab.get(merged);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(merged);
      vocab.set(merged, id);
    }
    merges.push([tokens[a], tokens[b]]);
    const touched = new Set<number>();
    const affected = [...(pairWords.get(key) ?? [])].sort((x, y) => x - y);
    for (const wi of affected) {
      addPairs(wi, -1, touched);
      const w = words[wi];
      const next: number[] = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          next.push(id);
          i++;
        } else next.push(w[i]);
      }
      words[wi] = next;
      addPairs(wi, 1, touched);
    }
    pairCount.delete(key);
    pairWords.delete(key);
    for (const k of touched) {
      if (k === key) continue;
      const c = pairCount.get(k) ?? 0;
      if (c > 0) heap.push(c, k);
      else {
        pairCount.delete(k);
        pairWords.delete(k);
      }
    }
  }
  return { vocab, merges, specialTokens: specials };
}

/** The tokenizer.json object (HF tokenizers format) of a trained BPE. */
export function tokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: bpe.specialTokens.map((content) => ({
      id: bpe.vocab.get(content),
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries([...bpe.vocab].sort((x, y) => x[1] - y[1])),
      merges: bpe.merges,
    },
  };
}

export interface SaveTokenizerOptions {
  /** The token used as bos, eos and pad (default the first special token). */
  eosToken?: string;
  modelMaxLength?: number;
  chatTemplate?: string;
}

/** Writes tokenizer.json and tokenizer_config.json into `dir`. */
export function saveTokenizer(dir: string, bpe: TrainedBpe, opts: SaveTokenizerOptions = {}): void {
  mkdirSync(dir, { recursive: true });
  const eos = opts.eosToken ?? bpe.specialTokens[0];
  if (!bpe.vocab.has(eos)) throw new Error(`eos token ${JSON.stringify(eos)} is not in the vocabulary`);
  writeFileAtomic(join(dir, "tokenizer.json"), `${JSON.stringify(tokenizerJson(bpe))}\n`);
  const addedTokensDecoder = Object.fromEntries(
    bpe.specialTokens.map((t) => [
      String(bpe.vocab.get(t)),
      { content: t, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  const config: Record<string, unknown> = {
    tokenizer_class: "GPT2Tokenizer",
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    bos_token: eos,
    eos_token: eos,
    pad_token: eos,
    unk_token: null,
    clean_up_tokenization_spaces: false,
    model_max_length: opts.modelMaxLength ?? 1024,
    padding_side: "right",
  };
  if (opts.chatTemplate) config.chat_template = opts.chatTemplate;
  writeFileAtomic(join(dir, "tokenizer_config.json"), `${JSON.stringify(config, null, 2)}\n`);
}

/** RoBERTa's special tokens, in the id order of roberta-base's first ids (<mask> follows them here). */
export const ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] as const;

/**
 * Writes a RoBERTa-style tokenizer folder for a BPE trained with ROBERTA_SPECIAL_TOKENS: the
 * ByteLevel BPE plus RobertaProcessing (`<s> A </s>`, pairs `<s> A </s></s> B </s>`), and
 * `<mask>` with lstrip so "a <mask>" masks the word with its leading space, as roberta-base does.
 */
export function saveRobertaTokenizer(dir: string, bpe: TrainedBpe, opts: { modelMaxLength: number }): void {
  for (const t of ROBERTA_SPECIAL_TOKENS) if (!bpe.vocab.has(t)) throw new Error(`RoBERTa special token ${t} is not in the vocabulary`);
  const id = (t: string) => bpe.vocab.get(t) as number;
  const json = tokenizerJson(bpe);
  json.added_tokens = (json.added_tokens as Record<string, unknown>[]).map((t) => ({ ...t, lstrip: t.content === "<mask>" }));
  json.post_processor = {
    type: "RobertaProcessing",
    sep: ["</s>", id("</s>")],
    cls: ["<s>", id("<s>")],
    trim_offsets: true,
    add_prefix_space: false,
  };
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, "tokenizer.json"), `${JSON.stringify(json)}\n`);
  const addedTokensDecoder = Object.fromEntries(
    bpe.specialTokens.map((t) => [
      String(id(t)),
      { content: t, lstrip: t === "<mask>", normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  const config = {
    tokenizer_class: "RobertaTokenizer",
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    bos_token: "<s>",
    cls_token: "<s>",
    eos_token: "</s>",
    sep_token: "</s>",
    unk_token: "<unk>",
    pad_token: "<pad>",
    mask_token: "<mask>",
    clean_up_tokenization_spaces: false,
    errors: "replace",
    trim_offsets: true,
    model_max_length: opts.modelMaxLength,
    padding_side: "right",
  };
  writeFileAtomic(join(dir, "tokenizer_config.json"), `${JSON.stringify(config, null, 2)}\n`);
}
