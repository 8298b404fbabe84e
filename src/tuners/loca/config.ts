import {
  type CommonConfig,
  commonJson,
  FieldReader,
  PeftConfigError,
  type RawPeftConfig,
  readCommon,
  readTargetFields,
  type TargetFields,
  targetFieldsJson,
} from "../config.js";

/**
 * LoCA is not in HF PEFT (peft_type "LOCA"). Defaults are the authors' (TL-UESTC/LoCA,
 * peft/src/peft/tuners/loca/layer.py and their GLUE setting, catalog §1.8): n_frequency 1000,
 * scale 1, cycles of 10 coefficient steps and 20 location steps, location learning for the first
 * ~10% of the steps, location lr 1e-4 against a coefficient lr of 5e-3 (ratio 0.02).
 */
export interface LocaConfig extends CommonConfig, TargetFields {
  /** B: coefficients (and location pairs) per layer. */
  nFrequency: number;
  /** α: ΔW = α·iDCT2(S). */
  scale: number;
  /** Dropout on the layer input of the ΔW branch. */
  locaDropout: number;
  /**
   * Optimizer steps during which locations may train (the authors' learn_location_iter); 0: never
   * (locations are then fixed tensors). null: 10% of the run's planned steps (1000 when the
   * trainer is not told how many).
   */
  learnLocationIter: number | null;
  /** Length of a coefficient phase within a cycle (the authors' 10). */
  coefficientSteps: number;
  /** Length of a location phase within a cycle (the authors' 20). */
  locationSteps: number;
  /**
   * The locations' learning rate as a share of the run's (the authors train them with their own
   * lr, 1e-4, against 5e-3 for the coefficients on most GLUE tasks): the controller scales each
   * location update by this (exactly an optimizer parameter group with lr·ratio).
   */
  locationLrRatio: number;
  /** False: coefficients start N(0, 1) instead of 0, so the adapter is not a no-op (tests). */
  initWeights: boolean;
}

export function parseLocaConfig(raw: RawPeftConfig, where: string): LocaConfig {
  const f = new FieldReader(raw, where);
  const lli = f.any("learn_location_iter");
  const c: LocaConfig = {
    ...readCommon(f, "LOCA"),
    ...readTargetFields(f),
    nFrequency: f.int("n_frequency", 1000, 1),
    scale: f.num("scale", 1),
    locaDropout: f.num("loca_dropout", 0),
    learnLocationIter: lli === undefined || lli === null ? null : f.int("learn_location_iter", 0, 0),
    coefficientSteps: f.int("coefficient_steps", 10, 1),
    locationSteps: f.int("location_steps", 20, 0),
    locationLrRatio: f.num("location_lr_ratio", 0.02),
    initWeights: f.bool("init_weights", true),
  };
  if (c.locaDropout < 0 || c.locaDropout >= 1)
    throw new PeftConfigError(`${where}: field "loca_dropout" must be in [0, 1), got ${c.locaDropout}`);
  if (!(c.locationLrRatio > 0)) throw new PeftConfigError(`${where}: field "location_lr_ratio" must be > 0, got ${c.locationLrRatio}`);
  return c;
}

export function locaConfigJson(c: LocaConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    n_frequency: c.nFrequency,
    scale: c.scale,
    loca_dropout: c.locaDropout,
    learn_location_iter: c.learnLocationIter,
    coefficient_steps: c.coefficientSteps,
    location_steps: c.locationSteps,
    location_lr_ratio: c.locationLrRatio,
    init_weights: c.initWeights,
  };
}
