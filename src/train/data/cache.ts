/**
 * The tokenised-dataset cache: one binary file per key (a JSON header, then the token ids and
 * labels as little-endian int32), written to a temporary name and renamed into place so a
 * reader never sees a partial file.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type DataFormat, SEQUENCE_CLASSIFICATION_FORMATS } from "./formats.js";
import type { Example } from "./tokenize.js";

// 02: pair classification examples carry token type ids (01 files lack them and are rebuilt).
// 03: examples carry their record's `task` field (header.tasks).
const MAGIC = "PKDSET03";

export interface CachedDataset {
  format: DataFormat;
  examples: Example[];
  skipped: string[];
  truncated: number;
  labelNames?: string[];
  numLabels?: number;
}

interface Header {
  format: DataFormat;
  skipped: string[];
  truncated: number;
  labelNames?: string[];
  numLabels?: number;
  sources: string[];
  lengths: number[];
  classLabels?: number[];
  /** Indices of the examples with token type ids; their ids follow the token ids, in this order. */
  typed?: number[];
  /** Each example's `task` field (null: none), when some example has one. */
  tasks?: (string | number | null)[];
}

export function cachePath(dir: string, key: string): string {
  return join(dir, `dataset-${key}.bin`);
}

export async function writeCache(dir: string, key: string, d: CachedDataset): Promise<void> {
  // One class id per example instead of one label per token.
  const classification = SEQUENCE_CLASSIFICATION_FORMATS.includes(d.format);
  const header: Header = {
    format: d.format,
    skipped: d.skipped,
    truncated: d.truncated,
    labelNames: d.labelNames,
    numLabels: d.numLabels,
    sources: d.examples.map((e) => e.source),
    lengths: d.examples.map((e) => e.inputIds.length),
    classLabels: classification ? d.examples.map((e) => e.label!) : undefined,
  };
  const typed = d.examples.flatMap((e, i) => (e.tokenTypeIds ? [i] : []));
  if (typed.length) header.typed = typed;
  if (d.examples.some((e) => e.task !== undefined)) header.tasks = d.examples.map((e) => e.task ?? null);
  const headerBytes = Buffer.from(JSON.stringify(header), "utf8");
  const total = header.lengths.reduce((a, b) => a + b, 0);
  const typedTotal = typed.reduce((a, i) => a + header.lengths[i], 0);
  const ids = new Int32Array((classification ? total : 2 * total) + typedTotal);
  let at = 0;
  for (const e of d.examples) {
    ids.set(e.inputIds, at);
    if (!classification) ids.set(e.labels!, total + at);
    at += e.inputIds.length;
  }
  let typeAt = classification ? total : 2 * total;
  for (const i of typed) {
    ids.set(d.examples[i].tokenTypeIds!, typeAt);
    typeAt += header.lengths[i];
  }
  const pad = (4 - ((MAGIC.length + 4 + headerBytes.length) % 4)) % 4;
  const len = Buffer.alloc(4);
  len.writeUInt32LE(headerBytes.length);
  const body = Buffer.concat([
    Buffer.from(MAGIC, "ascii"),
    len,
    headerBytes,
    Buffer.alloc(pad),
    Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength),
  ]);
  await mkdir(dir, { recursive: true });
  const final = cachePath(dir, key);
  const tmp = `${final}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, body);
    await rename(tmp, final);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** The cached dataset, or null when there is none or it cannot be read (then it is rebuilt). */
export async function readCache(dir: string, key: string): Promise<CachedDataset | null> {
  let buf: Buffer;
  try {
    buf = await readFile(cachePath(dir, key));
  } catch {
    return null;
  }
  try {
    if (buf.toString("ascii", 0, MAGIC.length) !== MAGIC) return null;
    const hlen = buf.readUInt32LE(MAGIC.length);
    const hstart = MAGIC.length + 4;
    const header = JSON.parse(buf.toString("utf8", hstart, hstart + hlen)) as Header;
    const dataStart = hstart + hlen + ((4 - ((hstart + hlen) % 4)) % 4);
    const data = new Int32Array(buf.buffer.slice(buf.byteOffset + dataStart, buf.byteOffset + buf.byteLength));
    const classification = SEQUENCE_CLASSIFICATION_FORMATS.includes(header.format);
    const total = header.lengths.reduce((a, b) => a + b, 0);
    const typed = header.typed ?? [];
    const typedTotal = typed.reduce((a, i) => a + (header.lengths[i] ?? Number.NaN), 0);
    if (data.length !== (classification ? total : 2 * total) + typedTotal || header.sources.length !== header.lengths.length) return null;
    const examples: Example[] = [];
    let at = 0;
    header.lengths.forEach((n, i) => {
      const inputIds = Array.from(data.subarray(at, at + n));
      const e: Example = classification
        ? { inputIds, label: header.classLabels![i], source: header.sources[i] }
        : { inputIds, labels: Array.from(data.subarray(total + at, total + at + n)), source: header.sources[i] };
      examples.push(e);
      at += n;
    });
    let typeAt = classification ? total : 2 * total;
    for (const i of typed) {
      const n = header.lengths[i];
      examples[i].tokenTypeIds = Array.from(data.subarray(typeAt, typeAt + n));
      typeAt += n;
    }
    header.tasks?.forEach((t, i) => {
      if (t !== null) examples[i].task = t;
    });
    return {
      format: header.format,
      examples,
      skipped: header.skipped,
      truncated: header.truncated,
      labelNames: header.labelNames,
      numLabels: header.numLabels,
    };
  } catch {
    return null;
  }
}
