import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/**
 * SpIEL's SftConfig (AlanAnsell/peft, src/peft/tuners/sft/config.py; peft_type "SFT"), with its
 * defaults. The per-module counts `num_deltas` are written on save, so a loaded folder has the
 * sizes it was trained with.
 */
export interface SftConfig extends CommonConfig, TargetSpec {
  /** Share of all the model's parameters that train (default 0.01), spread over the targets by size. */
  density: number;
  /** Overrides density: the total number of trained entries. */
  numTunableWeights: number | null;
  /** Module name → entries; overrides both (written on save). */
  numDeltas: Record<string, number> | null;
  /** How entries are regrown at a reselection: "rigl" (accumulated gradients) or "sm3" (SM3 second-moment outer product). */
  selectionAlgorithm: "rigl" | "sm3";
  /** Steps between reselections; 0 keeps the first selection (a fixed index set). */
  reselectionSteps: number;
  /** Steps before a reselection whose gradients rank the candidates ("rigl"). */
  selectionAccumulationSteps: number;
  /** Share of each index set replaced at reselections: p₀, decaying to 0 by reselection_rate_policy. */
  initialReselectionRate: number;
  /** "linear": p₀·(1 − t/T), the first reselection replacing everything; "cosine": p₀·(1 + cos(πt/T))/2 (the authors' code has no full first replacement there). */
  reselectionRatePolicy: "linear" | "cosine";
  candidateReselectionSteps: number | null;
  candidateReselectionProportion: number;
  dtype: "auto" | "bfloat16" | "float16" | "float32";
  modulesToSave: string[] | null;
  /**
   * peftkit's addition, as PEFT's init_weights elsewhere: true (default) starts the values at 0
   * (no change); false draws them from N(0, 0.1²), for tests.
   */
  initWeights: boolean;
}

export function parseSftConfig(raw: RawPeftConfig, where: string): SftConfig {
  const r = new FieldReader(raw, where);
  const cfg: SftConfig = {
    ...readCommon(r, "SFT"),
    density: r.num("density", 0.01),
    numTunableWeights: r.any("num_tunable_weights") == null ? null : r.int("num_tunable_weights", 0, 1),
    numDeltas: r.countMap("num_deltas"),
    selectionAlgorithm: r.str("selection_algorithm", "rigl", ["rigl", "sm3"] as const),
    reselectionSteps: r.int("reselection_steps", 20, 0),
    selectionAccumulationSteps: r.int("selection_accumulation_steps", 5, 1),
    initialReselectionRate: r.num("initial_reselection_rate", 0.2),
    reselectionRatePolicy: r.str("reselection_rate_policy", "linear", ["linear", "cosine"] as const),
    candidateReselectionSteps: r.any("candidate_reselection_steps") == null ? null : r.int("candidate_reselection_steps", 0, 1),
    candidateReselectionProportion: r.num("candidate_reselection_proportion", 0.2),
    dtype: r.str("dtype", "float32", ["auto", "bfloat16", "float16", "float32"] as const),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    modulesToSave: r.strList("modules_to_save"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    initWeights: r.bool("init_weights", true),
  };
  if (cfg.numDeltas === null && cfg.numTunableWeights === null && !(cfg.density > 0 && cfg.density <= 1))
    throw new PeftConfigError(`${where}: field "density" must be in (0, 1], got ${cfg.density}`);
  if (!(cfg.initialReselectionRate >= 0 && cfg.initialReselectionRate <= 1))
    throw new PeftConfigError(`${where}: field "initial_reselection_rate" must be in [0, 1], got ${cfg.initialReselectionRate}`);
  if (cfg.dtype !== "float32" && cfg.dtype !== "auto")
    throw new PeftConfigError(`${where}: field "dtype": peftkit trains SFT values in float32 (got "${cfg.dtype}")`);
  if (cfg.reselectionSteps > 0 && cfg.selectionAccumulationSteps >= cfg.reselectionSteps - 1)
    throw new PeftConfigError(
      `${where}: field "selection_accumulation_steps" (${cfg.selectionAccumulationSteps}) must be below reselection_steps − 1 (${cfg.reselectionSteps - 1}): a selection phase opens after step R·j − 1 and closes after R·j + A`,
    );
  if (cfg.targetModules === null && cfg.numDeltas === null)
    throw new PeftConfigError(`${where}: field "target_modules" is required (SftModel has no default targets)`);
  return cfg;
}

export function sftConfigJson(c: SftConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    density: c.density,
    num_tunable_weights: c.numTunableWeights,
    num_deltas: c.numDeltas,
    selection_algorithm: c.selectionAlgorithm,
    reselection_steps: c.reselectionSteps,
    selection_accumulation_steps: c.selectionAccumulationSteps,
    initial_reselection_rate: c.initialReselectionRate,
    reselection_rate_policy: c.reselectionRatePolicy,
    candidate_reselection_steps: c.candidateReselectionSteps,
    candidate_reselection_proportion: c.candidateReselectionProportion,
    dtype: c.dtype,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    init_weights: c.initWeights,
  };
}
