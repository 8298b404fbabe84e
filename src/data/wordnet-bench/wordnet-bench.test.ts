import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { REPO_ROOT } from "../../testing/paths.js";
import { type DataFormat, typeRecord } from "../../train/data/formats.js";
import { pretrainingBlocks } from "../corpus.js";
import { isHeldOut } from "../split.js";
import { type PosFile, WordNet } from "../wordnet.js";
import { buildWordnetBench, chanceLevel, TASK_NAMES, writeWordnetBench } from "./index.js";
import { forms, tagSentence, words } from "./lemma-tag.js";
import { LEXNAMES } from "./lexnames.js";
import { RELATION_LABELS } from "./relation.js";
import { benchTable, readCeilings } from "./table.js";

const wn = WordNet.load();
const tasks = buildWordnetBench({ wordnet: wn });
const byName = new Map(tasks.map((t) => [t.name, t]));
const synsetOf = (key: string) => {
  const [file, offset] = key.split(":");
  const s = wn.get(file as PosFile, Number(offset));
  assert.ok(s, `no synset ${key}`);
  return s;
};

const SIZES: Record<string, [number, number]> = {
  lexname: [4000, 1000],
  relation: [4000, 1000],
  "lemma-tag": [4000, 1000],
  "kind-of": [4000, 600],
  "define-lemma": [1971, 214], // every usable synset: the closed answer vocabulary limits them
  "chat-kind": [4000, 600],
};

test("six tasks with the documented sizes, on the right models, with valid records", () => {
  assert.deepEqual(
    tasks.map((t) => t.name),
    [...TASK_NAMES],
  );
  for (const t of tasks) {
    assert.deepEqual([t.data.train.length, t.data.eval.length], SIZES[t.name], t.name);
    assert.equal(t.model, t.format === "prompt_completion" || t.format === "chat" ? "wordnet-llama" : "wordnet-bert", t.name);
    for (const it of [...t.data.train, ...t.data.eval]) {
      const r = it.record as Record<string, unknown>;
      const where = `${t.name}: ${JSON.stringify(r)}`;
      // The formats the loader already reads go through its own validation.
      const loaderFormat: Partial<Record<typeof t.format, DataFormat>> = {
        classification: "classification",
        prompt_completion: "prompt_completion",
        chat: "chat",
      };
      const lf = loaderFormat[t.format];
      if (lf) typeRecord({ where, value: r }, lf);
      switch (t.name) {
        case "lexname":
          assert.deepEqual(Object.keys(r), ["text", "label"], where);
          assert.ok(LEXNAMES.includes(r.label as string) && (r.text as string).length > 0, where);
          break;
        case "relation":
          assert.deepEqual(Object.keys(r), ["text", "text_pair", "label"], where);
          assert.ok((RELATION_LABELS as readonly unknown[]).includes(r.label), where);
          assert.notEqual(r.text, r.text_pair, where);
          break;
        case "lemma-tag": {
          assert.deepEqual(Object.keys(r), ["tokens", "tags"], where);
          const { tokens, tags } = r as { tokens: string[]; tags: string[] };
          assert.equal(tokens.length, tags.length, where);
          assert.ok(tags.includes("B"), where);
          tags.forEach((g, i) => {
            assert.ok(g === "B" || g === "O" || (g === "I" && i > 0 && tags[i - 1] !== "O"), where);
          });
          assert.ok(
            tokens.every((w) => w.length > 0 && !/\s/.test(w)),
            where,
          );
          break;
        }
        case "kind-of":
        case "define-lemma":
          assert.deepEqual(Object.keys(r), ["prompt", "completion"], where);
          assert.match(r.completion as string, /^ \S/, where);
          break;
        case "chat-kind":
          assert.deepEqual(
            (r.messages as { role: string }[]).map((m) => m.role),
            ["user", "assistant"],
            where,
          );
          break;
      }
    }
  }
  // Every lexicographer file is represented in training and in evaluation.
  for (const side of ["train", "eval"] as const) {
    const labels = new Set(byName.get("lexname")!.data[side].map((it) => (it.record as { label: string }).label));
    assert.equal(labels.size, 45, side);
  }
});

test("train examples come only from training synsets, eval examples only from held-out ones", () => {
  for (const t of tasks) {
    for (const it of t.data.train) {
      assert.ok(it.sources.length > 0, t.name);
      for (const k of it.sources) assert.ok(!isHeldOut(synsetOf(k).file, synsetOf(k).offset), `${t.name} train: ${k}`);
    }
    for (const it of t.data.eval) {
      assert.ok(it.sources.length > 0, t.name);
      for (const k of it.sources) assert.ok(isHeldOut(synsetOf(k).file, synsetOf(k).offset), `${t.name} eval: ${k}`);
    }
  }
  // The sources are the synsets the text came from.
  for (const it of byName.get("relation")!.data.eval) {
    const r = it.record as { text: string; text_pair: string };
    assert.ok(r.text.endsWith(synsetOf(it.sources[0]).definition) && r.text_pair.endsWith(synsetOf(it.sources[1]).definition));
  }
  for (const it of byName.get("lexname")!.data.eval) assert.equal((it.record as { text: string }).text, synsetOf(it.sources[0]).definition);
});

test("no evaluation synset's text (definition, 'lemma: definition' line, examples) is in the pretraining text", () => {
  // pretrainingBlocks is the decoder's corpus; the encoder is pretrained on the same training split
  // (its corpus function is not on this branch, so the same blocks stand in for it).
  const lines = new Set<string>();
  for (const b of pretrainingBlocks(wn, 1)) {
    for (const line of b.split("\n")) {
      if (!line) continue;
      lines.add(line);
      const colon = line.indexOf(": ");
      if (colon >= 0) lines.add(line.slice(colon + 2)); // the definition of a "lemma: definition" line
    }
  }
  let checked = 0;
  for (const t of tasks) {
    for (const it of t.data.eval) {
      for (const k of it.sources) {
        const s = synsetOf(k);
        for (const text of [s.definition, `${s.lemmas[0]}: ${s.definition}`, ...s.examples]) {
          assert.ok(!lines.has(text), `${t.name}: eval synset ${k}'s text is in the pretraining corpus: ${text}`);
          checked++;
        }
      }
      // And the record's own text lines, whatever synset they came from.
      const r = it.record as Record<string, unknown>;
      const texts = [r.text, r.text_pair, (r.prompt as string | undefined)?.split("\n")[0]];
      if (r.tokens) {
        // lemma-tag: the definition's words, "|", the example sentence's words.
        const toks = r.tokens as string[];
        const sep = toks.indexOf("|");
        assert.ok(sep > 0, `${t.name}: no separator`);
        assert.deepEqual(toks.slice(0, sep), words(synsetOf(it.sources[0]).definition));
        assert.ok((r.tags as string[]).slice(0, sep + 1).every((g) => g === "O"));
        texts.push(toks.slice(sep + 1).join(" "));
      }
      for (const x of texts) if (typeof x === "string") assert.ok(!lines.has(x), `${t.name}: eval text in the corpus: ${x}`);
    }
  }
  assert.ok(checked > 5000, `checked ${checked}`);
});

test("writing is deterministic, the suite file and returned tasks follow the CompareTask contract", async () => {
  const a = mkdtempSync(join(tmpdir(), "wnbench-a-"));
  const b = mkdtempSync(join(tmpdir(), "wnbench-b-"));
  try {
    const ta = await writeWordnetBench(a, { wordnet: wn });
    await writeWordnetBench(b); // loads its own WordNet
    const files = readdirSync(a).sort();
    assert.deepEqual(files, readdirSync(b).sort());
    assert.equal(files.length, 2 * TASK_NAMES.length + 1);
    for (const f of files) assert.ok(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), `${f} differs between runs`);
    for (const t of ta) {
      assert.match(t.name, /^[a-z0-9_-]+$/);
      assert.ok(t.model.endsWith(join("models", t.model.includes("llama") ? "wordnet-llama" : "wordnet-bert")), t.model);
      assert.equal(readFileSync(t.train, "utf8").split("\n").length - 1, SIZES[t.name][0]);
      assert.equal(readFileSync(t.eval, "utf8").split("\n").length - 1, SIZES[t.name][1]);
      assert.equal(t.chance, Math.round(chanceLevel(byName.get(t.name)!.data.eval, byName.get(t.name)!.metric) * 10000) / 10000);
    }
    const suite = parse(readFileSync(join(a, "suite.yaml"), "utf8")) as { name: string; tasks: { name: string; train: string }[] };
    assert.equal(suite.name, "wordnet-bench");
    assert.deepEqual(
      suite.tasks.map((t) => t.train),
      TASK_NAMES.map((n) => `${n}.train.jsonl`),
    );
    // Caps and a task subset, for smoke tests.
    const small = await writeWordnetBench(a, { wordnet: wn, tasks: ["kind-of"], maxTrain: 5, maxEval: 3 });
    assert.deepEqual(
      small.map((t) => t.name),
      ["kind-of"],
    );
    assert.equal(readFileSync(small[0].eval, "utf8").trim().split("\n").length, 3);
    assert.throws(() => buildWordnetBench({ wordnet: wn, tasks: ["nope"] }), /unknown task "nope"/);
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test("docs/wordnet-bench.md's table matches the data (regenerate with npm run docs:wordnet-bench)", () => {
  const doc = readFileSync(join(REPO_ROOT, "docs/wordnet-bench.md"), "utf8");
  assert.ok(doc.includes(benchTable(tasks, readCeilings(REPO_ROOT))), "the table in docs/wordnet-bench.md is stale");
  // The chance levels the table shows, recomputed from scratch: the best constant answer.
  const lexCounts = new Map<string, number>();
  for (const it of byName.get("lexname")!.data.eval) {
    const l = (it.record as { label: string }).label;
    lexCounts.set(l, (lexCounts.get(l) ?? 0) + 1);
  }
  assert.equal(chanceLevel(byName.get("lexname")!.data.eval, "accuracy"), Math.max(...lexCounts.values()) / 1000);
  assert.ok(Math.abs(chanceLevel(byName.get("relation")!.data.eval, "accuracy") - 1 / 3) < 0.01);
  // lemma-tag is scored by span F1. All "O" scores 0; all "I" makes the record one span, never a
  // gold one (the definition's words are "O"); all "B" makes every word a span, right for each
  // one-word gold span: P = one-word spans / words, R = one-word spans / gold spans, so
  // F1 = 2·one-word spans / (words + gold spans).
  const lemmaTag = byName.get("lemma-tag")!;
  assert.equal(lemmaTag.metric, "span_f1");
  let words = 0;
  let gold = 0;
  let oneWord = 0;
  for (const it of lemmaTag.data.eval) {
    const t = (it.record as { tags: string[] }).tags;
    words += t.length;
    t.forEach((g, i) => {
      if (g !== "B") return;
      gold++;
      if (t[i + 1] !== "I") oneWord++;
    });
  }
  assert.ok(oneWord > 0 && oneWord < gold);
  assert.ok(Math.abs(chanceLevel(lemmaTag.data.eval, "span_f1") - (2 * oneWord) / (words + gold)) < 1e-12);
});

test("lemma tagging: inflections, multi-word lemmas, words", () => {
  // A period is inner only between letters, so a sentence-final "U.S." loses its last one.
  assert.deepEqual(words("he didn't go to the U.S. (twice), well-known e.g."), [
    "he",
    "didn't",
    "go",
    "to",
    "the",
    "U.S",
    ".",
    "(",
    "twice",
    ")",
    ",",
    "well-known",
    "e.g",
    ".",
  ]);
  assert.ok(forms("stop").has("stopped") && forms("carry").has("carries") && forms("bake").has("baking"));
  assert.deepEqual(tagSentence("the dogs barked", ["dog", "domestic dog"])!.tags, ["O", "B", "O"]);
  assert.deepEqual(tagSentence("he tumped over his beer", ["tump over"])!.tags, ["O", "B", "I", "O", "O"]);
  assert.deepEqual(tagSentence("a hot dog and a dog", ["dog", "hot dog"])!.tags, ["O", "B", "I", "O", "O", "B"]);
  assert.equal(tagSentence("the geese flew", ["goose"]), null);
});
