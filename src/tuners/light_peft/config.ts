import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "../lora/config.js";

/**
 * Light-PEFT's estimation phase (peft_type "LIGHT_PEFT", not in HF PEFT): LoRA's config plus the
 * masks' regulariser and learning-rate multipliers, and the four pruning ratios the run applies
 * after the phase (kept here so the phase-1 folder records what was pruned from it).
 * Defaults: gccnlp/Light-PEFT scripts/estimate.sh + train.sh (l1 1e-4; heads 1/3, FFN 1/3,
 * modules 0.75, ranks 0.5); the mask LR multipliers are MaskTrainer's constructor defaults
 * (×100 heads, ×50 neurons), see docs/methods/light_peft.md for why not the shipped ×1.
 */
export interface LightPeftConfig extends LoraConfig {
  /** Coefficient of Σ|m| over every head and neuron mask, added to the task loss. */
  maskL1Coef: number;
  /** Learning-rate multiple of the head masks. */
  attnMaskLrMult: number;
  /** Learning-rate multiple of the FFN neuron masks. */
  ffnMaskLrMult: number;
  /** Share of attention heads (in whole KV groups) pruned per layer. */
  attnPruningRatio: number;
  /** Share of FFN neurons pruned per layer. */
  ffnPruningRatio: number;
  /** Share of LoRA modules removed (by module importance, over all modules). */
  modulePruningRatio: number;
  /** Share of the kept modules' ranks removed (by rank importance, over all kept modules). */
  rankPruningRatio: number;
}

export const LIGHT_PEFT_DEFAULTS = {
  maskL1Coef: 1e-4,
  attnMaskLrMult: 100,
  ffnMaskLrMult: 50,
  attnPruningRatio: 1 / 3,
  ffnPruningRatio: 1 / 3,
  modulePruningRatio: 0.75,
  rankPruningRatio: 0.5,
} as const;

const FIELDS: [keyof typeof LIGHT_PEFT_DEFAULTS, string, "ratio" | "nonneg" | "positive"][] = [
  ["maskL1Coef", "mask_l1_coef", "nonneg"],
  ["attnMaskLrMult", "attn_mask_lr_mult", "positive"],
  ["ffnMaskLrMult", "ffn_mask_lr_mult", "positive"],
  ["attnPruningRatio", "attn_pruning_ratio", "ratio"],
  ["ffnPruningRatio", "ffn_pruning_ratio", "ratio"],
  ["modulePruningRatio", "module_pruning_ratio", "ratio"],
  ["rankPruningRatio", "rank_pruning_ratio", "ratio"],
];

export function parseLightPeftConfig(raw: RawPeftConfig, where: string): LightPeftConfig {
  const given = raw.peft_type ?? "LIGHT_PEFT";
  if (given !== "LIGHT_PEFT") throw new PeftConfigError(`${where}: peft_type "${String(given)}" does not match LIGHT_PEFT`);
  const lora = parseLoraConfig({ ...raw, peft_type: "LORA" }, where);
  // The masks scale what the layers read; DoRA's norm of W + s·B·A would not see them.
  if (lora.useDora) throw new PeftConfigError(`${where}: LIGHT_PEFT does not combine with "use_dora"`);
  // PiSSA/OLoRA/CorDA rewrite the base weights, which the pruning then slices from the original.
  if (![true, false, "gaussian"].includes(lora.initLoraWeights as boolean | string))
    throw new PeftConfigError(
      `${where}: LIGHT_PEFT needs "init_lora_weights" true, false or "gaussian", got ${JSON.stringify(lora.initLoraWeights)}`,
    );
  const out = { ...lora, peftType: "LIGHT_PEFT", ...LIGHT_PEFT_DEFAULTS } as LightPeftConfig;
  for (const [prop, field, kind] of FIELDS) {
    const v = raw[field];
    if (v === undefined || v === null) continue;
    const ok = typeof v === "number" && Number.isFinite(v) && (kind === "ratio" ? v >= 0 && v < 1 : kind === "positive" ? v > 0 : v >= 0);
    if (!ok) {
      const want = kind === "ratio" ? "in [0, 1)" : kind === "positive" ? "a finite number > 0" : "a finite number >= 0";
      throw new PeftConfigError(`${where}: field "${field}" must be ${want}, got ${JSON.stringify(v)}`);
    }
    out[prop] = v as number;
  }
  return out;
}

export function lightPeftConfigJson(c: LightPeftConfig): Record<string, unknown> {
  const json: Record<string, unknown> = { ...loraConfigJson(c), peft_type: "LIGHT_PEFT" };
  for (const [prop, field] of FIELDS) json[field] = c[prop];
  return json;
}
