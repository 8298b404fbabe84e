/**
 * Which tensors of a saved adapter folder are fixed (Tuner.trainable false: saved with the adapter
 * but never trained, e.g. SVFit's singular vectors), from its adapter_config.json alone, so
 * `peftkit info` and compare's parameter counts need no model.
 */
import { normalizeKeys } from "./config.js";
import { tunerFor } from "./registry.js";

/** A test on saved keys (with or without "base_model.model."); never true for an unknown or malformed config. */
export function fixedTensorTest(adapterConfig: Record<string, unknown>): (savedKey: string) => boolean {
  try {
    const tuner = tunerFor(String(adapterConfig.peft_type));
    if (!tuner.trainable) return () => false;
    const c = tuner.parseConfig(normalizeKeys(adapterConfig, "adapter_config.json"), "adapter_config.json");
    return (key) => tuner.trainable?.(key.replace(/^base_model\.model\./, ""), c) === false;
  } catch {
    return () => false;
  }
}
