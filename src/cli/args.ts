/**
 * Flag parsing shared by every command: typed flags with help text, `--flag value` and
 * `--flag=value`, booleans, and `--config FILE` (YAML or JSON) whose values the flags override.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { PeftkitError } from "../engine/errors.js";

/** Bad usage: exit code 2. */
export class UsageError extends PeftkitError {}

export type FlagType = "string" | "number" | "int" | "boolean" | "list";

export interface FlagSpec {
  name: string;
  type: FlagType;
  help: string;
  default?: string | number | boolean | string[];
  required?: boolean;
  choices?: readonly string[];
  /** Shown as the value placeholder in help (e.g. DIR). */
  meta?: string;
  /**
   * Bounds of a number or int flag, checked for the command line and --config alike; every
   * numeric flag declares at least one (args.test.ts walks the commands to enforce it).
   * `min`/`max` are inclusive, `exclusiveMin`/`exclusiveMax` strict; set at most one of each pair.
   */
  min?: number;
  max?: number;
  exclusiveMin?: number;
  exclusiveMax?: number;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpec[];
  examples?: string[];
  run(opts: Flags): Promise<number>;
}

export type Flags = Record<string, string | number | boolean | string[] | undefined>;

export const COMMON_FLAGS: FlagSpec[] = [
  { name: "config", type: "string", meta: "FILE", help: "read options from a YAML or JSON file; flags on the command line override it" },
  { name: "threads", type: "int", meta: "N", help: "ONNX Runtime intra-op threads (default: all cores)", min: 1 },
  { name: "verbose", type: "boolean", help: "print stack traces on errors" },
  { name: "help", type: "boolean", help: "show this help" },
];

/** Whether the spec declares any bound (numeric flags must). */
export function hasBounds(spec: FlagSpec): boolean {
  return spec.min !== undefined || spec.max !== undefined || spec.exclusiveMin !== undefined || spec.exclusiveMax !== undefined;
}

/** The bounds as text: ">= 1", "> 0", "in [0, 1)", "in (0, 1]"; "" when there are none. */
export function boundsText(spec: FlagSpec): string {
  const lo = spec.min ?? spec.exclusiveMin;
  const hi = spec.max ?? spec.exclusiveMax;
  if (lo !== undefined && hi !== undefined)
    return `in ${spec.min !== undefined ? "[" : "("}${lo}, ${hi}${spec.max !== undefined ? "]" : ")"}`;
  if (lo !== undefined) return `${spec.min !== undefined ? ">=" : ">"} ${lo}`;
  if (hi !== undefined) return `${spec.max !== undefined ? "<=" : "<"} ${hi}`;
  return "";
}

function inBounds(spec: FlagSpec, n: number): boolean {
  return (
    (spec.min === undefined || n >= spec.min) &&
    (spec.exclusiveMin === undefined || n > spec.exclusiveMin) &&
    (spec.max === undefined || n <= spec.max) &&
    (spec.exclusiveMax === undefined || n < spec.exclusiveMax)
  );
}

const camel = (s: string) => s.replace(/[-_]([a-z])/g, (_, c: string) => c.toUpperCase());
const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/_/g, "-");

function convert(spec: FlagSpec, raw: unknown, where: string): string | number | boolean | string[] {
  const bad = (want: string): never => {
    throw new UsageError(`${where}: --${spec.name} must be ${want}, got ${JSON.stringify(raw)}`);
  };
  switch (spec.type) {
    case "boolean":
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1" || raw === "") return true;
      if (raw === "false" || raw === "0") return false;
      return bad("true or false");
    case "int":
    case "number": {
      const n = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : Number.NaN;
      if (!Number.isFinite(n)) return bad("a number");
      if (spec.type === "int" && !Number.isInteger(n)) return bad("an integer");
      // Larger integers lose their low digits silently (a seed of 2^60 would not be the seed given).
      if (spec.type === "int" && !Number.isSafeInteger(n)) return bad(`an integer of at most ${Number.MAX_SAFE_INTEGER} in magnitude`);
      if (!inBounds(spec, n)) throw new UsageError(`${where}: --${spec.name} must be ${boundsText(spec)}, got ${n}`);
      return n;
    }
    case "list":
      if (Array.isArray(raw)) return raw.map(String);
      if (typeof raw === "string")
        return raw
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean);
      return bad("a comma-separated list");
    default: {
      if (typeof raw !== "string" && typeof raw !== "number") return bad("a string");
      const v = String(raw);
      if (spec.choices && !spec.choices.includes(v))
        throw new UsageError(`${where}: --${spec.name} must be one of ${spec.choices.join(", ")}, got "${v}"`);
      return v;
    }
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`--config ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let value: unknown;
  try {
    value = path.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new UsageError(`--config ${path}: not valid ${path.endsWith(".json") ? "JSON" : "YAML"}: ${(e as Error).message.split("\n")[0]}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new UsageError(`--config ${path}: must be a mapping of option names to values`);
  return value as Record<string, unknown>;
}

/** The command's flags plus the common ones it does not redefine (bench's --config is a model config). */
function allSpecs(cmd: CommandSpec): FlagSpec[] {
  return [...cmd.flags, ...COMMON_FLAGS.filter((c) => !cmd.flags.some((f) => f.name === c.name))];
}

export function parseFlags(argv: readonly string[], cmd: CommandSpec): Flags {
  const specs = allSpecs(cmd);
  const ownConfig = cmd.flags.some((f) => f.name === "config");
  const byName = new Map(specs.map((s) => [s.name, s]));
  const given: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new UsageError(`peftkit ${cmd.name}: unexpected argument "${a}" (options start with --; see --help)`);
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`peftkit ${cmd.name}: unknown option --${name} (see peftkit ${cmd.name} --help)`);
    if (eq > 0) given[name] = a.slice(eq + 1);
    else if (spec.type === "boolean") given[name] = argv[i + 1] === "true" || argv[i + 1] === "false" ? argv[++i] : true;
    else {
      const v = argv[i + 1];
      if (v === undefined || (v.startsWith("--") && v.length > 2)) throw new UsageError(`peftkit ${cmd.name}: --${name} needs a value`);
      given[name] = v;
      i++;
    }
  }
  const out: Flags = {};
  if (given.help) return { help: true };
  const fromFile = typeof given.config === "string" && !ownConfig ? readConfigFile(given.config) : {};
  for (const [k, v] of Object.entries(fromFile)) {
    const name = kebab(k);
    const spec = byName.get(name);
    if (!spec || name === "config") throw new UsageError(`--config ${given.config}: unknown option "${k}" for peftkit ${cmd.name}`);
    out[camel(name)] = convert(spec, v, `--config ${given.config}`);
  }
  for (const [name, v] of Object.entries(given)) out[camel(name)] = convert(byName.get(name) as FlagSpec, v, `peftkit ${cmd.name}`);
  for (const s of specs) {
    const key = camel(s.name);
    if (out[key] === undefined && s.default !== undefined) out[key] = s.default;
    if (s.required && out[key] === undefined) throw new UsageError(`peftkit ${cmd.name}: --${s.name} is required (see --help)`);
  }
  return out;
}

export function helpText(cmd: CommandSpec): string {
  const lines = [`Usage: ${cmd.usage}`, "", cmd.summary, "", "Options:"];
  const specs = allSpecs(cmd);
  const left = specs.map((s) => `  --${s.name}${s.type === "boolean" ? "" : ` ${s.meta ?? s.type.toUpperCase()}`}`);
  const w = Math.max(...left.map((l) => l.length)) + 2;
  specs.forEach((s, i) => {
    const extra = [
      s.choices ? `one of: ${s.choices.join(", ")}` : "",
      hasBounds(s) ? boundsText(s) : "",
      s.default !== undefined ? `default: ${Array.isArray(s.default) ? s.default.join(",") : s.default}` : "",
      s.required ? "required" : "",
    ]
      .filter(Boolean)
      .join("; ");
    lines.push(`${left[i].padEnd(w)}${s.help}${extra ? ` (${extra})` : ""}`);
  });
  if (cmd.examples?.length) lines.push("", "Examples:", ...cmd.examples.map((e) => `  ${e}`));
  return `${lines.join("\n")}\n`;
}
