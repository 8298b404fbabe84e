/** loadDataset: read, validate, tokenise and cache one dataset file or folder. */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { PreTrainedTokenizer } from "../../io/tokenizer.js";
import { cachePath, readCache, writeCache } from "./cache.js";
import { DatasetError, typeName } from "./errors.js";
import { DATA_FORMATS, type DataFormat, detectFormat, RecordError, type TypedRecord, typeRecord } from "./formats.js";
import { type RawRecord, readSource, sourceFingerprint } from "./readers.js";
import { type Example, RecordTokenizer } from "./tokenize.js";

export type OnBadRecord = "error" | "skip";

export interface LoadOptions {
  tokenizer: PreTrainedTokenizer;
  /** Force a record format instead of detecting it from the first record's fields. */
  format?: DataFormat;
  /** Longest example in tokens (see tokenize.ts for what is cut). Default: the tokenizer's model_max_length, else no limit. */
  maxLength?: number | null;
  /** "error" (default): the first bad record stops loading. "skip": bad records are left out and listed in `skipped`. */
  onBadRecord?: OnBadRecord;
  /** Where tokenised datasets are cached; default `<os.tmpdir()>/peftkit-cache`; null disables the cache. */
  cacheDir?: string | null;
  /** (Pair/token) classification: the class names, in class-id order. Default: the distinct string labels (tags), sorted. */
  labels?: readonly string[];
  /** Render chat records with this template instead of the tokenizer's own. */
  chatTemplate?: string;
  /** Extra chat template variables (e.g. `{ enable_thinking: false }`). */
  chatTemplateVars?: Record<string, unknown>;
}

export interface LoadedDataset {
  examples: Example[];
  format: DataFormat;
  /** One message per record left out under `onBadRecord: "skip"`, each naming file, line and field. */
  skipped: string[];
  /** How many examples were cut to maxLength. */
  truncated: number;
  /** (Pair/token) classification with string labels or tags: the class names in class-id order. */
  labelNames?: string[];
  /** (Pair/token) classification: number of classes (labelNames.length, or the largest integer label or tag + 1). */
  numLabels?: number;
  /** True when the examples came from the cache. */
  fromCache: boolean;
  /** The cache file used or written (absent when caching is off). */
  cacheFile?: string;
}

/** Bump when the cached representation or the tokenisation rules change. */
const CACHE_VERSION = 2;

export function defaultCacheDir(): string {
  return join(tmpdir(), "peftkit-cache");
}

const tokenizerHashes = new WeakMap<PreTrainedTokenizer, string | null>();

/** sha256 over the tokenizer's files, or null when they cannot be read (caching is then skipped). */
async function tokenizerHash(tok: PreTrainedTokenizer): Promise<string | null> {
  if (tokenizerHashes.has(tok)) return tokenizerHashes.get(tok)!;
  let out: string | null;
  try {
    const h = createHash("sha256");
    h.update(await readFile(join(tok.dir, "tokenizer.json")));
    for (const f of ["tokenizer_config.json", "special_tokens_map.json"]) {
      h.update(`\u0000${f}\u0000`);
      try {
        h.update(await readFile(join(tok.dir, f)));
      } catch {
        h.update("absent");
      }
    }
    out = h.digest("hex");
  } catch {
    out = null;
  }
  tokenizerHashes.set(tok, out);
  return out;
}

interface Settings {
  format?: DataFormat;
  maxLength: number | null;
  onBadRecord: OnBadRecord;
  labels?: readonly string[];
}

function settingsOf(opts: LoadOptions): Settings {
  if (opts.format !== undefined && !DATA_FORMATS.includes(opts.format)) {
    throw new DatasetError(`unknown dataset format ${JSON.stringify(opts.format)}; expected one of ${DATA_FORMATS.join(", ")}`);
  }
  const onBadRecord = opts.onBadRecord ?? "error";
  if (onBadRecord !== "error" && onBadRecord !== "skip") {
    throw new DatasetError(`onBadRecord must be "error" or "skip", got ${JSON.stringify(onBadRecord)}`);
  }
  const maxLength = opts.maxLength === undefined ? opts.tokenizer.modelMaxLength : opts.maxLength;
  if (maxLength !== null && (!Number.isInteger(maxLength) || maxLength < 1)) {
    throw new DatasetError(`maxLength must be a positive integer, got ${maxLength}`);
  }
  if (opts.labels !== undefined) {
    if (!Array.isArray(opts.labels) || opts.labels.length === 0 || opts.labels.some((l) => typeof l !== "string")) {
      throw new DatasetError("labels must be a non-empty list of strings");
    }
    if (new Set(opts.labels).size !== opts.labels.length)
      throw new DatasetError(`labels lists a class twice: ${JSON.stringify(opts.labels)}`);
  }
  return { format: opts.format, maxLength, onBadRecord, labels: opts.labels };
}

/**
 * Reads a dataset (.jsonl/.ndjson, .json, .csv, .parquet, .txt, or a folder of .txt files),
 * checks every record, tokenises it and caches the result. Throws a DatasetError for a bad file,
 * an empty dataset, or (with onBadRecord "error") the first bad record.
 */
export async function loadDataset(path: string, opts: LoadOptions): Promise<LoadedDataset> {
  const settings = settingsOf(opts);
  const cacheDir = opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir;
  const tokHash = cacheDir === null ? null : await tokenizerHash(opts.tokenizer);
  const keyOf = (kind: string, fingerprint: string): string =>
    createHash("sha256")
      .update(
        JSON.stringify({
          v: CACHE_VERSION,
          path: resolve(path),
          kind,
          fingerprint,
          tokenizer: tokHash,
          chatTemplate: opts.chatTemplate ?? opts.tokenizer.chatTemplate,
          chatTemplateVars: opts.chatTemplateVars ?? null,
          format: settings.format ?? "auto",
          maxLength: settings.maxLength,
          onBadRecord: settings.onBadRecord,
          labels: settings.labels ?? null,
        }),
      )
      .digest("hex");

  if (cacheDir !== null && tokHash !== null) {
    const { kind, fingerprint } = await sourceFingerprint(path);
    const key = keyOf(kind, fingerprint);
    const hit = await readCache(cacheDir, key);
    if (hit !== null) return { ...hit, fromCache: true, cacheFile: cachePath(cacheDir, key) };
  }
  const source = await readSource(path);
  const built = buildExamples(source.records, path, opts, settings);
  if (cacheDir === null || tokHash === null) return { ...built, fromCache: false };
  // Keyed on the bytes actually parsed, so a file changed since the lookup is never cached under the old key.
  const key = keyOf(source.kind, source.fingerprint);
  try {
    await writeCache(cacheDir, key, built);
  } catch (e) {
    throw new DatasetError(
      `cannot write the dataset cache in ${cacheDir}: ${(e as Error).message} (pass cacheDir: null to disable caching)`,
    );
  }
  return { ...built, fromCache: false, cacheFile: cachePath(cacheDir, key) };
}

/**
 * Builds a dataset from records held in memory (e.g. a task generated by code); `name` stands in
 * for the file name in messages (records are `name: [i]`). Never cached.
 */
export function datasetFromRecords(
  records: readonly Record<string, unknown>[],
  opts: Omit<LoadOptions, "cacheDir"> & { name?: string },
): LoadedDataset {
  const name = opts.name ?? "records";
  if (!Array.isArray(records)) throw new DatasetError(`${name}: expected a list of records, got ${typeName(records)}`);
  const raw: RawRecord[] = records.map((value, i) =>
    typeName(value) === "object"
      ? { where: `${name}: [${i}]`, value }
      : { where: `${name}: [${i}]`, error: `expected an object, got ${typeName(value)}` },
  );
  return { ...buildExamples(raw, name, opts, settingsOf(opts)), fromCache: false };
}

function buildExamples(
  records: readonly RawRecord[],
  name: string,
  opts: LoadOptions,
  s: Settings,
): Omit<LoadedDataset, "fromCache" | "cacheFile"> {
  const format = s.format ?? detectFormat(records, name);
  if (format === "chat" && opts.chatTemplate === undefined && opts.tokenizer.chatTemplate === null) {
    throw new DatasetError(
      `${name}: chat records need a chat template, and the tokenizer in ${opts.tokenizer.dir} has none (no chat_template in tokenizer_config.json, chat_template.jinja or chat_template.json); pass chatTemplate or use prompt/completion records`,
    );
  }
  // Collected with the record's position so the report lists them in file order.
  const skippedAt: { at: number; msg: string }[] = [];
  const bad = (t: { where: string; at: number }, msg: string): void => {
    const full = `${t.where}: ${msg}`;
    if (s.onBadRecord === "error") throw new DatasetError(full);
    skippedAt.push({ at: t.at, msg: full });
  };

  const typed: Typed[] = [];
  records.forEach((r, at) => {
    try {
      typed.push({ where: r.where, at, rec: typeRecord(r, format) });
    } catch (e) {
      if (!(e instanceof RecordError)) throw e;
      bad({ where: r.where, at }, e.message);
    }
  });

  let labelNames: string[] | undefined;
  let numLabels: number | undefined;
  let labelIds: Map<string, number> | undefined;
  let kept = typed;
  if (format === "classification" || format === "pair_classification" || format === "token_classification") {
    ({ kept, labelNames, numLabels, labelIds } = classLabels(typed, s.labels, bad));
  }

  const rt = new RecordTokenizer(
    { tokenizer: opts.tokenizer, maxLength: s.maxLength, chatTemplate: opts.chatTemplate, chatTemplateVars: opts.chatTemplateVars },
    labelIds,
  );
  if (s.maxLength !== null && s.maxLength < rt.minLength(format)) {
    throw new DatasetError(
      `maxLength ${s.maxLength} is too short for ${format} records with this tokenizer (at least ${rt.minLength(format)})`,
    );
  }
  const examples: Example[] = [];
  let truncated = 0;
  for (const t of kept) {
    try {
      const { example, truncated: cut } = rt.tokenize(t.rec);
      if (cut) truncated++;
      const task = records[t.at].value?.task;
      if (task !== undefined && task !== null && typeof task !== "string" && !(Number.isInteger(task) && (task as number) >= 0)) {
        bad(t, `field "task" must be a task name or a non-negative integer, got ${JSON.stringify(task)}`);
        continue;
      }
      examples.push({ ...example, source: t.where, ...(task !== undefined && task !== null ? { task: task as string | number } : {}) });
    } catch (e) {
      if (e instanceof RecordError) bad(t, e.message);
      else if (e instanceof DatasetError) throw new DatasetError(`${t.where}: ${e.message}`);
      else throw e;
    }
  }
  const skipped = skippedAt.sort((a, b) => a.at - b.at).map((x) => x.msg);
  if (examples.length === 0) {
    throw new DatasetError(
      skipped.length > 0
        ? `${name}: no usable records: all ${skipped.length} were bad; the first: ${skipped[0]}`
        : `${name}: the dataset is empty (no records)`,
    );
  }
  return { examples, format, skipped, truncated, labelNames, numLabels };
}

type Typed = { where: string; at: number; rec: TypedRecord };

/** A record's class labels with the field each came from: `label`, or `tags[i]` for token classification. */
function labelsOf(t: Typed): { field: string; value: number | string }[] {
  const r = t.rec;
  if (r.format === "token_classification") return r.tags.map((value, i) => ({ field: `tags[${i}]`, value }));
  if (r.format === "classification" || r.format === "pair_classification") return [{ field: "label", value: r.label }];
  return [];
}

/**
 * Class ids for classification, pair classification and token classification records; a dataset
 * uses integer labels or string labels, not both (the first record's first label decides).
 */
function classLabels(
  typed: Typed[],
  given: readonly string[] | undefined,
  bad: (t: Typed, msg: string) => void,
): { kept: Typed[]; labelNames?: string[]; numLabels?: number; labelIds?: Map<string, number> } {
  const kept: Typed[] = [];
  if (given !== undefined) {
    const labelIds = new Map(given.map((l, i) => [l, i] as [string, number]));
    for (const t of typed) {
      const problem = labelsOf(t)
        .map(({ field, value: l }) =>
          typeof l === "string" && !labelIds.has(l)
            ? `field "${field}": ${JSON.stringify(l)} is not one of the labels ${JSON.stringify(given)}`
            : typeof l === "number" && l >= given.length
              ? `field "${field}": class id ${l} is out of range for ${given.length} labels`
              : null,
        )
        .find((m) => m !== null);
      if (problem) bad(t, problem);
      else kept.push(t);
    }
    return { kept, labelNames: [...given], numLabels: given.length, labelIds };
  }
  const first = typed.find((t) => labelsOf(t).length > 0);
  if (first === undefined) return { kept };
  const firstLabel = labelsOf(first)[0];
  const kind = typeof firstLabel.value;
  const example = first.where;
  for (const t of typed) {
    const other = labelsOf(t).find(({ value }) => typeof value !== kind);
    if (other) bad(t, `field "${other.field}" is a ${typeof other.value}, but this dataset's labels are ${kind}s (e.g. at ${example})`);
    else kept.push(t);
  }
  const all = kept.flatMap((t) => labelsOf(t).map((l) => l.value));
  if (kind === "number") return { kept, numLabels: all.reduce<number>((m, l) => Math.max(m, l as number), 0) + 1 };
  const labelNames = [...new Set(all as string[])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { kept, labelNames, numLabels: labelNames.length, labelIds: new Map(labelNames.map((l, i) => [l, i] as [string, number])) };
}
