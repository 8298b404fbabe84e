/**
 * `wordnet-bench`: peftkit's built-in comparison suite, six tasks built from WordNet 3.1 on
 * the train/held-out synset split the two embedded models were pretrained on (src/data/split.ts).
 * Training examples come from training synsets only, evaluation examples from held-out synsets
 * only (see common.ts for the exact rule). docs/wordnet-bench.md describes each task.
 *
 * Everything is deterministic: the same WordNet gives the same files byte for byte.
 */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { type CompareTask, TASK_SETTINGS } from "../../compare/task.js";
import { writeFileAtomic } from "../../io/atomic-write.js";
import { spanScores } from "../../train/span-f1.js";
import { PACKAGE_ROOT } from "../../util/paths.js";
import { WordNet } from "../wordnet.js";
import { BenchContext, type BenchItem, type TaskData } from "./common.js";
import { defineLemmaTask } from "./define-lemma.js";
import { chatKindTask, kindOfTask } from "./kind-of.js";
import { lemmaTagTask } from "./lemma-tag.js";
import { lexnameTask } from "./lexname.js";
import { relationTask } from "./relation.js";

export const SUITE_NAME = "wordnet-bench";
export const ENCODER = "wordnet-bert";
export const DECODER = "wordnet-llama";

export type BenchMetric = "accuracy" | "exact_match" | "span_f1";

/** A task with its examples in memory, before it is written out. */
export interface BenchTask {
  name: string;
  description: string;
  /** Which embedded model it runs on (a folder name under models/). */
  model: typeof ENCODER | typeof DECODER;
  metric: BenchMetric;
  /** Record format (documentation only; the loader detects it from the fields). */
  format: "classification" | "text_pair" | "token_classification" | "prompt_completion" | "chat";
  data: TaskData<object>;
  /** The task's own budget, as in a suite file (each wins over the compare command line); unset: the command line's. */
  settings?: Partial<Record<keyof typeof TASK_SETTINGS, number>>;
}

export interface WordnetBenchOptions {
  /** A loaded WordNet (all four files); loaded when absent. */
  wordnet?: WordNet;
  /** Folder holding wordnet-bert/ and wordnet-llama/ (default: this package's models/). */
  modelsDir?: string;
  /** Caps on every task's sizes (smaller than the defaults, e.g. for a smoke test). */
  maxTrain?: number;
  maxEval?: number;
  /** Only these tasks, in suite order (default all). */
  tasks?: readonly string[];
}

export const TASK_NAMES = ["lexname", "relation", "lemma-tag", "kind-of", "define-lemma", "chat-kind"] as const;

/** Builds the tasks in memory; `writeWordnetBench` writes them. */
export function buildWordnetBench(opts: WordnetBenchOptions = {}): BenchTask[] {
  for (const t of opts.tasks ?? []) {
    if (!(TASK_NAMES as readonly string[]).includes(t)) {
      throw new Error(`wordnet-bench: unknown task "${t}"; the tasks are ${TASK_NAMES.join(", ")}`);
    }
  }
  const want = (name: string) => opts.tasks === undefined || opts.tasks.includes(name);
  const ctx = new BenchContext(opts.wordnet ?? WordNet.load());
  const cap = (n: number, c?: number) => (c === undefined ? n : Math.min(n, c));
  const tr = (n: number) => cap(n, opts.maxTrain);
  const ev = (n: number) => cap(n, opts.maxEval);
  const out: BenchTask[] = [];
  if (want("lexname")) {
    out.push({
      name: "lexname",
      description: "a definition → its WordNet lexicographer file (45 classes)",
      model: ENCODER,
      metric: "accuracy",
      format: "classification",
      data: lexnameTask(ctx, tr(4000), ev(1000)),
    });
  }
  if (want("relation")) {
    out.push({
      name: "relation",
      description: 'two "lemma: definition" lines → is the second a hypernym, a hyponym or unrelated',
      model: ENCODER,
      metric: "accuracy",
      format: "text_pair",
      data: relationTask(ctx, tr(4000), ev(1000)),
    });
  }
  if (want("lemma-tag")) {
    out.push({
      name: "lemma-tag",
      description: "tag the words of an example sentence that spell the synset's lemma (B/I/O)",
      model: ENCODER,
      metric: "span_f1",
      format: "token_classification",
      data: lemmaTagTask(ctx, tr(4000), ev(1000)),
    });
  }
  const kindOf = want("kind-of") || want("chat-kind") ? kindOfTask(ctx, tr(4000), ev(600)) : null;
  if (want("kind-of") && kindOf) {
    out.push({
      name: "kind-of",
      description: "a noun and its definition → which of 12 broad kinds it is (completion, exact match)",
      model: DECODER,
      metric: "exact_match",
      format: "prompt_completion",
      data: kindOf,
    });
  }
  if (want("define-lemma")) {
    out.push({
      name: "define-lemma",
      description: "a definition → the word it defines (completion, exact match)",
      model: DECODER,
      metric: "exact_match",
      format: "prompt_completion",
      data: defineLemmaTask(ctx, tr(4000), ev(500)),
    });
  }
  if (want("chat-kind") && kindOf) {
    out.push({
      name: "chat-kind",
      description: "the kind-of question as a conversation through the chat template (exact match)",
      model: DECODER,
      metric: "exact_match",
      format: "chat",
      data: chatKindTask(ctx, kindOf),
    });
  }
  return out;
}

/** The answer a metric scores for one record: a class, a completion, or null for token tasks. */
function answerOf(record: object): string | null {
  const r = record as Record<string, unknown>;
  if ("label" in r) return String(r.label);
  if ("completion" in r) return String(r.completion).trim();
  if ("messages" in r) {
    const msgs = r.messages as { role: string; content: string }[];
    return msgs[msgs.length - 1].content.trim();
  }
  return null;
}

/**
 * The chance level of a task's metric on its evaluation set: the score of the best constant
 * answer. For accuracy and exact match that is the most common class or completion (the majority
 * baseline); for span F1 the best tag predicted everywhere: all "O" finds no span (0), all "B"
 * makes every word a one-word span (F1 = 2·one-word gold spans / (words + gold spans)), all "I" one
 * span over the whole record.
 */
export function chanceLevel(items: readonly BenchItem<object>[], metric: BenchMetric): number {
  if (metric === "span_f1") {
    const seqs = items.map((it) => (it.record as { tags: string[] }).tags);
    const tagSet = [...new Set(seqs.flat())].sort();
    return Math.max(0, ...tagSet.map((c) => spanScores(seqs.map((g) => [g, g.map(() => c)] as const)).f1));
  }
  const counts = new Map<string, number>();
  let total = 0;
  const add = (k: string) => {
    counts.set(k, (counts.get(k) ?? 0) + 1);
    total++;
  };
  for (const it of items) {
    const a = answerOf(it.record);
    if (a !== null) add(a);
    else for (const t of (it.record as { tags: string[] }).tags) add(t);
  }
  if (total === 0) return 0;
  return Math.max(...counts.values()) / total;
}

/** The folder of this package that holds the embedded models. */
export function defaultModelsDir(): string {
  return join(PACKAGE_ROOT, "models");
}

function jsonl(items: readonly BenchItem<object>[]): string {
  let s = "";
  for (const it of items) s += `${JSON.stringify(it.record)}\n`;
  return s;
}

/** Chance levels are rounded so the suite file does not depend on float printing. */
const round4 = (x: number) => Math.round(x * 10000) / 10000;

/**
 * Writes `<task>.train.jsonl` and `<task>.eval.jsonl` for every task into `dir`, plus
 * `suite.yaml` (files named relative to it), and returns the tasks with absolute paths.
 */
export async function writeWordnetBench(dir: string, opts: WordnetBenchOptions = {}): Promise<CompareTask[]> {
  const tasks = buildWordnetBench(opts);
  const root = resolve(dir);
  mkdirSync(root, { recursive: true });
  const modelsDir = resolve(opts.modelsDir ?? defaultModelsDir());
  const out: CompareTask[] = [];
  const suiteTasks: Record<string, unknown>[] = [];
  for (const t of tasks) {
    const train = `${t.name}.train.jsonl`;
    const evalFile = `${t.name}.eval.jsonl`;
    writeFileAtomic(join(root, train), jsonl(t.data.train));
    writeFileAtomic(join(root, evalFile), jsonl(t.data.eval));
    const base = {
      name: t.name,
      description: t.description,
      model: join(modelsDir, t.model),
      metric: t.metric,
      chance: round4(chanceLevel(t.data.eval, t.metric)),
      // No `format`: the loader detects it from the fields, so this file does not depend on its format names.
    };
    const own = Object.entries(t.settings ?? {});
    out.push({
      ...base,
      ...Object.fromEntries(own.map(([k, v]) => [TASK_SETTINGS[k as keyof typeof TASK_SETTINGS], v])),
      train: join(root, train),
      eval: join(root, evalFile),
    });
    suiteTasks.push({ ...base, ...Object.fromEntries(own), train, eval: evalFile });
  }
  writeFileAtomic(join(root, "suite.yaml"), stringify({ name: SUITE_NAME, tasks: suiteTasks }));
  return out;
}
