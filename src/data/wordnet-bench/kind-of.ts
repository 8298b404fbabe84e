/**
 * `kind-of`: the demo's completion task (src/data/demo-task.ts) on the decoder, and
 * `chat-kind`: the same question asked through the model's chat template.
 *
 *   kind-of    {"prompt": "poodle: an intelligent dog …\npoodle is a kind of", "completion": " animal"}
 *   chat-kind  {"messages": [{"role": "user", "content": "poodle: an intelligent dog …\nWhat kind of thing is poodle? Answer with one word."},
 *                            {"role": "assistant", "content": "animal"}]}
 *
 * Evaluation items additionally drop held-out synsets whose text a training synset repeats (the
 * demo itself keeps them), then are re-balanced over the 12 categories.
 */

import type { ChatMessage } from "../../io/tokenizer.js";
import { CATEGORIES, categoryOf, demoTask, type PromptCompletion } from "../demo-task.js";
import type { Synset } from "../wordnet.js";
import { type BenchContext, type BenchItem, balanced, keyOf, type TaskData } from "./common.js";

const LABELS = CATEGORIES.map((c) => c.label);

/**
 * The noun synsets behind each "lemma: definition" line (a kind-of prompt's first line), per side
 * of the split; a line can be shared by two synsets.
 */
function lineSources(ctx: BenchContext): Record<"train" | "eval", Map<string, Synset[]>> {
  const m = { train: new Map<string, Synset[]>(), eval: new Map<string, Synset[]>() };
  for (const s of ctx.wn.synsets) {
    if (s.file !== "noun" || !s.definition) continue;
    const side = m[ctx.isTrain(s) ? "train" : "eval"];
    const line = `${s.lemmas[0]}: ${s.definition}`;
    side.set(line, [...(side.get(line) ?? []), s]);
  }
  return m;
}

const firstLine = (p: PromptCompletion) => p.prompt.slice(0, p.prompt.indexOf("\n"));

export function kindOfTask(ctx: BenchContext, maxTrain = 4000, maxEval = 600): TaskData<PromptCompletion> {
  const demo = demoTask({ wordnet: ctx.wn, maxTrain, maxEval: Number.POSITIVE_INFINITY });
  const { train: trainSrc, eval: evalSrc } = lineSources(ctx);
  const train = demo.train.map((p) => ({ record: p, sources: trainSrc.get(firstLine(p))!.map(keyOf) }));
  const evalItems: { i: number; item: BenchItem<PromptCompletion> }[] = [];
  demo.eval.forEach((p, i) => {
    const src = evalSrc.get(firstLine(p))!;
    if (trainSrc.has(firstLine(p)) || !src.every((s) => ctx.isEval(s))) return;
    evalItems.push({ i, item: { record: p, sources: src.map(keyOf) } });
  });
  const picked = balanced(
    evalItems,
    LABELS,
    (x) => x.item.record.completion.trim(),
    (x) => x.i,
    maxEval,
  );
  return { train, eval: picked.map((x) => x.item) };
}

export interface ChatRecord {
  messages: ChatMessage[];
}

/** The chat version of a kind-of item, from the synset it was built from. */
export function chatKindRecord(ctx: BenchContext, s: Synset): ChatRecord {
  const lemma = s.lemmas[0];
  const label = categoryOf(ctx.wn, s);
  if (label === null) throw new Error(`${keyOf(s)}: no kind-of category`);
  return {
    messages: [
      { role: "user", content: `${lemma}: ${s.definition}\nWhat kind of thing is ${lemma}? Answer with one word.` },
      { role: "assistant", content: label },
    ],
  };
}

/** chat-kind: the kind-of items (same synsets, same balance) rendered as conversations. */
export function chatKindTask(ctx: BenchContext, kindOf: TaskData<PromptCompletion>): TaskData<ChatRecord> {
  const conv = (items: BenchItem<PromptCompletion>[]) =>
    items.map((it) => {
      const [file, offset] = it.sources[0].split(":");
      const s = ctx.wn.get(file as Synset["file"], Number(offset))!;
      return { record: chatKindRecord(ctx, s), sources: it.sources };
    });
  return { train: conv(kindOf.train), eval: conv(kindOf.eval) };
}
