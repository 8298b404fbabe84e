/**
 * Records the file-system calls that decide crash safety (opens for writing, fsyncs, renames,
 * plain writes) while a function runs, and checks them against fsync-then-rename: every renamed
 * file or folder was fsynced after its last change, and its new parent folder fsynced after the
 * rename. Works by patching node:fs and re-syncing the ESM bindings, so it sees every module.
 */
import { createRequire, syncBuiltinESMExports } from "node:module";
import { dirname, resolve } from "node:path";

export interface FsEvent {
  op: "open-write" | "copy" | "fsync" | "rename" | "write" | "append";
  path: string;
  to?: string;
}

const require = createRequire(import.meta.url);
const fsCjs = require("node:fs") as Record<string, (...a: unknown[]) => unknown>;

export async function traceFs<T>(fn: () => Promise<T>): Promise<{ result: T; events: FsEvent[] }> {
  const events: FsEvent[] = [];
  const fds = new Map<number, string>();
  const saved: Record<string, (...a: unknown[]) => unknown> = {};
  const patch = (name: string, wrap: (orig: (...a: unknown[]) => unknown) => (...a: unknown[]) => unknown) => {
    saved[name] = fsCjs[name];
    fsCjs[name] = wrap(saved[name]);
  };
  const str = (p: unknown) => (typeof p === "string" ? resolve(p) : null);
  patch("openSync", (orig) => (...a) => {
    const fd = orig(...a) as number;
    const p = str(a[0]);
    if (p) {
      fds.set(fd, p);
      const flags = a[1];
      if (typeof flags === "string" && /[wa+]/.test(flags)) events.push({ op: "open-write", path: p });
    }
    return fd;
  });
  patch("fsyncSync", (orig) => (...a) => {
    const p = fds.get(a[0] as number);
    if (p) events.push({ op: "fsync", path: p });
    return orig(...a);
  });
  patch("renameSync", (orig) => (...a) => {
    const r = orig(...a);
    const from = str(a[0]);
    const to = str(a[1]);
    if (from && to) events.push({ op: "rename", path: from, to });
    return r;
  });
  patch("copyFileSync", (orig) => (...a) => {
    const r = orig(...a);
    const to = str(a[1]);
    if (to) events.push({ op: "copy", path: to });
    return r;
  });
  // appendFileSync goes through writeFileSync: count it once, as an append.
  let appending = false;
  patch("writeFileSync", (orig) => (...a) => {
    const p = str(a[0]);
    if (p && !appending) events.push({ op: "write", path: p });
    return orig(...a);
  });
  patch("appendFileSync", (orig) => (...a) => {
    const p = str(a[0]);
    if (p) events.push({ op: "append", path: p });
    appending = true;
    try {
      return orig(...a);
    } finally {
      appending = false;
    }
  });
  syncBuiltinESMExports();
  try {
    return { result: await fn(), events };
  } finally {
    Object.assign(fsCjs, saved);
    syncBuiltinESMExports();
  }
}

/** Violations of fsync-then-rename under `root` (empty when every write there is crash-safe). */
export function durabilityProblems(events: readonly FsEvent[], root: string, allowAppend: readonly string[] = []): string[] {
  const base = resolve(root);
  const under = (p: string, dir: string) => p === dir || p.startsWith(`${dir}/`);
  const problems: string[] = [];
  events.forEach((e, i) => {
    if (!under(e.path, base)) return;
    if (e.op === "write") problems.push(`plain write of ${e.path}`);
    if (e.op === "append" && !allowAppend.some((a) => resolve(a) === e.path)) problems.push(`append to ${e.path}`);
    if (e.op !== "rename" || !e.to) return;
    // Files made by an open or a copy, in the renamed file or folder: each fsynced before the move.
    for (let j = 0; j < i; j++) {
      const f = events[j];
      if ((f.op !== "open-write" && f.op !== "copy") || !(f.path === e.path || f.path.startsWith(`${e.path}/`))) continue;
      if (!events.some((g, k) => k > j && k < i && g.op === "fsync" && g.path === f.path))
        problems.push(`${f.path} moved with ${e.path} before an fsync of its own`);
    }
    // Its content: writes to it, or entries made inside it. (Being moved in itself is no change:
    // it was made durable before that move.)
    const inside = (p: string) => p.startsWith(`${e.path}/`);
    let lastChange = -1;
    events.forEach((f, j) => {
      if (j >= i || f.op === "fsync") return;
      if (inside(f.path) || (f.to !== undefined && inside(f.to)) || (f.path === e.path && f.op !== "rename")) lastChange = j;
    });
    const synced = events.some((f, j) => j > lastChange && j < i && f.op === "fsync" && f.path === e.path);
    if (lastChange >= 0 && !synced) problems.push(`${e.path} renamed to ${e.to} without an fsync after its last change`);
    const parent = dirname(e.to);
    if (!events.some((f, j) => j > i && f.op === "fsync" && f.path === parent))
      problems.push(`rename to ${e.to} not followed by an fsync of ${parent}`);
  });
  return problems;
}
