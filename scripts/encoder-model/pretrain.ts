/**
 * Pretrains the embedded encoder, models/wordnet-bert: a small RoBERTa trained from scratch with
 * masked language modelling on the English of WordNet's training synsets (the same text as
 * models/wordnet-llama; held-out synsets are never seen), with a byte-level BPE tokenizer in
 * RoBERTa's layout trained on the same text.
 *
 *   npm run pretrain-encoder [-- --steps N --out DIR --seed S --threads T]
 *
 * Deterministic under its seed: the tokenizer, row order, masking and initialisation depend only
 * on it (with one ONNX Runtime thread the weights are bit-identical; with more, multithreaded
 * reductions differ in the last bits).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { heldOutBlocks } from "../../src/data/corpus.js";
import { DEFAULT_HELD_OUT_FRACTION } from "../../src/data/split.js";
import { WordNet } from "../../src/data/wordnet.js";
import { countWords, ROBERTA_SPECIAL_TOKENS, saveRobertaTokenizer, trainBpe } from "../../src/io/bpe-trainer.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "../../src/io/tokenizer.js";
import { PreTrainedModel } from "../../src/models/pretrained.js";
import { FullTrainer } from "../../src/train/full-finetune.js";
import { type MaskOptions, maskedAccuracy, maskTokens } from "../../src/train/mlm.js";
import { Rng } from "../../src/util/rng.js";
import { encoderPretrainingBlocks, packRows } from "./corpus.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
/** The committed model must stay at most this size (f16 safetensors). */
const MAX_BYTES = 10_000_000;

const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "800" },
    out: { type: "string", default: join(REPO, "models/wordnet-bert") },
    seed: { type: "string", default: "1234" },
    "vocab-size": { type: "string", default: "6144" },
    "seq-len": { type: "string", default: "128" },
    "batch-size": { type: "string", default: "16" },
    lr: { type: "string", default: "8e-4" },
    /** Share of ordinary tokens selected for prediction in training (evaluation always uses 0.15). */
    "mask-prob": { type: "string", default: "0.15" },
    "warmup-steps": { type: "string", default: "100" },
    "save-every": { type: "string", default: "250" },
    "log-every": { type: "string", default: "10" },
    "eval-rows": { type: "string", default: "64" },
    /** ONNX Runtime intra-op threads; 1 (the default) makes runs bit-identical, multithreaded reductions are not. */
    threads: { type: "string", default: "1" },
  },
});
const steps = Number(args.steps);
const seed = Number(args.seed);
const vocabSize = Number(args["vocab-size"]);
const seqLen = Number(args["seq-len"]);
const batchSize = Number(args["batch-size"]);
const peakLr = Number(args.lr);
const warmup = Number(args["warmup-steps"]);
const saveEvery = Number(args["save-every"]);
const logEvery = Number(args["log-every"]);
const evalRows = Number(args["eval-rows"]);
const outDir = resolve(args.out as string);
const minLr = peakLr * 0.1;
const threads = Number(args.threads);
const maskProb = Number(args["mask-prob"]);

function lrAt(step: number): number {
  if (step < warmup) return (peakLr * (step + 1)) / warmup;
  const p = Math.min(1, (step - warmup) / Math.max(1, steps - warmup));
  return minLr + 0.5 * (peakLr - minLr) * (1 + Math.cos(Math.PI * p));
}

function fmtTime(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s - 60 * m)).padStart(2, "0")}s`;
}

function encodeBlocks(tok: PreTrainedTokenizer, blocks: readonly string[]): number[][] {
  return blocks.map((b) => tok.encode(b, { addSpecialTokens: false }));
}

/** Masked-token top-1 accuracy on fixed masked rows (forward only). */
async function evalAccuracy(model: PreTrainedModel, rows: { inputIds: number[][]; labels: number[][] }): Promise<number> {
  let correct = 0;
  let total = 0;
  for (let r0 = 0; r0 < rows.inputIds.length; r0 += batchSize) {
    const ids = rows.inputIds.slice(r0, r0 + batchSize);
    const out = await model.forward({ inputIds: ids });
    const logits = out.logits!;
    const acc = maskedAccuracy(logits.data, logits.shape[2], rows.labels.slice(r0, r0 + batchSize));
    correct += acc.correct;
    total += acc.total;
  }
  return correct / total;
}

interface Progress {
  step: number;
  tokensSeen: number;
  loss: number;
  accBefore: number;
  accAfter: number | null;
  /** Accuracy of always answering the corpus's most frequent token: the bar a model must clear to use context. */
  accUnigram: number;
  evalMasked: number;
  seconds: number;
}

function writeCard(
  dir: string,
  config: Record<string, unknown>,
  params: number,
  corpus: { blocks: number; rows: number },
  p: Progress,
): void {
  const pct = (x: number | null) => (x === null ? "n/a" : `${(100 * x).toFixed(1)}%`);
  const card = `---
license: mit
language: en
library_name: peftkit
tags: [roberta, wordnet, tiny, fill-mask]
---

# wordnet-bert

A tiny RoBERTa-architecture encoder, pretrained from scratch by [peftkit](../../README.md) with
masked language modelling, as the encoder of the \`wordnet-bench\` task suite. It has read only
WordNet's definitions and example sentences.

## Data

- The text of \`models/wordnet-llama\` (\`src/data/corpus.ts\`, \`pretrainingBlocks\`): per training synset a
  "lemma: definition" line and its example sentences. Synsets whose hash falls in the lowest
  ${DEFAULT_HELD_OUT_FRACTION * 100}% (\`src/data/split.ts\`) are held out and contribute nothing.
- ${corpus.blocks} synset blocks in a seeded order, packed RoBERTa-style into ${corpus.rows} rows of ${seqLen} tokens
  (\`<s>\`, blocks each followed by \`</s>\`, \`</s>\`).
- Tokenizer: byte-level BPE, ${config.vocab_size} tokens, trained on the same text; RoBERTa's specials
  \`<s>\`=0, \`<pad>\`=1, \`</s>\`=2, \`<unk>\`=3, \`<mask>\`=4 and its post-processor (\`<s> A </s>\`, \`<s> A </s></s> B </s>\`).

## Model

RoBERTa (\`RobertaForMaskedLM\`): hidden ${config.hidden_size}, ${config.num_hidden_layers} layers, ${config.num_attention_heads} heads,
intermediate ${config.intermediate_size}, ${(config.max_position_embeddings as number) - 2} positions, masked-LM decoder tied to the word
embeddings, ${params} parameters, stored in float16.

## Training

Masked language modelling as transformers' DataCollatorForLanguageModeling: ${Math.round(maskProb * 100)}% of tokens selected in training (15% in the held-out evaluation),
of which 80% become \`<mask>\`, 10% a random token, 10% stay; fresh masks every step. Full training with
peftkit's \`FullTrainer\`: AdamW (weight decay 0.01), peak learning rate ${peakLr}, ${warmup} warm-up steps then cosine decay
to ${Number(minLr.toPrecision(3))}, gradient clipping at 1, batches of ${batchSize} rows, seed ${seed}.

- Steps: ${p.step}; tokens seen: ${p.tokensSeen}
- Final training loss (mean of the last steps): ${p.loss.toFixed(3)}
- Masked-token top-1 accuracy on held-out synsets' text (${p.evalMasked} masked positions): ${pct(p.accBefore)} before training, ${pct(p.accAfter)} after
  (chance 1/${config.vocab_size}; always answering the most frequent token scores ${pct(p.accUnigram)})
- Wall time: ${fmtTime(p.seconds)} (ONNX Runtime on ${threads} thread${threads === 1 ? "" : "s"})

Reproduce with:

\`\`\`
npm run pretrain-encoder
\`\`\`

## Intended use

A base encoder for classification and tagging tasks on WordNet text, fine-tuned with peftkit. It
loads with transformers' \`AutoModelForSequenceClassification\` / \`AutoModelForTokenClassification\`
(the head is new) and \`AutoModelForMaskedLM\`. It is not a general-purpose encoder.
`;
  writeFileSync(join(dir, "README.md"), card);
}

/** Writes the folder next to its destination and swaps it in, so a reader never sees half a model. */
function saveFolder(model: PreTrainedModel, tokDir: string, write: (dir: string) => void): void {
  const tmp = `${outDir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  model.savePretrained(tmp, { dtype: "f16" });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(tmp, f), readFileSync(join(tokDir, f), "utf8"));
  write(tmp);
  const old = `${outDir}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(outDir)) renameSync(outDir, old);
  renameSync(tmp, outDir);
  rmSync(old, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const wn = WordNet.load();
  const blocks = encoderPretrainingBlocks(wn, seed);
  console.log(`wordnet: ${wn.synsets.length} synsets, ${blocks.length} training blocks (${(performance.now() - t0).toFixed(0)} ms)`);

  const tokDir = join(REPO, "dist/encoder-model-tokenizer");
  const bpe = trainBpe(countWords(blocks), { vocabSize, specialTokens: ROBERTA_SPECIAL_TOKENS });
  saveRobertaTokenizer(tokDir, bpe, { modelMaxLength: seqLen });
  const tok = await AutoTokenizer.fromPretrained(tokDir);
  const [bos, pad, eos, , mask] = ROBERTA_SPECIAL_TOKENS.map((t) => tok.convertTokensToIds(t));
  console.log(`tokenizer: ${tok.vocabSize} tokens, ${bpe.merges.length} merges (${(performance.now() - t0).toFixed(0)} ms)`);

  const rows = packRows(encodeBlocks(tok, blocks), seqLen, bos, eos);
  const maskOpts: MaskOptions = { maskTokenId: mask, vocabSize: tok.vocabSize, specialIds: new Set([bos, pad, eos, mask]) };
  // Held-out rows and their masks are fixed, so accuracies before and after compare the same positions.
  const heldRows = packRows(encodeBlocks(tok, heldOutBlocks(wn)), seqLen, bos, eos).slice(0, evalRows);
  const heldMasked = maskTokens(heldRows, new Rng(seed + 2), maskOpts);
  const trainMaskOpts: MaskOptions = { ...maskOpts, probability: maskProb };
  const evalLabels = heldMasked.labels.flat().filter((l) => l !== -100);
  const evalMasked = evalLabels.length;
  const counts = new Map<number, number>();
  for (const r of rows) for (const id of r) if (!maskOpts.specialIds.has(id)) counts.set(id, (counts.get(id) ?? 0) + 1);
  const commonest = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  const accUnigram = evalLabels.filter((l) => l === commonest).length / evalMasked;
  console.log(
    `corpus: ${rows.length} rows of ${seqLen} tokens; held-out eval: ${heldRows.length} rows, ${evalMasked} masked positions ` +
      `(most frequent token ${JSON.stringify(tok.decode([commonest]))} alone scores ${(100 * accUnigram).toFixed(2)}%)`,
  );

  const config: Record<string, unknown> = {
    architectures: ["RobertaForMaskedLM"],
    model_type: "roberta",
    vocab_size: tok.vocabSize,
    hidden_size: 256,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    intermediate_size: 1024,
    hidden_act: "gelu",
    hidden_dropout_prob: 0.1,
    attention_probs_dropout_prob: 0.1,
    // RoBERTa counts positions from padding_idx + 1 = 2, so seqLen tokens need seqLen + 2 rows.
    max_position_embeddings: seqLen + 2,
    type_vocab_size: 1,
    initializer_range: 0.02,
    layer_norm_eps: 1e-5,
    position_embedding_type: "absolute",
    tie_word_embeddings: true,
    bos_token_id: bos,
    pad_token_id: pad,
    eos_token_id: eos,
  };
  const model = PreTrainedModel.fromConfig(config, "masked_lm", { seed, threads });
  const distinct = new Set(model.weights.values());
  const params = [...distinct].reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  console.log(`model: ${params} parameters (${((params * 2) / 1e6).toFixed(2)} MB in f16)`);
  if (params * 2 > MAX_BYTES) throw new Error(`the model would take ${params * 2} bytes in f16, over the ${MAX_BYTES} limit`);

  const accBefore = await evalAccuracy(model, heldMasked);
  console.log(`held-out masked-token accuracy before training: ${(100 * accBefore).toFixed(2)}%`);
  // No dropout: peftkit's training graphs have none, and the small model does not overfit in the step budget.
  const trainer = await FullTrainer.create(model, { optimizer: { kind: "adamw", weightDecay: 0.01 }, clipNorm: 1 });
  console.log(`compiled training step (${(performance.now() - t0).toFixed(0)} ms)`);

  // Row order: a seeded permutation per epoch; masks: a separate seeded stream, fresh every step.
  const orderRng = new Rng(seed + 1);
  const maskRng = new Rng(seed + 3);
  let order: number[] = [];
  let cursor = 0;
  const nextRow = (): number[] => {
    if (cursor >= order.length) {
      order = Array.from({ length: rows.length }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(orderRng.next() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      cursor = 0;
    }
    return rows[order[cursor++]];
  };

  const tTrain = performance.now();
  let recent: number[] = [];
  const progress: Progress = { step: 0, tokensSeen: 0, loss: Number.NaN, accBefore, accAfter: null, accUnigram, evalMasked, seconds: 0 };
  for (let step = 0; step < steps; step++) {
    const batch = maskTokens(
      Array.from({ length: batchSize }, () => nextRow()),
      maskRng,
      trainMaskOpts,
    );
    const lr = lrAt(step);
    const res = await trainer.train(batch, { lr, seed: seed + step });
    if (!Number.isFinite(res.loss)) throw new Error(`loss became ${res.loss} at step ${step + 1}`);
    recent.push(res.loss);
    if (recent.length > 50) recent = recent.slice(-50);
    const done = step + 1;
    const secs = (performance.now() - tTrain) / 1000;
    progress.step = done;
    progress.tokensSeen = done * batchSize * seqLen;
    progress.loss = recent.reduce((a, b) => a + b, 0) / recent.length;
    progress.seconds = (performance.now() - t0) / 1000;
    if (done % logEvery === 0 || done === 1 || done === steps) {
      const tps = (done * batchSize * seqLen) / secs;
      console.log(
        `step ${String(done).padStart(5)}/${steps}  loss ${res.loss.toFixed(4)}  avg ${progress.loss.toFixed(4)}  lr ${lr.toExponential(2)}  ` +
          `gnorm ${res.gradNorm.toFixed(2)}  ${tps.toFixed(0)} tok/s  elapsed ${fmtTime(secs)}  eta ${fmtTime((secs / done) * (steps - done))}`,
      );
    }
    if (done % saveEvery === 0 || done === steps) {
      progress.accAfter = await evalAccuracy(model, heldMasked);
      progress.seconds = (performance.now() - t0) / 1000;
      saveFolder(model, tokDir, (dir) => writeCard(dir, config, params, { blocks: blocks.length, rows: rows.length }, progress));
      console.log(`saved ${outDir} at step ${done}  held-out masked-token accuracy ${(100 * progress.accAfter).toFixed(2)}%`);
    }
  }
  await trainer.release();
  await model.release();
  console.log(
    `done: ${progress.step} steps, ${progress.tokensSeen} tokens, final loss ${progress.loss.toFixed(4)}, ` +
      `held-out masked-token accuracy ${(100 * accBefore).toFixed(2)}% -> ${(100 * (progress.accAfter ?? 0)).toFixed(2)}%, ${fmtTime(progress.seconds)}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
