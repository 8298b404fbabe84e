#!/usr/bin/env node
/** The `peftkit` command: dispatches to one module per command. Exit codes: 0 ok, 1 failure, 2 bad usage. */
import { realpathSync } from "node:fs";
import { installNodeCompileCache } from "../io/compile-cache.js";
import { type CommandSpec, helpText, parseFlags, UsageError } from "./args.js";
import { benchCommand } from "./commands/bench.js";
import { cacheCommand } from "./commands/cache.js";
import { compareCommand } from "./commands/compare.js";
import { compressCommand } from "./commands/compress.js";
import { deltaCommand } from "./commands/delta.js";
import { demoCommand } from "./commands/demo.js";
import { evalCommand } from "./commands/eval.js";
import { generateCommand } from "./commands/generate.js";
import { graftCommand } from "./commands/graft.js";
import { infoCommand } from "./commands/info.js";
import { mergeCommand } from "./commands/merge.js";
import { mergeAdaptersCommand } from "./commands/merge-adapters.js";
import { polyExportCommand } from "./commands/poly-export.js";
import { searchCommand } from "./commands/search.js";
import { trainCommand } from "./commands/train.js";

export const COMMANDS: CommandSpec[] = [
  trainCommand,
  evalCommand,
  generateCommand,
  mergeCommand,
  mergeAdaptersCommand,
  polyExportCommand,
  deltaCommand,
  graftCommand,
  compressCommand,
  infoCommand,
  compareCommand,
  searchCommand,
  demoCommand,
  benchCommand,
  cacheCommand,
];

function usage(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    "Usage: peftkit <command> [options]",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}${c.summary}`),
    "",
    "Run peftkit <command> --help for the options of a command.",
    "",
  ].join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(usage());
    return 0;
  }
  if (name === "--version") {
    process.stdout.write("peftkit 0.1.0\n");
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) throw new UsageError(`unknown command "${name}" (commands: ${COMMANDS.map((c) => c.name).join(", ")})`);
  // A leading positional argument fills the command's first flag (peftkit info DIR, peftkit bench engine).
  // A list flag takes every leading positional argument (peftkit merge-adapters A B C).
  const firstFlag = rest.findIndex((a) => a.startsWith("--"));
  const lead = cmd.flags[0]?.type === "list" ? (firstFlag < 0 ? rest.length : firstFlag) : 1;
  const args =
    rest.length && !rest[0].startsWith("--") && cmd.flags.length
      ? [`--${cmd.flags[0].name}`, rest.slice(0, lead).join(","), ...rest.slice(lead)]
      : rest;
  const flags = parseFlags(args, cmd);
  if (flags.help) {
    process.stdout.write(helpText(cmd));
    return 0;
  }
  return cmd.run(flags);
}

// Run only as the program, not when imported (the docs generator imports COMMANDS).
const isMain = process.argv[1] !== undefined && import.meta.url === new URL(`file://${realpathSync(process.argv[1])}`).href;
if (isMain) installNodeCompileCache();
if (isMain)
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      const verbose = process.argv.includes("--verbose");
      const msg = e instanceof Error ? (verbose ? (e.stack ?? e.message) : e.message) : String(e);
      process.stderr.write(`peftkit: ${msg}\n`);
      process.exitCode = e instanceof UsageError ? 2 : 1;
    },
  );
