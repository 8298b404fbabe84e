/** docs/cli.md is generated from the command specs, so the reference cannot drift from the code. */
import { helpText } from "./args.js";
import { COMMANDS } from "./main.js";

export function cliReference(): string {
  const parts = [
    "# peftkit command reference",
    "",
    "Generated from the commands' own specs (`npm run docs:cli`); `peftkit <command> --help` prints the same text.",
    "Every command takes `--config FILE` (YAML or JSON; flags given on the command line override it), `--threads N` and `--verbose`.",
    "Numeric options show their allowed range in parentheses (e.g. `>= 1`, `in [0, 1)`); a value outside it, from the command line or the `--config` file, is bad usage.",
    "Exit codes: 0 success, 1 runtime failure (one line on stderr; `--verbose` adds the stack), 2 bad usage.",
    "",
  ];
  for (const c of COMMANDS) parts.push(`## peftkit ${c.name}`, "", "```", helpText(c).trimEnd(), "```", "");
  return parts.join("\n");
}
