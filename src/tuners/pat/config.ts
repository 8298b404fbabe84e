import { FieldReader, PeftConfigError, type RawPeftConfig } from "../config.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "../lora/config.js";

/**
 * PAT (Pruning-Aware Tuning) is not in HF PEFT (peft_type "PAT"): LoRA's config plus the Hybrid
 * Sparsification Modules' fields. Defaults are the authors' (kriskrisliu/PAT_Pruning-Aware-Tuning,
 * DimDownModule.py and train_args/sft/lora/llama2-7b-sft-lora-dimdown-learn3072.json), except
 * keep_dim (3072 of 4096 there: here ¾ of the model's hidden size when absent) and
 * schedule_steps (10000 there: here the run's planned steps when absent).
 */
export interface PatConfig extends LoraConfig {
  /** k: hidden channels the mask keeps (the authors' dimdown_dim); null: round(0.75·hidden), resolved at creation. */
  keepDim: number | null;
  /** N: length of the temperature/bias schedule in optimizer steps (the authors' global_step); null: the run's planned steps. */
  scheduleSteps: number | null;
  /** Rank of each HSM's U·D (the authors' hard-coded 200); null: min(200, hidden), resolved at creation. */
  hsmRank: number | null;
  /** The learnable per-channel scale s and the identity loss MSE(D·Dᵀ, I) (the authors' --identity_loss; default true). */
  identityLoss: boolean;
  /**
   * The authors' code adds the identity loss of the embedding HSM and of the last decoder layer's
   * two HSMs only (a loop-variable slip in LlamaModel.forward); true reproduces that, false (default)
   * adds every HSM's.
   */
  identityLossLastLayerOnly: boolean;
  /** Weight of the mask-count term |Σ 1[μ ≥ 0] − k| / k (the authors' constant 10). */
  countLossWeight: number;
  /**
   * peftkit's addition, for tests: true (default) starts U at 0, s at 1 and μ at 0 (the HSMs are
   * the identity); false draws U ~ N(0, 0.1²), s ~ 1 + N(0, 0.1²) and μ with random signs, |μ| in [0.1, 0.6].
   */
  initHsmWeights: boolean;
}

export function parsePatConfig(raw: RawPeftConfig, where: string): PatConfig {
  const given = raw.peft_type ?? "PAT";
  if (given !== "PAT") throw new PeftConfigError(`${where}: peft_type "${String(given)}" does not match PAT`);
  const own = [
    "keep_dim",
    "schedule_steps",
    "hsm_rank",
    "identity_loss",
    "identity_loss_last_layer_only",
    "count_loss_weight",
    "init_hsm_weights",
  ];
  const loraRaw: RawPeftConfig = { peft_type: "LORA" };
  for (const [k, v] of Object.entries(raw)) if (k !== "peft_type" && !own.includes(k)) loraRaw[k] = v;
  const lora = parseLoraConfig(loraRaw, where);
  const r = new FieldReader(raw, where);
  const optInt = (field: string): number | null => (r.any(field) == null ? null : r.int(field, 0, 1));
  const c: PatConfig = {
    ...lora,
    peftType: "PAT",
    keepDim: optInt("keep_dim"),
    scheduleSteps: optInt("schedule_steps"),
    hsmRank: optInt("hsm_rank"),
    identityLoss: r.bool("identity_loss", true),
    identityLossLastLayerOnly: r.bool("identity_loss_last_layer_only", false),
    countLossWeight: r.num("count_loss_weight", 10),
    initHsmWeights: r.bool("init_hsm_weights", true),
  };
  if (!(c.countLossWeight >= 0 && Number.isFinite(c.countLossWeight)))
    throw new PeftConfigError(`${where}: field "count_loss_weight" must be a finite number >= 0, got ${c.countLossWeight}`);
  // The HSM multiplies W + s·B·A's output; DoRA's magnitude would rescale a different weight.
  if (lora.useDora) throw new PeftConfigError(`${where}: PAT does not combine with "use_dora"`);
  return c;
}

export function patConfigJson(c: PatConfig): Record<string, unknown> {
  return {
    ...loraConfigJson(c),
    peft_type: "PAT",
    keep_dim: c.keepDim,
    schedule_steps: c.scheduleSteps,
    hsm_rank: c.hsmRank,
    identity_loss: c.identityLoss,
    identity_loss_last_layer_only: c.identityLossLastLayerOnly,
    count_loss_weight: c.countLossWeight,
    init_hsm_weights: c.initHsmWeights,
  };
}
