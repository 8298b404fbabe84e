import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "../lora/config.js";

/**
 * LoRA-GGPO is not in HF PEFT (peft_type "LORA_GGPO"): LoRA's config plus the perturbation's two
 * weights. Defaults σ = 0.03, β = 0.01 are kohya-ss/sd-scripts' (PR #1974, "from LLM training"),
 * the only released implementation found; the paper's own values could not be read (docs/methods/lora-ggpo.md).
 */
export interface LoraGgpoConfig extends LoraConfig {
  /** σ: weight of the row norm ‖W'_i‖ of the effective weight W' = W + s·B·A. */
  ggpoSigma: number;
  /** β: weight of the squared row norm of the estimated full-weight gradient. */
  ggpoBeta: number;
}

export function parseLoraGgpoConfig(raw: RawPeftConfig, where: string): LoraGgpoConfig {
  const given = raw.peft_type ?? "LORA_GGPO";
  if (given !== "LORA_GGPO") throw new PeftConfigError(`${where}: peft_type "${String(given)}" does not match LORA_GGPO`);
  const lora = parseLoraConfig({ ...raw, peft_type: "LORA" }, where);
  const num = (field: string, dflt: number): number => {
    const v = raw[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0)
      throw new PeftConfigError(`${where}: field "${field}" must be a finite number >= 0, got ${JSON.stringify(v)}`);
    return v;
  };
  // DoRA rescales W + s·B·A by a learned magnitude: the perturbation's W' would not be the weight used.
  if (lora.useDora) throw new PeftConfigError(`${where}: LORA_GGPO does not combine with "use_dora"`);
  return { ...lora, peftType: "LORA_GGPO", ggpoSigma: num("ggpo_sigma", 0.03), ggpoBeta: num("ggpo_beta", 0.01) };
}

export function loraGgpoConfigJson(c: LoraGgpoConfig): Record<string, unknown> {
  return { ...loraConfigJson(c), peft_type: "LORA_GGPO", ggpo_sigma: c.ggpoSigma, ggpo_beta: c.ggpoBeta };
}
