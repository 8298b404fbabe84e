#!/usr/bin/env node
/** The `peftkit` command. Models, training and PEFT commands arrive with later issues. */
import { PeftkitError } from "../engine/errors.js";
import { runEngineDemo } from "./demo.js";

const USAGE = `peftkit <command> [options]

Commands:
  demo [--steps N] [--threads N]   train a small network with the compiled AdamW step (engine demo)
  bench engine [--json]            engine benchmark (same as npm run bench:engine)
  help                             show this text

Options:
  --verbose                        print stack traces on errors
`;

class UsageError extends PeftkitError {}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith("--")) throw new UsageError(`${name} needs a value`);
  return v;
}

function intFlag(args: string[], name: string, dflt: number): number {
  const v = flag(args, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} must be a positive integer, got "${v}"`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "help" || cmd === "--help" || cmd === "-h") {
    process.stdout.write(USAGE);
    return 0;
  }
  if (rest.includes("--help")) {
    process.stdout.write(USAGE);
    return 0;
  }
  switch (cmd) {
    case "demo":
      await runEngineDemo({ steps: intFlag(rest, "--steps", 1500), threads: intFlag(rest, "--threads", 2) });
      return 0;
    case "bench": {
      if (rest[0] !== "engine") throw new UsageError(`unknown benchmark "${rest[0] ?? ""}"; available: engine`);
      const { runEngineBench } = await import("../../bench/engine.js");
      await runEngineBench({ json: rest.includes("--json") });
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${cmd}"; run peftkit help`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const verbose = process.argv.includes("--verbose");
    if (e instanceof UsageError) {
      process.stderr.write(`peftkit: ${e.message}\n`);
      process.exit(2);
    }
    const msg = e instanceof Error ? (verbose ? (e.stack ?? e.message) : e.message) : String(e);
    process.stderr.write(`peftkit: ${msg}\n`);
    process.exit(1);
  },
);
