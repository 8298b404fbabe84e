/**
 * Datasets for training: read, validate, tokenise (cached), split and batch.
 *
 * ```ts
 * const ds = await loadDataset("data.jsonl", { tokenizer, maxLength: 512, onBadRecord: "skip" });
 * // ds.examples: { inputIds, labels (-100 = no loss; per-token class ids for token_classification) | label (class id), source: "data.jsonl:17" }[]
 * // ds.format, ds.skipped (one message per skipped record), ds.truncated, ds.labelNames?, ds.numLabels?, ds.fromCache
 * const { train, eval } = splitDataset(ds.examples, 0.1, seed);
 * // padId: any id works (mask 0, label -100), e.g. tokenizer.padTokenId ?? tokenizer.eosTokenId
 * const stream = new BatchStream(train, { batchSize: 8, seed, padId });
 * for (const { epoch, index, batch } of stream.iterate(resumeAt, epochs)) trainer.train(batch, ...);
 * ```
 * `datasetFromRecords(records, { tokenizer, name, ... })` does the same for records built in code
 * (named `name: [i]` in messages; not cached).
 *
 * Files (chosen by extension; errors name the record as shown):
 * - `.jsonl` / `.ndjson`: one JSON object per line (blank lines ignored) — `data.jsonl:17`
 * - `.json`: a top-level array, or an object with a `"data"` or `"train"` array — `data.json: [3]`, `data.json: train[3]`
 * - `.csv`: RFC 4180 with a header row; all values are strings (a plain integer label is a class id) — `data.csv:5` (the line the row starts on)
 * - `.parquet`: read with hyparquet; rows are 0-based — `data.parquet: row 4`
 * - `.txt`, or a folder of `.txt` files (recursive, path order): each file is one "text" record — its path
 *
 * Formats (detected from the first readable record, or forced with `format`):
 * - `text` {text}: loss on every token; BOS (if the tokenizer adds one) + text + EOS.
 * - `prompt_completion` {prompt, completion}: BOS + prompt + completion + EOS, tokenised separately;
 *   loss on the completion and its EOS only.
 * - `chat` {messages: [{role, content}]}: rendered with the tokenizer's chat template (or
 *   `chatTemplate`); loss on assistant turns only, end-of-turn marker included. The spans come from
 *   rendering the prefix before each assistant message (with the generation prompt) and through it,
 *   and comparing token counts; a template that does not render prefixes as prefixes of the whole
 *   conversation (e.g. Qwen3's for multi-turn, which drops earlier thinking blocks) makes that record
 *   bad, with a message suggesting a training template.
 * - `classification` {text, label}: integer labels are class ids (numLabels = max + 1); string
 *   labels map through `labels` or, by default, the distinct labels in sorted (code-unit) order,
 *   returned as labelNames. With `labels` (a trained model's classes), a string label not among
 *   them or an integer label >= labels.length is a bad record. `trainingLabels` (labels.ts) picks
 *   a training run's classes from the data and the base model's config.json.
 * - `pair_classification` {text, text_pair, label}: encoded with the tokenizer's pair template
 *   (`[CLS] A [SEP] B [SEP]`, `<s> A </s></s> B </s>`); labels as for classification. maxLength
 *   cuts the longer text first ("longest_first", as the Rust tokenizers library does).
 * - `token_classification` {tokens: [word, ...], tags: [tag, ...]} (same length, words without
 *   whitespace): the words joined with single spaces; each word's tag on its first sub-token, -100
 *   on its other sub-tokens and on special tokens (transformers' run_ner.py, label_all_tokens
 *   False). Tags are class ids or names exactly like classification labels (sorted names, or
 *   `labels`); labelNames/numLabels describe the tags.
 *
 * Bad records (unparsable JSON line, missing field, wrong type, wrong CSV field count, label of the
 * other kind, chat template failure) raise a DatasetError `file:line: field "x" must be ...`, or with
 * `onBadRecord: "skip"` are counted in `skipped`. No usable record at all is an error.
 *
 * Truncation to maxLength keeps the start; prompt_completion keeps the whole completion when it fits
 * beside at least one prompt token and cuts the prompt's start (details in tokenize.ts).
 *
 * Cache: `<cacheDir>/dataset-<sha256>.bin` (cacheDir defaults to `<os.tmpdir()>/peftkit-cache`; null
 * turns caching off); the key covers the file bytes (a folder: paths, sizes, mtimes), the path, the
 * tokenizer files, chat template, format, maxLength, onBadRecord and labels. Written atomically.
 *
 * Batching (BatchStream / makeBatches), all determined by (seed, epoch):
 * - padding with dynamic bucketing: shuffle, sort by length within windows of 50 × batchSize, cut
 *   into batches, shuffle the batch order; right padding (mask 0, label -100).
 * - packing (`pack: true, seqLen`): shuffle, concatenate (EOS between examples), cut into rows of
 *   exactly seqLen; the last row is padded rather than dropped.
 * - `shuffle: false` keeps the order (evaluation). Classification batches have labels [[c], ...].
 * `stream.batch(epoch, index)` / `stream.iterate({ epoch, index })` start anywhere and give the same
 * batches as an uninterrupted run; `batchesPerEpoch` is the same for every epoch.
 */
export { type Batch, type BatchOptions, BatchStream, deriveSeed, makeBatches, type StreamPosition, splitDataset } from "./batching.js";
export { parseCsv } from "./csv.js";
export { DatasetError } from "./errors.js";
export { DATA_FORMATS, type DataFormat, formatOfFields, SEQUENCE_CLASSIFICATION_FORMATS } from "./formats.js";
export { type TrainingLabels, trainingLabels } from "./labels.js";
export { datasetFromRecords, defaultCacheDir, type LoadedDataset, type LoadOptions, loadDataset, type OnBadRecord } from "./load.js";
export { type RawRecord, readSource, type SourceKind } from "./readers.js";
export { assignTaskIds, taskTableOf } from "./tasks.js";
export { type Example, IGNORE_INDEX } from "./tokenize.js";
