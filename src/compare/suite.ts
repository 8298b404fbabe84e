/**
 * Suites: a suite.yaml file (`{ name, tasks: CompareTask[] }`, paths relative to the file) or a
 * built-in suite by name. Validation names the file and the field of the first problem.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { writeWordnetBench } from "../data/wordnet-bench/index.js";
import { DATA_FORMATS } from "../train/data/index.js";
import { CompareError, type CompareTask, TASK_METRICS, TASK_NAME, TASK_SETTINGS, type TaskMetric } from "./task.js";

export interface Suite {
  name: string;
  tasks: CompareTask[];
}

/**
 * Built-in suites by name: each writes its data files into the folder given and returns its
 * tasks (absolute paths).
 */
export const builtInSuites: Record<string, (dir: string) => Promise<CompareTask[]>> = {
  "wordnet-bench": (dir) => writeWordnetBench(dir),
};

const TASK_FIELDS = ["name", "description", "model", "train", "eval", "metric", "chance", "format", ...Object.keys(TASK_SETTINGS)];

/** Checks one task of a suite (paths resolved against `baseDir`); `where` prefixes messages. */
export function validateTask(raw: unknown, where: string, baseDir: string): CompareTask {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new CompareError(`${where}: must be a mapping`);
  const t = raw as Record<string, unknown>;
  for (const k of Object.keys(t))
    if (!TASK_FIELDS.includes(k)) throw new CompareError(`${where}.${k}: unknown field (fields: ${TASK_FIELDS.join(", ")})`);
  const str = (field: string, required: boolean): string | undefined => {
    const v = t[field];
    if (v === undefined || v === null) {
      if (required) throw new CompareError(`${where}.${field}: missing`);
      return undefined;
    }
    if (typeof v !== "string" || v === "")
      throw new CompareError(`${where}.${field}: must be a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  };
  const name = str("name", true) as string;
  if (!TASK_NAME.test(name)) throw new CompareError(`${where}.name: "${name}" must match [a-z0-9_-]+`);
  const metric = str("metric", true) as string;
  if (!(TASK_METRICS as readonly string[]).includes(metric))
    throw new CompareError(`${where}.metric: must be one of ${TASK_METRICS.join(", ")}, got "${metric}"`);
  const format = str("format", false);
  if (format !== undefined && !(DATA_FORMATS as readonly string[]).includes(format))
    throw new CompareError(`${where}.format: must be one of ${DATA_FORMATS.join(", ")}, got "${format}"`);
  const chance = t.chance;
  if (chance !== undefined && (typeof chance !== "number" || !Number.isFinite(chance)))
    throw new CompareError(`${where}.chance: must be a number, got ${JSON.stringify(chance)}`);
  const own: Partial<Pick<CompareTask, "maxSteps" | "batchSize" | "maxLength">> = {};
  for (const [field, key] of Object.entries(TASK_SETTINGS)) {
    const v = t[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 10_000_000)
      throw new CompareError(`${where}.${field}: must be a whole number ≥ 1, got ${JSON.stringify(v)}`);
    own[key] = v;
  }
  const path = (field: string): string => {
    const p = str(field, true) as string;
    const abs = isAbsolute(p) ? p : resolve(baseDir, p);
    if (!existsSync(abs)) throw new CompareError(`${where}.${field}: ${p}: no such file or folder`);
    return abs;
  };
  return {
    name,
    description: str("description", false) ?? "",
    model: path("model"),
    train: path("train"),
    eval: path("eval"),
    metric: metric as TaskMetric,
    ...(chance !== undefined ? { chance: chance as number } : {}),
    ...(format !== undefined ? { format } : {}),
    ...own,
  };
}

/** Checks a parsed suite; task names must be unique. */
export function validateSuite(raw: unknown, where: string, baseDir: string): Suite {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new CompareError(`${where}: must be a mapping with "name" and "tasks"`);
  const s = raw as Record<string, unknown>;
  for (const k of Object.keys(s))
    if (k !== "name" && k !== "tasks") throw new CompareError(`${where}: ${k}: unknown field (fields: name, tasks)`);
  if (typeof s.name !== "string" || !TASK_NAME.test(s.name))
    throw new CompareError(`${where}: name: must be a string matching [a-z0-9_-]+, got ${JSON.stringify(s.name)}`);
  if (!Array.isArray(s.tasks) || s.tasks.length === 0) throw new CompareError(`${where}: tasks: must be a non-empty list`);
  const tasks = s.tasks.map((t, i) => validateTask(t, `${where}: tasks[${i}]`, baseDir));
  const seen = new Set<string>();
  for (const [i, t] of tasks.entries()) {
    if (seen.has(t.name)) throw new CompareError(`${where}: tasks[${i}].name: "${t.name}" is used by an earlier task`);
    seen.add(t.name);
  }
  return { name: s.name, tasks };
}

/** Reads and checks a suite.yaml (or .json). */
export function readSuiteFile(path: string): Suite {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new CompareError(`--suite ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let value: unknown;
  try {
    value = path.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new CompareError(`${path}: not valid ${path.endsWith(".json") ? "JSON" : "YAML"}: ${(e as Error).message.split("\n")[0]}`);
  }
  return validateSuite(value, path, dirname(resolve(path)));
}

/** A suite by built-in name or file; built-in suites write their data under `dataDir`. */
export async function resolveSuite(nameOrFile: string, dataDir: string): Promise<Suite> {
  const builtIn = builtInSuites[nameOrFile];
  if (builtIn) return { name: nameOrFile, tasks: await builtIn(dataDir) };
  if (/\.(ya?ml|json)$/.test(nameOrFile) || existsSync(nameOrFile)) return readSuiteFile(nameOrFile);
  const known = Object.keys(builtInSuites);
  throw new CompareError(
    `--suite ${nameOrFile}: unknown suite (built-in suites: ${known.length ? known.join(", ") : "none yet"}; or give a suite .yaml file)`,
  );
}
