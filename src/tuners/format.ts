/**
 * HF PEFT adapter folders: adapter_config.json + adapter_model.safetensors (metadata format=pt,
 * keys "base_model.model.<module>.<param>", adapter name stripped). A non-default adapter is
 * saved in a sub-folder of its name. Loading checks every key: unknown, missing or mis-shaped
 * tensors are an error listing them, never a partial load.
 */

import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { openCompeftWeights } from "../compress/file.js";
import type { HostTensor } from "../engine/ir/host.js";
import { writeFileAtomic } from "../io/atomic-write.js";
import { readJsonFile } from "../io/hf-folder.js";
import { type RawTensor, SafetensorsFile, writeSafetensors } from "../io/safetensors.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { normalizeKeys, PEFT_COMPAT_VERSION, PeftConfigError, sortedJson } from "./config.js";
import { modulesToSaveKeys } from "./modules-to-save.js";
import { type Adapter, type AnyConfig, type PeftModel, parsePeftConfig } from "./peft-model.js";
import { tunerFor } from "./registry.js";
import type { Tuner } from "./tuner.js";

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";
const PREFIX = "base_model.model.";

/**
 * Prompt-learning methods save their tensors without the module prefix ("prompt_embeddings");
 * keys that start with "base_model." are model-level tensors PEFT saves outside the wrapped model
 * (VeRA's "base_model.vera_A") and are written as they are.
 */
function savedKey(tuner: Tuner, key: string): string {
  return tuner.promptLearning || key.startsWith(MODEL_LEVEL) ? key : PREFIX + key;
}

const MODEL_LEVEL = "base_model.";

/** The adapter key of a saved tensor name, or null when it cannot be one. */
function adapterKey(tuner: Tuner, name: string): string | null {
  if (tuner.promptLearning) return name;
  if (name.startsWith(PREFIX)) return name.slice(PREFIX.length);
  return name.startsWith(MODEL_LEVEL) ? name : null;
}

function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

export function adapterConfigJson(a: Adapter, base: PreTrainedModel): Record<string, unknown> {
  const json = a.tuner.toJson(a.config);
  json.inference_mode = true;
  if (json.base_model_name_or_path === null || json.base_model_name_or_path === undefined) json.base_model_name_or_path = base.dir;
  if (!("modules_to_save" in json)) json.modules_to_save = a.config.modulesToSave ?? null;
  json.peft_version = PEFT_COMPAT_VERSION;
  return sortedJson(json);
}

/**
 * Writes one adapter into `dir` (created if needed): weights first, then the config, each
 * fsynced and renamed into place, so a config always sits beside complete weights.
 */
export function saveAdapter(peft: PeftModel, name: string, dir: string): void {
  const a = peft.adapter(name);
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, HostTensor | RawTensor> = {};
  for (const [k, t] of a.tuner.tensorsToSave?.(peft.info, a.config, a.tensors) ?? a.tensors) tensors[savedKey(a.tuner, k)] = t;
  // modules_to_save copies are PeftModel's, not the method's: they are saved whatever the
  // method's tensorsToSave keeps (R-AMT writes only its packed masks).
  for (const key of modulesToSaveKeys(peft.info, a.config.modulesToSave ?? null).values()) {
    const t = a.tensors.get(key);
    if (t && !(savedKey(a.tuner, key) in tensors)) tensors[savedKey(a.tuner, key)] = t;
  }
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: "pt" });
  writeJsonAtomic(join(dir, ADAPTER_CONFIG), adapterConfigJson(a, peft.base));
}

/** savePretrained: "default" in dir itself, every other adapter in dir/<name>. */
export function savePretrained(peft: PeftModel, dir: string, opts: { selectedAdapters?: string[] } = {}): void {
  for (const name of opts.selectedAdapters ?? peft.adapterNames) saveAdapter(peft, name, name === "default" ? dir : join(dir, name));
}

/** Reads and validates an adapter folder against a model, without attaching it. */
export function readAdapter(peft: PeftModel, dir: string): { tuner: Tuner; config: AnyConfig; tensors: Map<string, HostTensor> } {
  const cfgPath = join(dir, ADAPTER_CONFIG);
  if (!existsSync(cfgPath)) throw new PeftConfigError(`${dir}: no ${ADAPTER_CONFIG} (is this a PEFT adapter folder?)`);
  const raw = readJsonFile(cfgPath, "adapter config");
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new PeftConfigError(`${cfgPath}: must be a JSON object`);
  const rawCfg = normalizeKeys(raw as Record<string, unknown>, cfgPath);
  let weightsPath = join(dir, ADAPTER_WEIGHTS);
  // A folder written by `peftkit compress` (ComPEFT) is decompressed in memory.
  const compressed = existsSync(weightsPath) ? null : openCompeftWeights(dir);
  if (compressed) weightsPath = compressed.path;
  if (!compressed && !existsSync(weightsPath)) {
    const bin = existsSync(join(dir, "adapter_model.bin"))
      ? " (adapter_model.bin is PyTorch pickle, which is not supported: save with safe_serialization=True)"
      : "";
    throw new PeftConfigError(`${dir}: no ${ADAPTER_WEIGHTS}${bin}`);
  }
  const file = compressed ?? SafetensorsFile.open(weightsPath);
  try {
    // Older formats are recognised before the config is parsed with today's rules.
    const early = typeof rawCfg.peft_type === "string" ? tunerFor(rawCfg.peft_type) : null;
    const keyOf = (n: string) => (early?.promptLearning ? n : n.startsWith(PREFIX) ? n.slice(PREFIX.length) : n);
    const skip = new Set(
      early?.checkFolder?.(rawCfg, new Map(file.entries.map((e) => [keyOf(e.name), e.shape])), dir, peft.info)?.ignore ?? [],
    );
    const { tuner, config } = parsePeftConfig(rawCfg, cfgPath);
    const expected = peft.expectedTensors(tuner, config);
    const tensors = new Map<string, HostTensor>();
    const unknown: string[] = [];
    const misshaped: string[] = [];
    for (const e of file.entries) {
      if (skip.has(keyOf(e.name))) continue;
      const key = adapterKey(tuner, e.name);
      const shape = key === null ? undefined : expected.get(key);
      if (key === null || !shape) {
        unknown.push(`${e.name} [${e.shape.join(", ")}]`);
        continue;
      }
      if (shape.length !== e.shape.length || shape.some((d, i) => d !== e.shape[i])) {
        misshaped.push(`${e.name}: file [${e.shape.join(", ")}], expected [${shape.join(", ")}]`);
        continue;
      }
      tensors.set(key, file.read(e.name));
    }
    const missing = [...expected]
      .filter(([k]) => !tensors.has(k) && !misshaped.some((m) => m.startsWith(savedKey(tuner, k))))
      .map(([k, s]) => `${savedKey(tuner, k)} [${s.join(", ")}]`);
    const problems: string[] = [];
    if (missing.length) problems.push(`missing tensors:\n  ${missing.join("\n  ")}`);
    if (misshaped.length) problems.push(`tensors with the wrong shape:\n  ${misshaped.join("\n  ")}`);
    if (unknown.length) problems.push(`tensors this ${tuner.peftType} config on this model does not use:\n  ${unknown.join("\n  ")}`);
    if (problems.length)
      throw new PeftConfigError(`${weightsPath}: the adapter does not match its config and the model\n${problems.join("\n")}`);
    if (!tuner.tensorsFromSaved) return { tuner, config, tensors };
    const restored = tuner.tensorsFromSaved(peft.info, config, tensors);
    // As in saveAdapter: the modules_to_save copies pass by the method's hook.
    for (const key of modulesToSaveKeys(peft.info, config.modulesToSave ?? null).values()) {
      const t = tensors.get(key);
      if (t && !restored.has(key)) restored.set(key, t);
    }
    return { tuner, config, tensors: restored };
  } finally {
    file.close();
  }
}

/** loadAdapter: reads an adapter folder into a new named adapter. */
export function loadAdapter(peft: PeftModel, dir: string, name: string): Adapter {
  const { tuner, config, tensors } = readAdapter(peft, dir);
  return peft.insertAdapter(name, tuner, config, tensors);
}
