import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "../lora/config.js";

/**
 * IST (Importance-aware Sparse Tuning) trains a LoRA adapter; these fields say how. The defaults
 * are the constants of the authors' ISTCallback (antgroup/importance-aware-sparse-tuning-IST-paper,
 * ist.py). They steer training only: the saved adapter_config.json is plain LoRA's (istConfigJson),
 * and a checkpoint keeps them in its controller state.
 */
export interface IstConfig extends LoraConfig {
  /** Share of the transformer layers whose adapters each step updates (n_layers_updated = 0.25·L). */
  updateFraction: number;
  /** Share of the layers suppressed in each trial of an importance update (n_layers_suppressed = 0.5·L). */
  suppressFraction: number;
  /** Factor on a suppressed layer's adapter output (response_suppression_factor). */
  suppressFactor: number;
  /** Steps between importance updates (update_importance_interval_steps). */
  importanceInterval: number;
  /** Suppression trials per importance update (rl_step). */
  trials: number;
  /** Step size of the score update (rl_lr). */
  scoreLr: number;
  /** Examples in an importance batch (the callback's DataLoader batch_size). */
  importanceBatchSize: number;
  /** Seed of the layer draws. */
  seed: number;
}

export const IST_DEFAULTS = {
  updateFraction: 0.25,
  suppressFraction: 0.5,
  suppressFactor: 0.25,
  importanceInterval: 10,
  trials: 3,
  scoreLr: 10,
  importanceBatchSize: 16,
  seed: 42,
} as const;

export function parseIstConfig(raw: RawPeftConfig, where: string): IstConfig {
  const given = raw.peft_type ?? "IST";
  if (given !== "IST") throw new PeftConfigError(`${where}: peft_type "${String(given)}" does not match IST`);
  const lora = parseLoraConfig({ ...raw, peft_type: "LORA" }, where);
  // PiSSA/OLoRA/CorDA train against an edited base: the folder would not be plain LoRA.
  if (lora.initLoraWeights !== true && lora.initLoraWeights !== false && lora.initLoraWeights !== "gaussian")
    throw new PeftConfigError(
      `${where}: IST trains LoRA from PEFT's default init; "init_lora_weights" ${JSON.stringify(lora.initLoraWeights)} is not supported`,
    );
  const value = (field: string): unknown => raw[field] ?? undefined;
  const fraction = (field: string, dflt: number): number => {
    const v = value(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !(v > 0 && v <= 1))
      throw new PeftConfigError(`${where}: field "${field}" must be in (0, 1], got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (field: string, dflt: number, min: number): number => {
    const v = value(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min)
      throw new PeftConfigError(`${where}: field "${field}" must be a finite number >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  };
  const int = (field: string, dflt: number, min: number): number => {
    const v = value(field);
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min)
      throw new PeftConfigError(`${where}: field "${field}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return v;
  };
  const d = IST_DEFAULTS;
  return {
    ...lora,
    peftType: "IST",
    updateFraction: fraction("update_fraction", d.updateFraction),
    suppressFraction: fraction("suppress_fraction", d.suppressFraction),
    suppressFactor: num("suppress_factor", d.suppressFactor, 0),
    importanceInterval: int("importance_interval", d.importanceInterval, 1),
    trials: int("trials", d.trials, 1),
    scoreLr: num("score_lr", d.scoreLr, 0),
    importanceBatchSize: int("importance_batch_size", d.importanceBatchSize, 1),
    seed: int("seed", d.seed, 0),
  };
}

/**
 * The saved config: plain PEFT LoRA (peft_type "LORA", LoraConfig's fields only), so HF PEFT and
 * peftkit load the folder as the LoRA adapter it is. IST's fields are training settings.
 */
export function istConfigJson(c: IstConfig): Record<string, unknown> {
  return loraConfigJson({ ...c, peftType: "LORA" });
}

/** IST's own fields in snake_case, as a checkpoint's controller state records them. */
export function istSettings(c: IstConfig): Record<string, number> {
  return {
    update_fraction: c.updateFraction,
    suppress_fraction: c.suppressFraction,
    suppress_factor: c.suppressFactor,
    importance_interval: c.importanceInterval,
    trials: c.trials,
    score_lr: c.scoreLr,
    importance_batch_size: c.importanceBatchSize,
    seed: c.seed,
  };
}
