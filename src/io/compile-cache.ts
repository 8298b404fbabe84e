/**
 * The Node implementation of the engine's CompileCache: one file per compiled model in
 * `<PEFTKIT_CACHE>/compile/`, written atomically, verified by a checksum on every read, and kept
 * under a size cap by deleting the least recently used entries (a hit refreshes an entry's mtime).
 *
 * Entry file `<key>.ortm`: 8-byte magic, 8-byte little-endian payload length, 32-byte sha256 of
 * the payload, payload (ORT's optimized model). A file that fails these checks, or that ORT
 * refuses to load, is deleted with a one-line warning naming it and compiled again.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { PeftkitError } from "../engine/errors.js";
import type { CompileCache } from "../engine/exec/compile-cache.js";
import { setDefaultCompileCache } from "../engine/exec/compile-cache.js";
import { isTmpName, writeFileAtomic } from "./atomic-write.js";

export class CompileCacheError extends PeftkitError {}

const MAGIC = Buffer.from("PKORTM01", "ascii");
const HEADER = MAGIC.length + 8 + 32;
const ENTRY_EXT = ".ortm";
const SCRATCH_PREFIX = "scratch-";
/** A scratch file this old belongs to a process that died while compiling. */
const STALE_SCRATCH_MS = 24 * 3600 * 1000;
export const DEFAULT_MAX_MB = 2048;

export interface CacheLocation {
  /** The peftkit cache root (PEFTKIT_CACHE, or the user's cache folder); null when disabled. */
  root: string | null;
  /** Where compiled models live: `<root>/compile`. */
  dir: string | null;
  /** Size cap in bytes. */
  maxBytes: number;
}

/** Reads PEFTKIT_CACHE (a folder, or "off") and PEFTKIT_CACHE_MAX_MB from `env`. */
export function cacheLocation(env: NodeJS.ProcessEnv = process.env): CacheLocation {
  const rawMax = env.PEFTKIT_CACHE_MAX_MB;
  let maxMb = DEFAULT_MAX_MB;
  if (rawMax !== undefined && rawMax !== "") {
    maxMb = Number(rawMax);
    if (!Number.isFinite(maxMb) || maxMb <= 0)
      throw new CompileCacheError(`PEFTKIT_CACHE_MAX_MB must be a positive number of megabytes, got "${rawMax}"`);
  }
  const maxBytes = Math.floor(maxMb * 1024 * 1024);
  const raw = env.PEFTKIT_CACHE;
  if (raw === "off") return { root: null, dir: null, maxBytes };
  const root = raw ? raw : join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "peftkit");
  return { root, dir: join(root, "compile"), maxBytes };
}

export interface CacheEntryInfo {
  key: string;
  path: string;
  bytes: number;
  mtimeMs: number;
}

const warned = new Set<string>();
function warnOnce(msg: string): void {
  if (warned.has(msg)) return;
  warned.add(msg);
  process.stderr.write(`peftkit: warning: ${msg}\n`);
}

/** Wraps a payload in the entry format. */
export function encodeEntry(payload: Uint8Array): Buffer[] {
  const head = Buffer.alloc(HEADER);
  MAGIC.copy(head, 0);
  head.writeBigUInt64LE(BigInt(payload.byteLength), MAGIC.length);
  createHash("sha256")
    .update(payload)
    .digest()
    .copy(head, MAGIC.length + 8);
  return [head, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)];
}

/** The payload of an entry file, or why it is not a valid entry. */
export function decodeEntry(file: Buffer): { payload: Buffer } | { error: string } {
  if (file.length < HEADER || !file.subarray(0, MAGIC.length).equals(MAGIC)) return { error: "bad header" };
  const n = file.readBigUInt64LE(MAGIC.length);
  if (BigInt(file.length - HEADER) !== n) return { error: `truncated or padded (${file.length - HEADER} payload bytes, header says ${n})` };
  const payload = file.subarray(HEADER);
  const sum = createHash("sha256").update(payload).digest();
  if (!sum.equals(file.subarray(MAGIC.length + 8, HEADER))) return { error: "checksum mismatch" };
  return { payload };
}

export class DiskCompileCache implements CompileCache {
  private disabled = false;

  constructor(
    readonly dir: string,
    readonly maxBytes: number = DEFAULT_MAX_MB * 1024 * 1024,
  ) {}

  entryPath(key: string): string {
    if (!/^[0-9a-f]{16,128}$/.test(key)) throw new CompileCacheError(`compile cache: bad key "${key}"`);
    return join(this.dir, key + ENTRY_EXT);
  }

  get(key: string): Uint8Array | undefined {
    if (this.disabled) return undefined;
    const path = this.entryPath(key);
    let file: Buffer;
    try {
      file = fs.readFileSync(path);
    } catch {
      return undefined; // absent (or evicted by another process meanwhile)
    }
    const got = decodeEntry(file);
    if ("error" in got) {
      this.drop(path, got.error);
      return undefined;
    }
    try {
      const now = new Date();
      fs.utimesSync(path, now, now); // least recently used goes first
    } catch {
      // read-only cache or evicted meanwhile: the entry was still good
    }
    return new Uint8Array(got.payload.buffer, got.payload.byteOffset, got.payload.byteLength);
  }

  put(key: string, bytes: Uint8Array): void {
    if (this.disabled) return;
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      writeFileAtomic(this.entryPath(key), encodeEntry(bytes));
    } catch (e) {
      this.unwritable(e);
      return;
    }
    this.evict();
  }

  scratchFile(): string | undefined {
    if (this.disabled) return undefined;
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      fs.accessSync(this.dir, fs.constants.W_OK);
    } catch (e) {
      this.unwritable(e);
      return undefined;
    }
    return join(this.dir, `${SCRATCH_PREFIX}${process.pid}-${Math.random().toString(36).slice(2, 10)}.onnx`);
  }

  putFile(key: string, path: string): void {
    try {
      this.put(key, fs.readFileSync(path));
    } catch (e) {
      warnOnce(`compile cache: could not read ONNX Runtime's optimized model ${path} (${(e as Error).message}); not cached`);
    } finally {
      this.discardFile(path);
    }
  }

  discardFile(path: string): void {
    fs.rmSync(path, { force: true });
  }

  reject(key: string, reason: string): void {
    this.drop(this.entryPath(key), reason);
  }

  /** Entries, least recently used first. */
  entries(): CacheEntryInfo[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: CacheEntryInfo[] = [];
    for (const name of names) {
      if (!name.endsWith(ENTRY_EXT)) continue;
      const path = join(this.dir, name);
      try {
        const st = fs.statSync(path);
        out.push({ key: name.slice(0, -ENTRY_EXT.length), path, bytes: st.size, mtimeMs: st.mtimeMs });
      } catch {
        // removed by another process between readdir and stat
      }
    }
    return out.sort((a, b) => a.mtimeMs - b.mtimeMs);
  }

  /** Deletes least recently used entries until the total fits the cap; tidies dead scratch files. */
  evict(): void {
    const list = this.entries();
    let total = list.reduce((n, e) => n + e.bytes, 0);
    for (const e of list) {
      if (total <= this.maxBytes) break;
      fs.rmSync(e.path, { force: true });
      total -= e.bytes;
    }
    this.removeLeftovers(STALE_SCRATCH_MS);
  }

  /** Deletes every entry, scratch file and temporary; returns how many files and bytes went. */
  clear(): { files: number; bytes: number } {
    const before = this.ownFiles();
    for (const f of before) fs.rmSync(f.path, { force: true });
    return { files: before.length, bytes: before.reduce((n, f) => n + f.bytes, 0) };
  }

  /** Files this cache owns: entries, scratch files, atomic-write temporaries. */
  private ownFiles(): { path: string; bytes: number; mtimeMs: number; entry: boolean }[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: { path: string; bytes: number; mtimeMs: number; entry: boolean }[] = [];
    for (const name of names) {
      const entry = name.endsWith(ENTRY_EXT);
      if (!entry && !name.startsWith(SCRATCH_PREFIX) && !isTmpName(name)) continue;
      const path = join(this.dir, name);
      try {
        const st = fs.statSync(path);
        if (st.isFile()) out.push({ path, bytes: st.size, mtimeMs: st.mtimeMs, entry });
      } catch {
        // gone meanwhile
      }
    }
    return out;
  }

  private removeLeftovers(olderThanMs: number): void {
    const now = Date.now();
    for (const f of this.ownFiles()) if (!f.entry && now - f.mtimeMs > olderThanMs) fs.rmSync(f.path, { force: true });
  }

  private drop(path: string, reason: string): void {
    // ORT's messages can span lines; the warning stays one line.
    const why = reason.replace(/\s+/g, " ").trim().slice(0, 300);
    warnOnce(`compile cache entry ${path} is corrupt or stale (${why}); compiling it again`);
    fs.rmSync(path, { force: true });
  }

  private unwritable(e: unknown): void {
    this.disabled = true;
    warnOnce(`compile cache ${this.dir} is not usable (${(e as Error).message}); compiling without it`);
  }
}

const instances = new Map<string, DiskCompileCache>();

/** The cache named by the environment (memoized per folder and cap), or undefined when PEFTKIT_CACHE=off. */
export function nodeCompileCache(env: NodeJS.ProcessEnv = process.env): DiskCompileCache | undefined {
  const loc = cacheLocation(env);
  if (!loc.dir) return undefined;
  const id = `${loc.dir}\0${loc.maxBytes}`;
  let c = instances.get(id);
  if (!c) {
    c = new DiskCompileCache(loc.dir, loc.maxBytes);
    instances.set(id, c);
  }
  return c;
}

/** Makes compileGraph use the environment's cache by default (the Node library entry and the CLI call this). */
export function installNodeCompileCache(): void {
  setDefaultCompileCache(() => nodeCompileCache());
}
