/**
 * Hugging Face model folders: config.json and the weights, either one `model.safetensors` or shards
 * listed in `model.safetensors.index.json`. Shards are opened lazily-by-tensor: opening a checkpoint
 * reads only headers, and `get` reads one tensor.
 */
import * as fs from "node:fs";
import * as nodePath from "node:path";
import { PeftkitError } from "../engine/errors.js";
import type { HostTensor } from "../engine/ir/host.js";
import { type ReadOptions, type SafetensorsDType, SafetensorsError, SafetensorsFile } from "./safetensors.js";

/** A model folder that is incomplete or inconsistent (missing files, bad JSON, index/shard mismatches). */
export class CheckpointError extends PeftkitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message);
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

export const SAFE_WEIGHTS_NAME = "model.safetensors";
export const SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json";

/** Reads and parses a JSON file; `what` names its role in messages ("model config", "weight index"). */
export function readJsonFile(path: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "file not found" : (e as Error).message;
    throw new CheckpointError(`${path}: cannot read ${what}: ${why}`, { cause: e });
  }
  // A UTF-8 BOM is legal in files written by some editors, but JSON.parse rejects it.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: ${what} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}

export interface WeightInfo {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** The safetensors file that holds the tensor. */
  readonly file: string;
}

export interface WeightGetOptions extends ReadOptions {
  /** Return F64 tensors as f64; by default every float dtype comes back as f32. */
  keepF64?: boolean;
}

/** Read access to the weights of a checkpoint, whatever the number of files. */
export interface WeightStore {
  /** The folder the weights came from. */
  readonly dir: string;
  /** Tensor names, sorted. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): WeightInfo;
  /** Reads a tensor: float dtypes as f32 (see keepF16/keepF64), integers as i32/i64, BOOL as bool. */
  get(name: string, opts?: WeightGetOptions): HostTensor;
  close(): void;
}

class SafetensorsWeightStore implements WeightStore {
  private readonly where = new Map<string, SafetensorsFile>();
  private readonly sorted: string[];
  private closed = false;

  constructor(
    readonly dir: string,
    private readonly files: SafetensorsFile[],
  ) {
    for (const f of files) for (const e of f.entries) this.where.set(e.name, f);
    this.sorted = [...this.where.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  names(): string[] {
    return [...this.sorted];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  private file(name: string): SafetensorsFile {
    if (this.closed) throw new CheckpointError(`${this.dir}: checkpoint is closed`);
    const f = this.where.get(name);
    if (!f) throw new CheckpointError(`${this.dir}: checkpoint has no tensor named "${name}" (it holds ${this.sorted.length} tensors)`);
    return f;
  }

  info(name: string): WeightInfo {
    const f = this.file(name);
    const e = f.entry(name);
    return { dtype: e.dtype, shape: [...e.shape], file: f.path };
  }

  get(name: string, opts: WeightGetOptions = {}): HostTensor {
    const t = this.file(name).read(name, opts);
    if (t.dtype === "f64" && !opts.keepF64) return { dtype: "f32", shape: t.shape, data: Float32Array.from(t.data as Float64Array) };
    return t;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.files) f.close();
  }
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * Opens the weights of a model folder. `model.safetensors` wins when present (as in transformers);
 * otherwise `model.safetensors.index.json` must list every tensor and its shard, and the shards must
 * hold exactly the tensors the index assigns to them.
 */
export function openCheckpoint(dir: string): WeightStore {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    throw new CheckpointError(`${dir}: checkpoint folder not found`, { cause: e });
  }
  if (!st.isDirectory()) throw new CheckpointError(`${dir}: not a folder (expected a model folder holding ${SAFE_WEIGHTS_NAME})`);

  const single = nodePath.join(dir, SAFE_WEIGHTS_NAME);
  if (isFile(single)) return new SafetensorsWeightStore(dir, [SafetensorsFile.open(single)]);

  const indexPath = nodePath.join(dir, SAFE_WEIGHTS_INDEX_NAME);
  if (!isFile(indexPath)) {
    const torch = ["pytorch_model.bin", "pytorch_model.bin.index.json"].filter((f) => isFile(nodePath.join(dir, f)));
    const extra = torch.length
      ? `; found ${torch.join(" and ")}, but PyTorch .bin checkpoints are not supported; convert to safetensors`
      : "";
    throw new CheckpointError(`${dir}: no weights found (looked for ${SAFE_WEIGHTS_NAME} and ${SAFE_WEIGHTS_INDEX_NAME})${extra}`);
  }
  return openSharded(dir, indexPath);
}

function openSharded(dir: string, indexPath: string): WeightStore {
  const index = readJsonFile(indexPath, "weight index");
  const fail = (msg: string): never => {
    throw new CheckpointError(`${indexPath}: ${msg}`);
  };
  if (index === null || typeof index !== "object" || Array.isArray(index)) fail("must be a JSON object with a weight_map");
  const wm = (index as Record<string, unknown>).weight_map;
  if (wm === undefined) fail(`has no "weight_map"`);
  if (wm === null || typeof wm !== "object" || Array.isArray(wm))
    fail(`"weight_map" must be an object mapping tensor names to shard files`);

  // shard file → the tensor names the index assigns to it
  const byShard = new Map<string, Set<string>>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard === "") fail(`weight_map["${name}"] must be a shard file name, got ${JSON.stringify(shard)}`);
    const s = shard as string;
    // Shard names come from a downloaded file: keep them inside the folder.
    const rel = nodePath.relative(dir, nodePath.resolve(dir, s));
    if (nodePath.isAbsolute(s) || rel === "" || rel.startsWith("..") || nodePath.isAbsolute(rel)) {
      fail(`weight_map["${name}"] names a shard outside the folder: ${JSON.stringify(s)}`);
    }
    const set = byShard.get(s) ?? new Set<string>();
    set.add(name);
    byShard.set(s, set);
  }
  if (byShard.size === 0) fail(`"weight_map" lists no tensors`);

  const missing = [...byShard.keys()].filter((s) => !isFile(nodePath.join(dir, s)));
  if (missing.length) fail(`shard file${missing.length > 1 ? "s" : ""} missing from ${dir}: ${missing.join(", ")}`);

  const opened: SafetensorsFile[] = [];
  try {
    for (const [shard, listed] of byShard) {
      const f = SafetensorsFile.open(nodePath.join(dir, shard));
      opened.push(f);
      const absent = [...listed].filter((n) => !f.has(n));
      if (absent.length) fail(`${absent.length} tensor(s) listed for ${shard} are not in it: ${preview(absent)}`);
      const extra = f.names().filter((n) => !listed.has(n));
      if (extra.length) {
        const elsewhere = extra.map((n) => {
          const other = (wm as Record<string, unknown>)[n];
          return Object.hasOwn(wm as object, n) ? `"${n}" (index says ${other})` : `"${n}" (not in the index)`;
        });
        fail(`shard ${shard} holds ${extra.length} tensor(s) the index does not assign to it: ${preview(elsewhere, false)}`);
      }
    }
  } catch (e) {
    for (const f of opened) f.close();
    if (e instanceof CheckpointError || e instanceof SafetensorsError) throw e;
    throw new CheckpointError(`${indexPath}: cannot open shards: ${(e as Error).message}`, { cause: e });
  }
  return new SafetensorsWeightStore(dir, opened);
}

function preview(items: string[], quote = true): string {
  const shown = items.slice(0, 5).map((s) => (quote ? `"${s}"` : s));
  return items.length > 5 ? `${shown.join(", ")} and ${items.length - 5} more` : shown.join(", ");
}

/** Reads `config.json`, which must be a JSON object with a non-empty string `model_type`. */
export function loadConfig(dir: string): Record<string, unknown> {
  const path = nodePath.join(dir, "config.json");
  const cfg = readJsonFile(path, "model config");
  if (cfg === null || typeof cfg !== "object" || Array.isArray(cfg))
    throw new CheckpointError(`${path}: model config must be a JSON object`);
  const mt = (cfg as Record<string, unknown>).model_type;
  if (typeof mt !== "string" || mt === "") {
    throw new CheckpointError(
      `${path}: model config has ${mt === undefined ? "no" : `an invalid (${JSON.stringify(mt)})`} "model_type" (expected a string such as "llama")`,
    );
  }
  return cfg as Record<string, unknown>;
}
