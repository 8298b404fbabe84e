/**
 * Adapter configs as HF PEFT writes them. Users may write keys in camelCase or snake_case; they
 * are normalised to snake_case (PEFT's spelling) and written back that way.
 */
import { PeftkitError } from "../engine/errors.js";

export class PeftConfigError extends PeftkitError {}

export type RawPeftConfig = Record<string, unknown>;

/** rankPattern → rank_pattern; snake_case keys pass through. */
export function toSnake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function normalizeKeys(raw: Readonly<Record<string, unknown>>, where: string): RawPeftConfig {
  const out: RawPeftConfig = {};
  for (const [k, v] of Object.entries(raw)) {
    const s = toSnake(k);
    if (s in out && k !== s) throw new PeftConfigError(`${where}: "${k}" and "${s}" both given`);
    out[s] = v;
  }
  return out;
}

/** Typed access to a normalised config, with errors naming the field. */
export class FieldReader {
  readonly used = new Set<string>();
  constructor(
    readonly raw: RawPeftConfig,
    readonly where: string,
  ) {}

  private fail(field: string, want: string): never {
    throw new PeftConfigError(`${this.where}: field "${field}" must be ${want}, got ${JSON.stringify(this.raw[field])}`);
  }

  private get(field: string): unknown {
    this.used.add(field);
    return this.raw[field];
  }

  int(field: string, dflt: number, min = 0): number {
    const v = this.get(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) this.fail(field, `an integer >= ${min}`);
    return v;
  }

  num(field: string, dflt: number): number {
    const v = this.get(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(field, "a finite number");
    return v;
  }

  bool(field: string, dflt: boolean): boolean {
    const v = this.get(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") this.fail(field, "true or false");
    return v;
  }

  str<T extends string>(field: string, dflt: T, allowed?: readonly T[]): T {
    const v = this.get(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "string" || (allowed && !allowed.includes(v as T)))
      this.fail(field, allowed ? `one of ${allowed.map((a) => `"${a}"`).join(", ")}` : "a string");
    return v as T;
  }

  optStr(field: string): string | null {
    const v = this.get(field);
    if (v === undefined || v === null) return null;
    if (typeof v !== "string") this.fail(field, "a string");
    return v;
  }

  /** A list of strings, a single regex string, or null. */
  targets(field: string): string[] | string | null {
    const v = this.get(field);
    if (v === undefined || v === null) return null;
    if (typeof v === "string") return v;
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return [...v] as string[];
    this.fail(field, "a list of module names or a regex string");
  }

  strList(field: string): string[] | null {
    const v = this.get(field);
    if (v === undefined || v === null) return null;
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return [...v] as string[];
    this.fail(field, "a list of strings");
  }

  intOrList(field: string): number | number[] | null {
    const v = this.get(field);
    if (v === undefined || v === null) return null;
    if (typeof v === "number" && Number.isInteger(v)) return v;
    if (Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x))) return [...v] as number[];
    this.fail(field, "an integer or a list of integers");
  }

  /** A map regex → number (rank_pattern, alpha_pattern). */
  numberMap(field: string): Record<string, number> {
    const v = this.get(field);
    if (v === undefined || v === null) return {};
    if (typeof v !== "object" || Array.isArray(v) || !Object.values(v).every((x) => typeof x === "number"))
      this.fail(field, "an object of pattern → number");
    return { ...(v as Record<string, number>) };
  }

  /** A map name → integer ≥ 1 (SpIEL's and SPT's num_deltas), or null. */
  countMap(field: string): Record<string, number> | null {
    const v = this.get(field);
    if (v === undefined || v === null) return null;
    if (typeof v !== "object" || Array.isArray(v)) this.fail(field, "an object of module name → count");
    for (const [k, n] of Object.entries(v as Record<string, unknown>))
      if (typeof n !== "number" || !Number.isInteger(n) || n < 1)
        throw new PeftConfigError(`${this.where}: field "${field}": "${k}" must map to an integer >= 1, got ${JSON.stringify(n)}`);
    return { ...(v as Record<string, number>) };
  }

  any(field: string): unknown {
    return this.get(field);
  }
}

/** Fields every PEFT config has. */
export interface CommonConfig {
  peftType: string;
  taskType: string | null;
  baseModelNameOrPath: string | null;
  revision: string | null;
  inferenceMode: boolean;
}

export function readCommon(r: FieldReader, peftType: string): CommonConfig {
  const given = r.str("peft_type", peftType);
  if (given !== peftType) throw new PeftConfigError(`${r.where}: peft_type "${given}" does not match ${peftType}`);
  return {
    peftType,
    taskType: r.optStr("task_type"),
    baseModelNameOrPath: r.optStr("base_model_name_or_path"),
    revision: r.optStr("revision"),
    inferenceMode: r.bool("inference_mode", false),
  };
}

/**
 * The peft_version written to adapter_config.json: the HF PEFT release whose config fields we
 * write (test/golden/peft-config-fields.json), spelled as that release writes its own __version__.
 * PEFT keeps the value it reads and parses it as a version only where a format changed (OFT), so a
 * real release number loads cleanly; a file written by peftkit can be told apart by nothing else.
 */
export const PEFT_COMPAT_VERSION = "0.20.0";

/** PeftConfigMixin's and PeftConfig's fields, which every config writes. */
export function commonJson(c: CommonConfig): Record<string, unknown> {
  return {
    peft_type: c.peftType,
    task_type: c.taskType,
    base_model_name_or_path: c.baseModelNameOrPath,
    revision: c.revision,
    inference_mode: c.inferenceMode,
    auto_mapping: null,
    peft_version: PEFT_COMPAT_VERSION,
  };
}

/** Sorted keys so written configs are stable and diffable. */
export function sortedJson(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.keys(o)
      .sort()
      .map((k) => [k, o[k]]),
  );
}

/** The module-selection fields LoRA-style configs share (PEFT's names and meanings). */
export interface TargetFields {
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  layersToTransform: number | number[] | null;
  layersPattern: string[] | string | null;
  modulesToSave: string[] | null;
}

export function readTargetFields(r: FieldReader): TargetFields {
  return {
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    modulesToSave: r.strList("modules_to_save"),
  };
}

export function targetFieldsJson(c: TargetFields): Record<string, unknown> {
  return {
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    modules_to_save: c.modulesToSave,
  };
}
