/**
 * safetensors reader and writer (huggingface/safetensors "Format"): a u64 little-endian header
 * length N, N bytes of UTF-8 JSON header, then the raw little-endian tensor bytes.
 *
 * The reader trusts nothing in the file: the whole header is validated when the file is opened, so a
 * later `read` can only fail on I/O. Tensors are read lazily, each with one positioned read into the
 * typed array that is returned; conversions that widen (F16/BF16 → f32, U8/I16/… → i32) happen in
 * place inside that same buffer, so a tensor is never copied twice and a file is never loaded whole.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as nodePath from "node:path";
import { PeftkitError } from "../engine/errors.js";
import type { DType, TypedArray } from "../engine/ir/dtype.js";
import { f16ToF32, type HostTensor } from "../engine/ir/host.js";
import { writeFileAtomic } from "./atomic-write.js";

/** A malformed or unreadable safetensors file, or tensors that cannot be written as one. */
export class SafetensorsError extends PeftkitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message);
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** The dtypes this reader accepts; the format defines more (F8_*, C64, F4, …) which are rejected. */
export const SAFETENSORS_DTYPES = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"] as const;
export type SafetensorsDType = (typeof SAFETENSORS_DTYPES)[number];

const ELEMENT_SIZE: Record<SafetensorsDType, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

export function safetensorsElementSize(dtype: SafetensorsDType): number {
  return ELEMENT_SIZE[dtype];
}

export function isSafetensorsDType(s: unknown): s is SafetensorsDType {
  return typeof s === "string" && Object.hasOwn(ELEMENT_SIZE, s);
}

/** Tensor bytes with a file dtype, written and read byte-exact (e.g. BF16 weights kept as BF16). */
export interface RawTensor {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** [begin, end) relative to the start of the data buffer, as in the header. */
  readonly dataOffsets: readonly [number, number];
  readonly byteLength: number;
}

export interface ReadOptions {
  /** Return F16 tensors as dtype "f16" (raw half bits in a Uint16Array) instead of widening to f32. */
  keepF16?: boolean;
}

/** The header may be at most this many bytes (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

const LITTLE_ENDIAN = os.endianness() === "LE";

// ---------------------------------------------------------------------------------------------
// bf16 / f16 helpers

const f32box = new Float32Array(1);
const u32box = new Uint32Array(f32box.buffer);

/** f32 → bf16 bits, rounding to nearest even; NaN stays a (quiet) NaN of the same sign. */
export function f32ToBf16Bits(v: number): number {
  f32box[0] = v;
  const bits = u32box[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) & 0xffff) | 0x0040;
  const bias = 0x7fff + ((bits >>> 16) & 1);
  // bits + bias < 2^32 for every non-NaN input, so plain arithmetic cannot wrap.
  return Math.floor((bits + bias) / 65536) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  u32box[0] = (b & 0xffff) << 16;
  return f32box[0];
}

let f16Table: Float32Array | undefined;
/** All 65536 half values: decoding a large F16 tensor becomes a table lookup per element. */
function f16Lookup(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  return f16Table;
}

/** An f32 HostTensor (or any float HostTensor) encoded as BF16, ready for `writeSafetensors`. */
export function toBf16Raw(t: HostTensor): RawTensor {
  if (t.dtype !== "f32" && t.dtype !== "f64") throw new SafetensorsError(`toBf16Raw: expected an f32 or f64 tensor, got ${t.dtype}`);
  const src = t.data as Float32Array | Float64Array;
  const bits = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) bits[i] = f32ToBf16Bits(src[i]);
  return { dtype: "BF16", shape: [...t.shape], data: leBytes(bits, 2) };
}

// ---------------------------------------------------------------------------------------------
// header parsing and validation

function fmtShape(s: readonly unknown[]): string {
  return `[${s.map((d) => (typeof d === "number" ? String(d) : JSON.stringify(d))).join(", ")}]`;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  const s = JSON.stringify(v);
  return `${typeof v} ${s !== undefined && s.length > 40 ? `${s.slice(0, 40)}…` : s}`;
}

/**
 * JSON.parse silently keeps the last of duplicated keys, which would let two readers disagree about
 * the same file. The text has already parsed as JSON, so a light scan of string tokens is enough:
 * a string followed by ':' is a key of the innermost open object.
 */
function findDuplicateKey(text: string): { key: string; parent: string | undefined } | undefined {
  const stack: Array<{ keys: Set<string>; name: string | undefined } | null> = [];
  let lastKey: string | undefined;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), name: lastKey });
      lastKey = undefined;
    } else if (c === 0x5b /* [ */) {
      stack.push(null);
      lastKey = undefined;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x22 /* " */) {
      const start = i;
      let escaped = false;
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) {
          escaped = true;
          i++;
        } else if (d === 0x22) break;
      }
      let j = i + 1;
      while (j < n && (text[j] === " " || text[j] === "\n" || text[j] === "\r" || text[j] === "\t")) j++;
      const top = stack[stack.length - 1];
      if (text[j] === ":" && top) {
        const literal = text.slice(start, i + 1);
        const key = escaped ? (JSON.parse(literal) as string) : literal.slice(1, -1);
        if (top.keys.has(key)) return { key, parent: top.name };
        top.keys.add(key);
        lastKey = key;
      }
    }
  }
  return undefined;
}

/** Plain assignment would treat a key named "__proto__" as the prototype; file keys are data. */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

interface ParsedHeader {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
}

function isSafeNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and validates a header against a data buffer of `dataLength` bytes. Errors name `file`. */
export function parseSafetensorsHeader(file: string, headerBytes: Uint8Array, dataLength: number): ParsedHeader {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${file}: ${msg}`);
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  if (!text.startsWith("{")) {
    fail(`header must start with '{' but starts with ${JSON.stringify(text.slice(0, 16))}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) fail(`header must be a JSON object, got ${describe(json)}`);
  const dup = findDuplicateKey(text);
  if (dup) {
    if (dup.parent === undefined) fail(`header lists "${dup.key}" twice (duplicate names are not allowed)`);
    else fail(`header entry "${dup.parent}" has the key "${dup.key}" twice`);
  }

  const obj = json as Record<string, unknown>;
  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const name of Object.keys(obj)) {
    const v = obj[name];
    if (name === "__metadata__") {
      if (v === null || typeof v !== "object" || Array.isArray(v))
        fail(`__metadata__ must be an object mapping strings to strings, got ${describe(v)}`);
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== "string") fail(`__metadata__ must map strings to strings, but "${k}" is ${describe(s)}`);
        setOwn(metadata, k, s as string);
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (v === null || typeof v !== "object" || Array.isArray(v))
      fail(`${where} must be an object with dtype, shape and data_offsets, got ${describe(v)}`);
    const e = v as Record<string, unknown>;
    if (!("dtype" in e)) fail(`${where} has no "dtype"`);
    if (typeof e.dtype !== "string") fail(`${where} dtype must be a string, got ${describe(e.dtype)}`);
    if (!isSafetensorsDType(e.dtype)) {
      fail(`${where} has unsupported dtype ${JSON.stringify(e.dtype)}; supported dtypes are ${SAFETENSORS_DTYPES.join(", ")}`);
    }
    const dtype = e.dtype as SafetensorsDType;
    if (!("shape" in e)) fail(`${where} has no "shape"`);
    if (!Array.isArray(e.shape)) fail(`${where} shape must be an array of dimensions, got ${describe(e.shape)}`);
    const shapeIn = e.shape as unknown[];
    for (const d of shapeIn) {
      if (!isSafeNonNegInt(d))
        fail(`${where} shape ${fmtShape(shapeIn)} has an invalid dimension ${JSON.stringify(d)} (dimensions are non-negative integers)`);
    }
    const shape = shapeIn as number[];
    if (!("data_offsets" in e)) fail(`${where} has no "data_offsets"`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2) fail(`${where} data_offsets must be an array [begin, end], got ${JSON.stringify(off)}`);
    const [begin, end] = off as unknown[];
    if (!isSafeNonNegInt(begin) || !isSafeNonNegInt(end))
      fail(`${where} data_offsets ${fmtShape(off as unknown[])} must be non-negative integers`);
    if ((begin as number) > (end as number)) fail(`${where} data_offsets [${begin}, ${end}] have begin > end`);
    const b = begin as number;
    const en = end as number;
    // numel can overflow a double only when no dimension is 0; byte counts above 2^53 cannot fit any file.
    let count = 1;
    if (!shape.includes(0)) for (const d of shape) count *= d;
    else count = 0;
    const nbytes = count * ELEMENT_SIZE[dtype];
    if (!Number.isSafeInteger(nbytes) || nbytes !== en - b) {
      fail(
        `${where} data_offsets [${b}, ${en}] do not match shape ${fmtShape(shape)} of ${dtype} (${Number.isSafeInteger(nbytes) ? nbytes : "too many"} bytes)`,
      );
    }
    entries.push({ name, dtype, shape, dataOffsets: [b, en], byteLength: en - b });
  }

  // The entries must tile [0, dataLength) exactly; sorting by begin (then end, so empty tensors come first) makes it one pass.
  entries.sort((x, y) => x.dataOffsets[0] - y.dataOffsets[0] || x.dataOffsets[1] - y.dataOffsets[1]);
  let pos = 0;
  let tiling: { kind: "hole" | "overlap"; prev: SafetensorsEntry | undefined; at: SafetensorsEntry } | undefined;
  let prev: SafetensorsEntry | undefined;
  for (const e of entries) {
    const [b, en] = e.dataOffsets;
    if (!tiling && b !== pos) tiling = { kind: b > pos ? "hole" : "overlap", prev, at: e };
    pos = Math.max(pos, en);
    prev = e;
  }
  const covered = pos;
  if (covered > dataLength) {
    if (!tiling) {
      fail(`file is truncated: the header describes ${covered} data bytes but only ${dataLength} follow the header`);
    }
    const out = entries.find((e) => e.dataOffsets[1] > dataLength)!;
    fail(`tensor "${out.name}" data_offsets [${out.dataOffsets.join(", ")}] lie outside the data buffer (${dataLength} bytes)`);
  }
  if (tiling) {
    const [b, en] = tiling.at.dataOffsets;
    const pe = tiling.prev;
    if (tiling.kind === "hole") {
      const from = pe ? `after tensor "${pe.name}" (ends at ${pe.dataOffsets[1]})` : "at the start of the data buffer";
      fail(`data buffer has a hole ${from}: tensor "${tiling.at.name}" data_offsets [${b}, ${en}]`);
    }
    fail(`tensor "${tiling.at.name}" data_offsets [${b}, ${en}] overlap tensor "${pe!.name}" data_offsets [${pe!.dataOffsets.join(", ")}]`);
  }
  if (covered < dataLength)
    fail(`${dataLength - covered} bytes at the end of the data buffer (from offset ${covered}) belong to no tensor`);
  return { entries, metadata };
}

// ---------------------------------------------------------------------------------------------
// reading

function readFully(fd: number, dst: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < dst.byteLength) {
    // readSync caps a single call near 2 GiB, so big tensors take several reads into the same buffer.
    const want = Math.min(dst.byteLength - done, 0x40000000);
    let got: number;
    try {
      got = fs.readSync(fd, dst, done, want, position + done);
    } catch (e) {
      throw new SafetensorsError(`${file}: cannot read at byte ${position + done}: ${(e as Error).message}`, { cause: e });
    }
    if (got === 0)
      throw new SafetensorsError(`${file}: unexpected end of file at byte ${position + done} (was the file changed while open?)`);
    done += got;
  }
}

function swapInPlace(bytes: Uint8Array, size: number): void {
  for (let i = 0; i + size <= bytes.length; i += size) bytes.subarray(i, i + size).reverse();
}

export class SafetensorsFile {
  readonly path: string;
  /** Entries in data-buffer order (by begin offset), which is also the order tensors appear in the file. */
  readonly entries: readonly SafetensorsEntry[];
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute file offset of the data buffer (8 + header length). */
  readonly dataStart: number;
  readonly fileSize: number;
  private fd: number | undefined;
  private readonly byName: Map<string, SafetensorsEntry>;

  private constructor(path: string, fd: number, parsed: ParsedHeader, dataStart: number, fileSize: number) {
    this.path = path;
    this.fd = fd;
    this.entries = parsed.entries;
    this.metadata = parsed.metadata;
    this.dataStart = dataStart;
    this.fileSize = fileSize;
    this.byName = new Map(parsed.entries.map((e) => [e.name, e]));
  }

  /** Opens a file and validates its whole header, reading only the length prefix and the header. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch (e) {
      throw new SafetensorsError(`${path}: cannot open: ${(e as Error).message}`, { cause: e });
    }
    try {
      let st: fs.Stats;
      try {
        st = fs.fstatSync(fd);
      } catch (e) {
        throw new SafetensorsError(`${path}: cannot stat: ${(e as Error).message}`, { cause: e });
      }
      if (!st.isFile()) throw new SafetensorsError(`${path}: not a regular file`);
      const size = st.size;
      if (size < 8) throw new SafetensorsError(`${path}: file is ${size} bytes, shorter than the 8-byte header length prefix`);
      const prefix = new Uint8Array(8);
      readFully(fd, prefix, 0, path);
      const n = new DataView(prefix.buffer).getBigUint64(0, true);
      if (n === 0n) throw new SafetensorsError(`${path}: header length is 0 (a header is at least "{}")`);
      if (n > BigInt(MAX_HEADER_BYTES))
        throw new SafetensorsError(`${path}: header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
      const hlen = Number(n);
      if (8 + hlen > size) throw new SafetensorsError(`${path}: header length ${hlen} runs past the end of the file (${size} bytes)`);
      const header = new Uint8Array(hlen);
      readFully(fd, header, 8, path);
      const parsed = parseSafetensorsHeader(path, header, size - 8 - hlen);
      return new SafetensorsFile(path, fd, parsed, 8 + hlen, size);
    } catch (e) {
      // Only I/O failures are wrapped (in readFully and above); anything else is a bug and must surface as is.
      fs.closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return this.entries.map((e) => e.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  entry(name: string): SafetensorsEntry {
    const e = this.byName.get(name);
    if (!e) throw new SafetensorsError(`${this.path}: no tensor named "${name}" (the file holds ${this.entries.length} tensors)`);
    return e;
  }

  /** Reads the bytes of one tensor into `dst` (length must be the entry's byteLength). */
  private readInto(e: SafetensorsEntry, dst: Uint8Array): void {
    if (this.fd === undefined) throw new SafetensorsError(`${this.path}: file is closed`);
    readFully(this.fd, dst, this.dataStart + e.dataOffsets[0], this.path);
  }

  /** The tensor's bytes exactly as stored (little-endian), for byte-exact copies. */
  readRaw(name: string): Uint8Array {
    const e = this.entry(name);
    const out = new Uint8Array(e.byteLength);
    this.readInto(e, out);
    return out;
  }

  /**
   * Reads one tensor as a HostTensor: F32→f32, F64→f64, F16→f32 (or f16 bits with keepF16), BF16→f32,
   * I64→i64, U64→i64, I32→i32, U8/I8/I16/U16/U32→i32, BOOL→bool. Values that the target type cannot hold
   * (U32 above 2^31−1, U64 above 2^63−1, BOOL bytes other than 0/1) are errors.
   */
  read(name: string, opts: ReadOptions = {}): HostTensor {
    const e = this.entry(name);
    const n = e.byteLength / ELEMENT_SIZE[e.dtype];
    const shape = [...e.shape];
    const size = ELEMENT_SIZE[e.dtype];
    const bad = (msg: string): never => {
      throw new SafetensorsError(`${this.path}: tensor "${name}" (${e.dtype}): ${msg}`);
    };
    // Every branch allocates the final typed array first and reads the file bytes into its front.
    const load = <T extends ArrayBufferView>(arr: T): T => {
      const bytes = new Uint8Array(arr.buffer, arr.byteOffset, e.byteLength);
      this.readInto(e, bytes);
      if (!LITTLE_ENDIAN && size > 1) swapInPlace(bytes, size);
      return arr;
    };
    const wrap = (dtype: DType, data: TypedArray): HostTensor => ({ dtype, shape, data });

    switch (e.dtype) {
      case "F32":
        return wrap("f32", load(new Float32Array(n)));
      case "F64":
        return wrap("f64", load(new Float64Array(n)));
      case "I64":
        return wrap("i64", load(new BigInt64Array(n)));
      case "I32":
        return wrap("i32", load(new Int32Array(n)));
      case "U64": {
        const out = load(new BigInt64Array(n));
        for (let i = 0; i < n; i++) if (out[i] < 0n) bad(`element ${i} is ${BigInt.asUintN(64, out[i])}, above the i64 maximum 2^63-1`);
        return wrap("i64", out);
      }
      case "U32": {
        const out = load(new Int32Array(n));
        for (let i = 0; i < n; i++) if (out[i] < 0) bad(`element ${i} is ${out[i] >>> 0}, above the i32 maximum 2^31-1`);
        return wrap("i32", out);
      }
      case "BOOL": {
        const out = load(new Uint8Array(n));
        for (let i = 0; i < n; i++) if (out[i] > 1) bad(`element ${i} is byte ${out[i]}; BOOL bytes must be 0 or 1`);
        return wrap("bool", out);
      }
      case "F16": {
        if (opts.keepF16) return wrap("f16", load(new Uint16Array(n)));
        // Read the halves into the front of the f32 buffer and widen from the back: element i's f32 slot
        // (bytes 4i..4i+3) only covers halves with index >= i, which have already been consumed.
        const out = new Float32Array(n);
        const half = load(new Uint16Array(out.buffer, 0, n));
        const table = f16Lookup();
        for (let i = n - 1; i >= 0; i--) out[i] = table[half[i]];
        return wrap("f32", out);
      }
      case "BF16": {
        const out = new Float32Array(n);
        const half = load(new Uint16Array(out.buffer, 0, n));
        const word = new Uint32Array(out.buffer);
        for (let i = n - 1; i >= 0; i--) word[i] = half[i] << 16;
        return wrap("f32", out);
      }
      case "U8": {
        const out = new Int32Array(n);
        const src = load(new Uint8Array(out.buffer, 0, n));
        for (let i = n - 1; i >= 0; i--) out[i] = src[i];
        return wrap("i32", out);
      }
      case "I8": {
        const out = new Int32Array(n);
        const src = load(new Int8Array(out.buffer, 0, n));
        for (let i = n - 1; i >= 0; i--) out[i] = src[i];
        return wrap("i32", out);
      }
      case "U16": {
        const out = new Int32Array(n);
        const src = load(new Uint16Array(out.buffer, 0, n));
        for (let i = n - 1; i >= 0; i--) out[i] = src[i];
        return wrap("i32", out);
      }
      case "I16": {
        const out = new Int32Array(n);
        const src = load(new Int16Array(out.buffer, 0, n));
        for (let i = n - 1; i >= 0; i--) out[i] = src[i];
        return wrap("i32", out);
      }
    }
  }

  close(): void {
    if (this.fd !== undefined) {
      const fd = this.fd;
      this.fd = undefined;
      fs.closeSync(fd);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// writing

const HOST_TO_FILE: Record<DType, { dtype: SafetensorsDType; array: { new (n: number): TypedArray; name: string } }> = {
  f32: { dtype: "F32", array: Float32Array },
  f64: { dtype: "F64", array: Float64Array },
  f16: { dtype: "F16", array: Uint16Array },
  i64: { dtype: "I64", array: BigInt64Array },
  i32: { dtype: "I32", array: Int32Array },
  bool: { dtype: "BOOL", array: Uint8Array },
};

/** Little-endian bytes of a typed array: a view on little-endian hosts, a swapped copy otherwise. */
function leBytes(a: ArrayBufferView, size: number): Uint8Array {
  const view = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (LITTLE_ENDIAN || size === 1) return view;
  const copy = view.slice();
  swapInPlace(copy, size);
  return copy;
}

function isRawTensor(t: HostTensor | RawTensor): t is RawTensor {
  return isSafetensorsDType(t.dtype);
}

function checkedNumel(shape: readonly number[], where: string): number {
  if (!Array.isArray(shape)) throw new SafetensorsError(`${where}: shape must be an array of dimensions`);
  let n = 1;
  for (const d of shape) {
    if (!isSafeNonNegInt(d)) throw new SafetensorsError(`${where}: shape ${fmtShape(shape)} has an invalid dimension ${JSON.stringify(d)}`);
    n *= d;
  }
  return n;
}

/**
 * The file as a list of chunks: first the length prefix plus the padded header, then each tensor's
 * bytes. Tensor chunks are views of the callers' arrays (no copy) on little-endian hosts.
 *
 * Tensors are laid out sorted by name (UTF-16 code-unit order, not locale order) so the same
 * tensors always give the same bytes. The header is padded with spaces to a multiple of 8 bytes,
 * which keeps the data buffer 8-byte aligned in the file.
 */
export function serializeSafetensors(
  tensors: Readonly<Record<string, HostTensor | RawTensor>>,
  metadata?: Readonly<Record<string, string>>,
  file = "safetensors",
): Uint8Array[] {
  const names = Object.keys(tensors).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const parts: string[] = [];
  const chunks: Uint8Array[] = [];
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
      throw new SafetensorsError(`${file}: metadata must be an object mapping strings to strings`);
    }
    const m = Object.entries(metadata);
    for (const [k, v] of m) {
      if (typeof v !== "string") throw new SafetensorsError(`${file}: metadata "${k}" must be a string, got ${describe(v)}`);
    }
    if (m.length > 0) parts.push(`"__metadata__":{${m.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`);
  }
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const where = `${file}: tensor "${name}"`;
    if (name === "__metadata__") throw new SafetensorsError(`${where}: the name __metadata__ is reserved for the metadata map`);
    if (t === null || typeof t !== "object") throw new SafetensorsError(`${where}: expected a HostTensor or RawTensor, got ${describe(t)}`);
    const n = checkedNumel(t.shape, where);
    let dtype: SafetensorsDType;
    let bytes: Uint8Array;
    if (isRawTensor(t)) {
      dtype = t.dtype;
      if (!(t.data instanceof Uint8Array)) throw new SafetensorsError(`${where}: RawTensor data must be a Uint8Array`);
      const want = n * ELEMENT_SIZE[dtype];
      if (t.data.byteLength !== want) {
        throw new SafetensorsError(
          `${where}: ${t.data.byteLength} bytes do not match shape ${fmtShape(t.shape)} of ${dtype} (${want} bytes)`,
        );
      }
      bytes = t.data;
    } else {
      const spec = Object.hasOwn(HOST_TO_FILE, t.dtype) ? HOST_TO_FILE[t.dtype as DType] : undefined;
      if (!spec) {
        throw new SafetensorsError(
          `${where}: unknown dtype ${JSON.stringify(t.dtype)}; use a HostTensor dtype (f32, f64, f16, i64, i32, bool) or a safetensors dtype (${SAFETENSORS_DTYPES.join(", ")})`,
        );
      }
      const data = t.data as ArrayBufferView & { length: number };
      if (!(data instanceof spec.array)) {
        throw new SafetensorsError(
          `${where}: a ${t.dtype} tensor must hold a ${spec.array.name}, got ${data?.constructor?.name ?? describe(data)}`,
        );
      }
      if (data.length !== n) throw new SafetensorsError(`${where}: ${data.length} values do not fill shape ${fmtShape(t.shape)}`);
      if (t.dtype === "bool") {
        const u = data as Uint8Array;
        for (let i = 0; i < n; i++) if (u[i] > 1) throw new SafetensorsError(`${where}: bool element ${i} is ${u[i]}, not 0 or 1`);
      }
      dtype = spec.dtype;
      bytes = leBytes(data, ELEMENT_SIZE[dtype]);
    }
    parts.push(
      `${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${t.shape.join(",")}],"data_offsets":[${offset},${offset + bytes.byteLength}]}`,
    );
    offset += bytes.byteLength;
    chunks.push(bytes);
  }
  const headerText = `{${parts.join(",")}}`;
  const raw = new TextEncoder().encode(headerText);
  const padded = Math.ceil(raw.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES)
    throw new SafetensorsError(`${file}: header would be ${padded} bytes, above the limit of ${MAX_HEADER_BYTES}`);
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + raw.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(raw, 8);
  return [head, ...chunks];
}

/**
 * Writes a safetensors file atomically (writeFileAtomic): the bytes go to `${path}.tmp-<pid>-<random>`
 * beside the target, are fsynced, renamed over it and the folder fsynced, so readers see the old file
 * or the new one, never a partial one, even after a crash. On any error the temporary file is removed and an existing file at `path` is left as it was.
 * f16 HostTensors are written as F16 and bool as BOOL; RawTensors keep their dtype and bytes.
 */
export function writeSafetensors(
  path: string,
  tensors: Readonly<Record<string, HostTensor | RawTensor>>,
  metadata?: Readonly<Record<string, string>>,
): void {
  const chunks = serializeSafetensors(tensors, metadata, path);
  try {
    writeFileAtomic(path, chunks);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot write (in ${nodePath.dirname(nodePath.resolve(path))}): ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** Reads every tensor of a file (small files, tests); large checkpoints should read tensors one at a time. */
export function readSafetensors(
  path: string,
  opts?: ReadOptions,
): { tensors: Record<string, HostTensor>; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(path);
  try {
    const tensors: Record<string, HostTensor> = {};
    for (const e of f.entries) setOwn(tensors, e.name, f.read(e.name, opts));
    return { tensors, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}
