/** AdaLoRA's layers, keys and the rank_pattern resizing between memory (init_r) and PEFT's files. */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import { type TargetedLinear, targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { AdaLoraConfig } from "./config.js";

/** PEFT's TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING for the architectures peftkit has (mistral, vit: none). */
export const ADALORA_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ["q_proj", "v_proj"],
  qwen2: ["q_proj", "v_proj"],
  gpt2: ["c_attn"],
  bert: ["query", "value"],
  roberta: ["query", "key", "value", "dense"],
};

export interface AdaLoraLayer extends TargetedLinear {
  /** Kept triplets of the rank pattern, or null (all init_r kept). */
  keep: boolean[] | null;
}

export interface AdaLoraKeys {
  a: string;
  e: string;
  b: string;
}

/** ParameterDict entries: PEFT's keys have no ".weight" ("<module>.lora_A" once the adapter name is stripped). */
export function adaLoraKeys(module: string): AdaLoraKeys {
  return { a: `${module}.lora_A`, e: `${module}.lora_E`, b: `${module}.lora_B` };
}

/** The targeted layers, with the rank pattern checked against them (one line naming the entry). */
export function adaLoraLayers(info: ModelInfo, c: AdaLoraConfig): AdaLoraLayer[] {
  const layers = targetedLinears(info, c, "ADALORA config", ADALORA_DEFAULT_TARGETS[info.modelType] ?? null);
  const pattern = c.rankPattern ?? {};
  const known = new Set(layers.map((l) => l.key));
  for (const [m, bits] of Object.entries(pattern)) {
    if (!known.has(m))
      throw new PeftConfigError(
        `ADALORA config: rank_pattern["${m}.lora_E"] names no targeted layer (targeted: ${[...known].slice(0, 4).join(", ")}, ...)`,
      );
    if (bits.length !== c.initR)
      throw new PeftConfigError(`ADALORA config: rank_pattern["${m}.lora_E"] has ${bits.length} entries, init_r is ${c.initR}`);
  }
  return layers.map((l) => ({ ...l, keep: pattern[l.key] ?? null }));
}

/** Ranks a folder holds for a layer: the kept count of its pattern, else init_r. */
export function savedRank(l: AdaLoraLayer, initR: number): number {
  return l.keep ? l.keep.filter(Boolean).length : initR;
}

/** Rows (axis 0) or columns (axis 1) of a 2-D f32 tensor where keep is true. */
export function selectRank(t: HostTensor, keep: readonly boolean[], axis: 0 | 1): HostTensor {
  const [rows, cols] = t.shape;
  const src = t.data as Float32Array;
  const idx = keep.flatMap((k, i) => (k ? [i] : []));
  const n = idx.length;
  const out = new Float32Array(axis === 0 ? n * cols : rows * n);
  if (axis === 0) for (let j = 0; j < n; j++) out.set(src.subarray(idx[j] * cols, (idx[j] + 1) * cols), j * cols);
  else for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[i * n + j] = src[i * cols + idx[j]];
  return hostTensor("f32", axis === 0 ? [n, cols] : [rows, n], out);
}

/** The inverse of selectRank: the kept rows/columns back at their places among init_r, zeros elsewhere. */
export function expandRank(t: HostTensor, keep: readonly boolean[], axis: 0 | 1): HostTensor {
  const [rows, cols] = t.shape;
  const src = t.data as Float32Array;
  const r = keep.length;
  const idx = keep.flatMap((k, i) => (k ? [i] : []));
  const n = idx.length;
  const out = new Float32Array(axis === 0 ? r * cols : rows * r);
  if (axis === 0) for (let j = 0; j < n; j++) out.set(src.subarray(j * cols, (j + 1) * cols), idx[j] * cols);
  else for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[i * r + idx[j]] = src[i * cols + j];
  return hostTensor("f32", axis === 0 ? [r, cols] : [rows, r], out);
}
