/**
 * ComPEFT adapter folders on disk (docs/formats/compeft.md). Node only.
 *
 * A compressed folder holds the adapter's own adapter_config.json (unchanged) and
 * adapter_compeft.safetensors instead of adapter_model.safetensors. Its metadata adds to the
 * stored form (compeft.ts) the adapter's peft_type, the sha256 of the source weights file and
 * content_sha256: the sha256 of every other metadata field and every tensor's bytes, checked on
 * each read, so a flipped bit or an edited field is an error rather than a different adapter.
 */
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import { fsyncFile } from "../io/atomic-write.js";
import { readJsonFile } from "../io/hf-folder.js";
import { type RawTensor, readSafetensors, type SafetensorsDType, SafetensorsFile, writeSafetensors } from "../io/safetensors.js";
import {
  type CompeftBits,
  CompeftError,
  type CompeftFileParts,
  type CompeftScope,
  type CompressedAdapter,
  compeftFromParts,
  compeftParts,
  compressTensors,
  decompressAdapter,
  type StoredTensor,
} from "./compeft.js";

export const COMPEFT_WEIGHTS = "adapter_compeft.safetensors";
const CONFIG = "adapter_config.json";
const WEIGHTS = "adapter_model.safetensors";
/** Files beside the weights that loading an adapter reads. */
const SIDE_FILES = [CONFIG, "label_config.json", "training_args.json"];

/**
 * What τ is measured from, by peft_type: the authors' rule (init 1 for IA³'s multiplicative
 * vectors, 0 for LoRA's raw factors), extended to the additive factorised methods whose saved
 * tensors are all trained factors that start from (or act as) zero updates.
 */
const INIT_OF_PEFT_TYPE: Record<string, 0 | 1> = { LORA: 0, LOHA: 0, LOKR: 0, IA3: 1 };

function configOf(dir: string): Record<string, unknown> {
  const path = join(dir, CONFIG);
  if (!existsSync(path)) throw new CompeftError(`${dir}: no ${CONFIG} (is this a PEFT adapter folder?)`);
  const raw = readJsonFile(path, "adapter config");
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new CompeftError(`${path}: must be a JSON object`);
  return raw as Record<string, unknown>;
}

/** The init of an adapter's update, or an error saying why ComPEFT cannot compress it. */
export function compeftInit(config: Record<string, unknown>, where: string): 0 | 1 {
  const type = String(config.peft_type ?? "");
  const init = INIT_OF_PEFT_TYPE[type];
  if (init === undefined)
    throw new CompeftError(
      `${where}: peft_type ${JSON.stringify(type)} is not handled by ComPEFT (supported: ${Object.keys(INIT_OF_PEFT_TYPE).join(", ")}); its saved tensors are not all updates from a known init`,
    );
  if (config.use_dora === true)
    throw new CompeftError(
      `${where}: use_dora is true; DoRA's magnitude vectors start at the weight norms, not at 0, so they cannot be ternarised`,
    );
  const mts = config.modules_to_save;
  if (Array.isArray(mts) && mts.length > 0)
    throw new CompeftError(
      `${where}: modules_to_save is set; those full module copies start from the base weights, which ComPEFT does not read`,
    );
  return init;
}

function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** sha256 of every metadata field but content_sha256 (sorted) and every tensor's bytes (sorted by name). */
function contentHash(parts: CompeftFileParts): string {
  const h = createHash("sha256");
  const meta = Object.keys(parts.metadata)
    .filter((k) => k !== "content_sha256")
    .sort()
    .map((k) => [k, parts.metadata[k]]);
  h.update(JSON.stringify(meta));
  for (const name of Object.keys(parts.tensors).sort()) {
    const t = parts.tensors[name];
    h.update(`${name}\0${t.dtype}\0${t.shape.join(",")}\0`);
    h.update(t.data);
  }
  return h.digest("hex");
}

export interface CompressStats {
  readonly source: string;
  readonly output: string;
  readonly sourceBytes: number;
  readonly compressedBytes: number;
  /** sourceBytes / compressedBytes. */
  readonly ratio: number;
  readonly entries: number;
  readonly kept: number;
  /** The global scale, or NaN in per-tensor scope and at b ≥ 2. */
  readonly scale: number;
  readonly init: 0 | 1;
  readonly bits: CompeftBits;
  /** b ≥ 2: the levels of the global codebook, or the most levels of any tensor's; 0 at b = 1. */
  readonly levels: number;
}

export interface CompressFolderOptions {
  readonly density: number;
  readonly alpha: number;
  readonly scope: CompeftScope;
  /** Bits per kept entry (default 1, ComPEFT's sign). */
  readonly bits?: CompeftBits;
}

/** Compresses an adapter folder into `out` (created; its ComPEFT file is replaced atomically). */
export function compressAdapterFolder(dir: string, out: string, o: CompressFolderOptions): CompressStats {
  const config = configOf(dir);
  const init = compeftInit(config, join(dir, CONFIG));
  const source = join(dir, WEIGHTS);
  if (!existsSync(source)) throw new CompeftError(`${dir}: no ${WEIGHTS} to compress`);
  const { tensors } = readSafetensors(source);
  const c = compressTensors(new Map(Object.entries(tensors)), { ...o, init });
  mkdirSync(out, { recursive: true });
  const output = join(out, COMPEFT_WEIGHTS);
  writeCompeftFile(output, c, { peft_type: String(config.peft_type), source_sha256: sha256File(source) });
  for (const f of SIDE_FILES) {
    if (!existsSync(join(dir, f))) continue;
    copyFileSync(join(dir, f), join(out, f));
    fsyncFile(join(out, f));
  }
  const sourceBytes = statSync(source).size;
  const compressedBytes = statSync(output).size;
  let entries = 0;
  let kept = 0;
  let levels = c.levels?.length ?? 0;
  for (const t of c.tensors.values()) {
    entries += t.shape.reduce((a, b) => a * b, 1);
    for (const b of t.mask) kept += popcount8(b);
    levels = Math.max(levels, t.magnitudes?.levels.length ?? 0);
  }
  const ratio = sourceBytes / compressedBytes;
  return { source, output, sourceBytes, compressedBytes, ratio, entries, kept, scale: c.scale, init, bits: c.bits, levels };
}

function popcount8(b: number): number {
  let c = 0;
  for (let v = b; v; v &= v - 1) c++;
  return c;
}

export function writeCompeftFile(path: string, c: CompressedAdapter, extra: Record<string, string>): void {
  const base = compeftParts(c);
  const parts = { tensors: base.tensors, metadata: { ...base.metadata, ...extra } };
  const metadata = { ...parts.metadata, content_sha256: contentHash(parts) };
  const tensors: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(parts.tensors))
    tensors[name] = { dtype: t.dtype as SafetensorsDType, shape: t.shape, data: t.data };
  writeSafetensors(path, tensors, metadata);
}

/** Reads and checks a ComPEFT file (truncation, every field and tensor, the content hash). */
export function readCompeftFile(path: string): CompressedAdapter & { readonly peftType: string | null } {
  const file = SafetensorsFile.open(path);
  try {
    const tensors: Record<string, StoredTensor> = {};
    for (const e of file.entries) tensors[e.name] = { dtype: e.dtype, shape: e.shape, data: file.readRaw(e.name) };
    const parts = { tensors, metadata: { ...file.metadata } };
    // Structure first (its errors name the tensor or field), then the checksum over it all.
    const c = compeftFromParts(parts, path);
    const want = parts.metadata.content_sha256;
    if (want === undefined) throw new CompeftError(`${path}: metadata "content_sha256" is missing`);
    if (contentHash(parts) !== want)
      throw new CompeftError(`${path}: content_sha256 does not match the file's tensors and metadata (the file is corrupt or was edited)`);
    return { ...c, peftType: parts.metadata.peft_type ?? null };
  } finally {
    file.close();
  }
}

/** The adapter tensors a ComPEFT file decompresses to, by saved name. */
export function readCompeftTensors(path: string): Map<string, HostTensor> {
  return decompressAdapter(readCompeftFile(path));
}

/**
 * For adapter loading (tuners/format.ts): the decompressed weights of a folder that holds a
 * ComPEFT file and no adapter_model.safetensors, in the shape of an opened safetensors file;
 * null when the folder has no ComPEFT file.
 */
export function openCompeftWeights(dir: string): {
  path: string;
  entries: { name: string; shape: readonly number[] }[];
  read(name: string): HostTensor;
  close(): void;
} | null {
  const path = join(dir, COMPEFT_WEIGHTS);
  if (!existsSync(path)) return null;
  const tensors = readCompeftTensors(path);
  return {
    path,
    entries: [...tensors].map(([name, t]) => ({ name, shape: t.shape })),
    read: (name) => tensors.get(name) as HostTensor,
    close: () => {},
  };
}

/** Writes the plain HF PEFT folder (adapter_config.json + adapter_model.safetensors) of a compressed one. */
export function decompressAdapterFolder(dir: string, out: string): { output: string; tensors: number } {
  const path = join(dir, COMPEFT_WEIGHTS);
  if (!existsSync(path)) throw new CompeftError(`${dir}: no ${COMPEFT_WEIGHTS} (is this a folder written by peftkit compress?)`);
  const tensors = readCompeftTensors(path);
  mkdirSync(out, { recursive: true });
  const output = join(out, WEIGHTS);
  writeSafetensors(output, Object.fromEntries(tensors), { format: "pt" });
  for (const f of SIDE_FILES) {
    if (!existsSync(join(dir, f))) continue;
    copyFileSync(join(dir, f), join(out, f));
    fsyncFile(join(out, f));
  }
  return { output, tensors: tensors.size };
}
