/** Parameter counts of a saved adapter folder, for compare's rows. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile } from "../io/safetensors.js";
import { ADAPTER_CONFIG } from "../tuners/format.js";
import { parsePeftConfig } from "../tuners/peft-model.js";

/**
 * Elements of an adapter folder's trained tensors: tensors its method keeps fixed (Tuner.trainable:
 * LoRA-SB's B and A, SoKA's starting factors) are saved but not counted, as in parameterCounts().
 */
export function trainableNumel(dir: string): number {
  const { tuner, config } = parsePeftConfig(JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8")) as Record<string, unknown>);
  const f = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
  try {
    return f.entries
      .filter((e) => tuner.trainable?.(e.name.replace(/^base_model\.model\./, ""), config) !== false)
      .reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
  } finally {
    f.close();
  }
}
