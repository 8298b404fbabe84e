/**
 * A LOWBIT adapter as a plain HF PEFT LoRA folder: lora_A/lora_B = the dequantised weights
 * (level[code]·σ + μ), r = r, lora_alpha = s·r (so PEFT's scaling α/r is s), target_modules = the
 * adapted modules, no dropout. PEFT loads it as any LoRA; it computes what the low-bit adapter does.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../../engine/ir/host.js";
import { hostTensor } from "../../engine/ir/host.js";
import { writeFileAtomic } from "../../io/atomic-write.js";
import { writeSafetensors } from "../../io/safetensors.js";
import { PeftConfigError } from "../config.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapterConfigJson } from "../format.js";
import { modulesToSaveKeys } from "../modules-to-save.js";
import { type Adapter, type PeftModel, parsePeftConfig } from "../peft-model.js";
import type { LowbitConfig } from "./config.js";
import { hostWeight, lowbitLayers } from "./index.js";

export function saveDequantizedLora(peft: PeftModel, name: string, dir: string): void {
  const a = peft.adapter(name);
  if (a.tuner.peftType !== "LOWBIT") throw new PeftConfigError(`adapter "${name}" is ${a.tuner.peftType}, not LOWBIT`);
  const c = a.config as LowbitConfig;
  const layers = lowbitLayers(peft.info, c);
  const tensors = new Map<string, HostTensor>();
  for (const l of layers) {
    tensors.set(`${l.key}.lora_A.weight`, hostTensor("f32", [...l.a.shape], hostWeight(c, l.a, a.tensors)));
    tensors.set(`${l.key}.lora_B.weight`, hostTensor("f32", [...l.b.shape], hostWeight(c, l.b, a.tensors)));
  }
  for (const key of modulesToSaveKeys(peft.info, c.modulesToSave ?? null).values()) {
    const t = a.tensors.get(key);
    if (t) tensors.set(key, t);
  }
  const { tuner, config } = parsePeftConfig({
    peft_type: "LORA",
    task_type: c.taskType,
    base_model_name_or_path: c.baseModelNameOrPath,
    r: c.r,
    lora_alpha: c.scale * c.r,
    lora_dropout: 0,
    target_modules: layers.map((l) => l.key),
    modules_to_save: c.modulesToSave,
  });
  const lora: Adapter = { name, tuner, config, tensors };
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), Object.fromEntries([...tensors].map(([k, t]) => [`base_model.model.${k}`, t])), {
    format: "pt",
  });
  writeFileAtomic(join(dir, ADAPTER_CONFIG), `${JSON.stringify(adapterConfigJson(lora, peft.base), null, 2)}\n`);
}
