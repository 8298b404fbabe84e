/**
 * The class labels of a classification adapter: `label_config.json` in the adapter folder (and in
 * each checkpoint-N/), with the keys and JSON shapes transformers keeps in a model's config.json:
 *
 * ```json
 * { "num_labels": 2, "id2label": { "0": "neg", "1": "pos" }, "label2id": { "neg": 0, "pos": 1 } }
 * ```
 *
 * It is a file of its own because adapter_config.json holds exactly HF PEFT's fields. `peftkit
 * merge` writes the same three keys into the merged model's config.json.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { PeftkitError } from "../engine/errors.js";
import { writeFileAtomic } from "./atomic-write.js";
import { readJsonFile } from "./hf-folder.js";

export const LABEL_CONFIG_FILE = "label_config.json";

/** A missing, malformed or inconsistent label config; the message names the file and field. */
export class LabelConfigError extends PeftkitError {}

/** The classes of a classifier: `names[id]` is the label of class id `id`. */
export interface LabelConfig {
  readonly names: readonly string[];
}

/** transformers' names for classes that have none: LABEL_0, LABEL_1, ... */
export function defaultLabelNames(numLabels: number): string[] {
  return Array.from({ length: numLabels }, (_, i) => `LABEL_${i}`);
}

/** True when the names are transformers' placeholders (the model carries no real class names). */
export function hasDefaultNames(lc: LabelConfig): boolean {
  return lc.names.every((n, i) => n === `LABEL_${i}`);
}

export function labelConfig(names: readonly string[]): LabelConfig {
  if (names.length === 0) throw new LabelConfigError("a classifier needs at least one label");
  if (new Set(names).size !== names.length) throw new LabelConfigError(`labels list a class twice: ${JSON.stringify(names)}`);
  return { names: [...names] };
}

/** The transformers config.json fields: num_labels, id2label (string keys), label2id. */
export function labelConfigFields(lc: LabelConfig): {
  num_labels: number;
  id2label: Record<string, string>;
  label2id: Record<string, number>;
} {
  const id2label: Record<string, string> = {};
  const label2id: Record<string, number> = {};
  lc.names.forEach((n, i) => {
    id2label[String(i)] = n;
    label2id[n] = i;
  });
  return { num_labels: lc.names.length, id2label, label2id };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The labels a config object declares: `id2label` keys must be exactly "0".."N-1" with distinct
 * string values; without id2label, `num_labels` alone gives LABEL_i names; null when the object
 * declares neither. `strict` (our own label_config.json) also requires `num_labels` and `label2id`
 * to agree with id2label; a model's config.json is read as transformers reads it, where id2label
 * wins and label2id is not consulted. `where` names the file in messages.
 */
export function parseLabelFields(raw: Record<string, unknown>, where: string, strict = false): LabelConfig | null {
  const { num_labels: n, id2label, label2id } = raw;
  if (n !== undefined && n !== null && (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1))
    throw new LabelConfigError(`${where}: field "num_labels" must be a positive integer, got ${JSON.stringify(n)}`);
  let names: string[];
  if (id2label !== undefined && id2label !== null) {
    if (!isObject(id2label))
      throw new LabelConfigError(`${where}: field "id2label" must be an object {"0": "name", ...}, got ${JSON.stringify(id2label)}`);
    const keys = Object.keys(id2label);
    if (keys.length === 0) throw new LabelConfigError(`${where}: field "id2label" is empty`);
    names = [];
    for (let i = 0; i < keys.length; i++) {
      const v = id2label[String(i)];
      if (v === undefined)
        throw new LabelConfigError(
          `${where}: field "id2label" must have the keys "0" to "${keys.length - 1}", got ${JSON.stringify(keys)}`,
        );
      if (typeof v !== "string") throw new LabelConfigError(`${where}: field "id2label.${i}" must be a string, got ${JSON.stringify(v)}`);
      names.push(v);
    }
    const twice = names.find((x, i) => names.indexOf(x) !== i);
    if (twice !== undefined) throw new LabelConfigError(`${where}: field "id2label" names the class ${JSON.stringify(twice)} twice`);
    if (strict && typeof n === "number" && n !== names.length)
      throw new LabelConfigError(`${where}: field "num_labels" is ${n}, but "id2label" has ${names.length} labels`);
  } else if (typeof n === "number") names = defaultLabelNames(n);
  else return null;
  if (strict && label2id !== undefined && label2id !== null) {
    if (!isObject(label2id)) throw new LabelConfigError(`${where}: field "label2id" must be an object {"name": 0, ...}`);
    const keys = Object.keys(label2id);
    const agrees = keys.length === names.length && names.every((x, i) => label2id[x] === i);
    if (!agrees) throw new LabelConfigError(`${where}: field "label2id" ${JSON.stringify(label2id)} is not the inverse of "id2label"`);
  }
  return { names };
}

/** Reads `label_config.json` from an adapter folder; null when the folder has none. */
export function readLabelConfig(dir: string): LabelConfig | null {
  const path = join(dir, LABEL_CONFIG_FILE);
  if (!existsSync(path)) return null;
  const raw = readJsonFile(path, "label config");
  if (!isObject(raw)) throw new LabelConfigError(`${path}: expected a JSON object`);
  for (const k of ["num_labels", "id2label", "label2id"])
    if (raw[k] === undefined || raw[k] === null) throw new LabelConfigError(`${path}: missing field "${k}"`);
  return parseLabelFields(raw, path, true);
}

/** Writes `label_config.json` into a folder (atomically: a reader never sees half a file). */
export function writeLabelConfig(dir: string, lc: LabelConfig): void {
  writeFileAtomic(join(dir, LABEL_CONFIG_FILE), `${JSON.stringify(labelConfigFields(lc), null, 2)}\n`);
}

/** "0 neg, 1 pos" for messages and `peftkit info`. */
export function describeLabels(lc: LabelConfig): string {
  return lc.names.map((n, i) => `${i} ${n}`).join(", ");
}
