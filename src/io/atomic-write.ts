/**
 * Crash-safe writes. A file is written under a temporary name in its own folder, fsynced, renamed
 * over the target, and the folder is fsynced so the rename itself survives a power cut: a reader
 * sees the old complete file or the new complete one, never a torn one. Folders are replaced the
 * same way, keeping the old one (renamed `<dir>.old-<pid>`) until the new one is in place, so
 * there is no moment with neither. Temporary names end in `.tmp-<pid>[-<random>]`; whatever
 * carries one after a crash is garbage that `cleanStaleTemps` removes.
 */
import * as fs from "node:fs";
import { basename, dirname, join } from "node:path";
import { faultPoint } from "./fault.js";

export type FileData = string | Uint8Array | readonly Uint8Array[];

const TMP_RE = /\.tmp-\d+(-[0-9a-z]+)?$/;
const OLD_RE = /^(.+)\.old-\d+$/;

/** A fresh temporary name beside `path`. */
export function tmpPath(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Whether a folder entry is a temporary left by an interrupted write. */
export function isTmpName(name: string): boolean {
  return TMP_RE.test(name);
}

/** A folder kept aside while its replacement moved in: `<name>` it stood for, or null. */
export function oldDirTarget(name: string): string | null {
  return OLD_RE.exec(name)?.[1] ?? null;
}

/** Makes a folder's entries (creations, renames, deletions) durable. */
export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, "r");
  } catch (e) {
    // Windows cannot open a folder; its renames are durable once they return.
    if (process.platform === "win32") return;
    throw e;
  }
  try {
    fs.fsyncSync(fd);
  } catch (e) {
    // Some file systems cannot fsync a folder (EINVAL) and some platforms refuse (EPERM, EISDIR).
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "EPERM" && code !== "EISDIR" && code !== "EBADF") throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/** Flushes a file's data to disk (for files grown by appends, such as metrics.jsonl). */
export function fsyncFile(path: string): void {
  const fd = fs.openSync(path, "r+");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.byteLength) done += fs.writeSync(fd, buf, done, Math.min(buf.byteLength - done, 0x40000000));
}

/** Writes a file so that it is either absent/old or complete, and durable once this returns. */
export function writeFileAtomic(path: string, data: FileData): void {
  const chunks: readonly Uint8Array[] = typeof data === "string" ? [Buffer.from(data, "utf8")] : data instanceof Uint8Array ? [data] : data;
  const tmp = tmpPath(path);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, "wx");
    // A crash test stops halfway through to leave a torn temporary behind.
    let half = chunks.reduce((n, c) => n + c.byteLength, 0) >> 1;
    for (const c of chunks) {
      if (half >= 0 && half < c.byteLength) {
        writeAll(fd, c.subarray(0, half));
        faultPoint(`write:${basename(path)}`);
        writeAll(fd, c.subarray(half));
      } else writeAll(fd, c);
      half -= c.byteLength;
    }
    if (half >= 0) faultPoint(`write:${basename(path)}`);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // already failing; the original error is the one worth reporting
      }
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dirname(path));
}

/**
 * Moves a fully written folder `src` to `dest`, replacing any folder there without a moment when
 * `dest` has no complete version: the old one is renamed to `<dest>.old-<pid>`, the new one
 * renamed in, and only then is the old one deleted. `src` must be in the same parent folder.
 */
export function replaceDir(src: string, dest: string): void {
  fsyncDir(src);
  const parent = dirname(dest);
  if (!fs.existsSync(dest)) {
    fs.renameSync(src, dest);
    fsyncDir(parent);
    return;
  }
  const old = `${dest}.old-${process.pid}`;
  fs.rmSync(old, { recursive: true, force: true });
  fs.renameSync(dest, old);
  faultPoint("dir:old-moved");
  fs.renameSync(src, dest);
  fsyncDir(parent);
  faultPoint("dir:replaced");
  fs.rmSync(old, { recursive: true, force: true });
}

/** Deletes a folder so that a crash midway leaves only a temporary name, never a half-deleted `dir`. */
export function removeDir(dir: string): void {
  const doomed = `${dir}.tmp-${process.pid}-del`;
  fs.rmSync(doomed, { recursive: true, force: true });
  fs.renameSync(dir, doomed);
  fsyncDir(dirname(dir));
  faultPoint("dir:removing");
  fs.rmSync(doomed, { recursive: true, force: true });
}

/**
 * Tidies a folder after a crash: deletes temporaries, puts back a `<name>.old-<pid>` folder whose
 * replacement never arrived, and deletes the ones whose replacement did. Returns what it did.
 */
export function cleanStaleTemps(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const done: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const path = join(dir, name);
    const target = oldDirTarget(name);
    if (isTmpName(name)) {
      fs.rmSync(path, { recursive: true, force: true });
      done.push(`removed ${name}`);
    } else if (target !== null && !fs.existsSync(join(dir, target))) {
      fs.renameSync(path, join(dir, target));
      done.push(`restored ${target} from ${name}`);
    } else if (target !== null) {
      fs.rmSync(path, { recursive: true, force: true });
      done.push(`removed ${name}`);
    }
  }
  if (done.length) fsyncDir(dir);
  return done;
}
