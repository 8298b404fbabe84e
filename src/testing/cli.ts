/** Running the built `peftkit` CLI from tests, and reading what it printed. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./paths.js";

export const CLI = join(REPO_ROOT, "dist/src/cli/main.js");

export interface CliRun {
  /** Exit code; -1 when the process was killed by a signal. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `peftkit ARGS` to completion (no colours; `env` added to this process's environment). */
export function runCli(args: readonly string[], env: Record<string, string> = {}): CliRun {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, FORCE_COLOR: "0", ...env } });
  return { code: r.status ?? -1, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Writes records as a JSONL file `name` in `dir`; returns its path. */
export function writeJsonl(dir: string, name: string, rows: readonly object[]): string {
  const path = join(dir, name);
  writeFileSync(path, `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`);
  return path;
}

/** A metric from a printed table line such as "eval_accuracy  0.75". */
export function printedMetric(stdout: string, name: string): number {
  const m = new RegExp(`${name}\\s+(\\S+)`).exec(stdout);
  assert.ok(m, `no ${name} in:\n${stdout}`);
  return Number(m[1]);
}
