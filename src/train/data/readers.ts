/**
 * Readers: turn a file or folder into raw records, each tagged with where it came from so that
 * every later error can name the file and line (JSONL, CSV), array index (JSON) or row (Parquet).
 */
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { extname, join, relative } from "node:path";
import { parquetReadObjects } from "hyparquet";
import { parseCsv } from "./csv.js";
import { DatasetError, typeName } from "./errors.js";

export type SourceKind = "jsonl" | "json" | "csv" | "parquet" | "txt";

export interface RawRecord {
  /** `file:line`, `file: [i]`, `file: row r` or the .txt file's path. */
  where: string;
  /** The record's fields; absent when the record could not be parsed. */
  value?: Record<string, unknown>;
  /** Why the record could not be parsed (bad JSON, wrong CSV field count, ...). */
  error?: string;
  /** CSV values are all strings; formats may read numbers out of them (class labels). */
  fromText?: boolean;
}

export interface Source {
  path: string;
  kind: SourceKind;
  records: RawRecord[];
  /** sha256 (hex) of the bytes read, or of the file list with sizes and mtimes for a folder. */
  fingerprint: string;
}

const EXTENSIONS: Record<string, SourceKind> = {
  ".jsonl": "jsonl",
  ".ndjson": "jsonl",
  ".json": "json",
  ".csv": "csv",
  ".parquet": "parquet",
  ".txt": "txt",
};

/** The reader a path needs: by extension for files, the .txt reader for folders. */
export async function sourceKind(path: string): Promise<SourceKind> {
  let s: Awaited<ReturnType<typeof stat>>;
  try {
    s = await stat(path);
  } catch (e) {
    throw new DatasetError(
      `cannot read dataset ${path}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file or folder" : (e as Error).message}`,
    );
  }
  if (s.isDirectory()) return "txt";
  const kind = EXTENSIONS[extname(path).toLowerCase()];
  if (kind === undefined) {
    throw new DatasetError(
      `${path}: unknown dataset file type ${JSON.stringify(extname(path) || "(no extension)")}; expected .jsonl, .json, .csv, .parquet, .txt or a folder of .txt files`,
    );
  }
  return kind;
}

function sha256(...parts: (string | Uint8Array)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

async function readBytes(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new DatasetError(`cannot read dataset ${path}: ${(e as Error).message}`);
  }
}

function decodeUtf8(path: string, bytes: Buffer): string {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new DatasetError(`${path}: not valid UTF-8 text`);
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Reads a dataset file or folder into raw records. File-level problems throw a DatasetError. */
export async function readSource(path: string): Promise<Source> {
  const kind = await sourceKind(path);
  if (kind === "txt") return (await stat(path)).isDirectory() ? readTextFolder(path) : readTextFile(path);
  const bytes = await readBytes(path);
  const fingerprint = sha256(bytes);
  switch (kind) {
    case "jsonl":
      return { path, kind, records: parseJsonl(path, decodeUtf8(path, bytes)), fingerprint };
    case "json":
      return { path, kind, records: parseJsonDocument(path, decodeUtf8(path, bytes)), fingerprint };
    case "csv":
      return { path, kind, records: csvRecords(path, decodeUtf8(path, bytes)), fingerprint };
    case "parquet":
      return { path, kind, records: await parquetRecords(path, bytes), fingerprint };
  }
}

export function parseJsonl(path: string, text: string): RawRecord[] {
  const out: RawRecord[] = [];
  const lines = text.split("\n");
  lines.forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") return;
    const where = `${path}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      out.push({ where, error: `malformed JSON: ${(e as Error).message}` });
      return;
    }
    if (typeName(v) !== "object") out.push({ where, error: `expected a JSON object, got ${typeName(v)}` });
    else out.push({ where, value: v as Record<string, unknown> });
  });
  return out;
}

/** 1-based line of a character offset, for JSON.parse errors that give a position. */
function lineOfOffset(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

export function parseJsonDocument(path: string, text: string): RawRecord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    // V8 quotes the text around the error, newlines included; keep the message on one line.
    const msg = (e as Error).message.replace(/\s+/g, " ");
    const pos = /position (\d+)/.exec(msg);
    const lineCol = /\(line (\d+) column \d+\)/.exec(msg);
    const at = lineCol ? `:${lineCol[1]}` : pos ? `:${lineOfOffset(text, Number(pos[1]))}` : "";
    throw new DatasetError(`${path}${at}: malformed JSON: ${msg}`);
  }
  let items: unknown[];
  let prefix = "";
  if (Array.isArray(doc)) items = doc;
  else if (typeName(doc) === "object") {
    const o = doc as Record<string, unknown>;
    const key = Array.isArray(o.data) ? "data" : Array.isArray(o.train) ? "train" : null;
    if (key === null) {
      throw new DatasetError(
        `${path}: expected a top-level array of records or an object with a "data" or "train" array; found keys ${JSON.stringify(Object.keys(o))}`,
      );
    }
    items = o[key] as unknown[];
    prefix = key;
  } else throw new DatasetError(`${path}: expected a top-level array of records, got ${typeName(doc)}`);
  return items.map((v, i) => {
    const where = `${path}: ${prefix}[${i}]`;
    return typeName(v) === "object"
      ? { where, value: v as Record<string, unknown> }
      : { where, error: `expected an object, got ${typeName(v)}` };
  });
}

export function csvRecords(path: string, text: string): RawRecord[] {
  const rows = parseCsv(text);
  if (rows.length === 0) throw new DatasetError(`${path}: empty CSV file (no header row)`);
  const header = rows[0];
  if (header.error) throw new DatasetError(`${path}:${header.line}: header row: ${header.error}`);
  const names = header.fields;
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new DatasetError(`${path}:${header.line}: header row names column ${JSON.stringify(name)} twice`);
    seen.add(name);
  }
  return rows.slice(1).map((row) => {
    const where = `${path}:${row.line}`;
    if (row.error) return { where, error: row.error };
    if (row.fields.length !== names.length) {
      return { where, error: `has ${row.fields.length} field${row.fields.length === 1 ? "" : "s"}, but the header has ${names.length}` };
    }
    const value: Record<string, unknown> = {};
    names.forEach((name, j) => {
      value[name] = row.fields[j];
    });
    return { where, value, fromText: true };
  });
}

/** Parquet INT64 columns arrive as bigint; plain numbers are what the formats check for. */
function fromParquet(v: unknown): unknown {
  if (typeof v === "bigint") return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  if (Array.isArray(v)) return v.map(fromParquet);
  if (v instanceof Uint8Array) return v;
  if (v !== null && typeof v === "object" && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromParquet(x)]));
  }
  return v;
}

export async function parquetRecords(path: string, bytes: Buffer): Promise<RawRecord[]> {
  // hyparquet reads from any {byteLength, slice}; an ArrayBuffer of exactly the file's bytes is one.
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({ file, rowFormat: "object" });
  } catch (e) {
    throw new DatasetError(`${path}: cannot read Parquet file: ${(e as Error).message}`);
  }
  return rows.map((r, i) => ({ where: `${path}: row ${i}`, value: fromParquet({ ...r }) as Record<string, unknown> }));
}

async function readTextFile(path: string): Promise<Source> {
  const bytes = await readBytes(path);
  return { path, kind: "txt", records: [{ where: path, value: { text: decodeUtf8(path, bytes) } }], fingerprint: sha256(bytes) };
}

async function listTxt(root: string, dir: string, out: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  for (const e of entries) {
    const full = join(dir, e.name);
    if (e.isDirectory()) await listTxt(root, full, out);
    else if (e.isFile() && e.name.toLowerCase().endsWith(".txt")) out.push(relative(root, full));
  }
}

/** Each .txt file under the folder (recursively, in path order) is one "text" record. */
async function readTextFolder(path: string): Promise<Source> {
  const files: string[] = [];
  try {
    await listTxt(path, path, files);
  } catch (e) {
    throw new DatasetError(`cannot read dataset folder ${path}: ${(e as Error).message}`);
  }
  if (files.length === 0) throw new DatasetError(`${path}: the folder holds no .txt files`);
  files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const listing: string[] = [];
  const records: RawRecord[] = [];
  for (const rel of files) {
    const full = join(path, rel);
    const s = await stat(full);
    listing.push(`${rel}\u0000${s.size}\u0000${s.mtimeMs}`);
    records.push({ where: full, value: { text: decodeUtf8(full, await readBytes(full)) } });
  }
  return { path, kind: "txt", records, fingerprint: sha256(listing.join("\n")) };
}

/**
 * The fingerprint alone, without parsing: lets a cache hit skip reading the records. For files
 * this still reads the bytes (hashing is the point); for folders only the listing.
 */
export async function sourceFingerprint(path: string): Promise<{ kind: SourceKind; fingerprint: string }> {
  const kind = await sourceKind(path);
  if (kind === "txt" && (await stat(path)).isDirectory()) {
    const files: string[] = [];
    await listTxt(path, path, files);
    files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const listing: string[] = [];
    for (const rel of files) {
      const s = await stat(join(path, rel));
      listing.push(`${rel}\u0000${s.size}\u0000${s.mtimeMs}`);
    }
    return { kind, fingerprint: sha256(listing.join("\n")) };
  }
  return { kind, fingerprint: sha256(await readBytes(path)) };
}
