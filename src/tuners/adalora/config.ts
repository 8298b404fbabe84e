/**
 * PEFT 0.20's AdaLoraConfig (tuners/adalora/config.py), which extends LoraConfig: every LoRA field
 * is read and written back, AdaLoRA's own fields are used. PEFT ignores `r` (init_r is the rank),
 * `use_rslora` and `alpha_pattern` for AdaLoRA; so do we.
 */
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

export interface AdaLoraConfig extends CommonConfig, TargetFields {
  /** LoraConfig.r: written back, not used (PEFT warns and ignores it). */
  r: number;
  loraAlpha: number;
  loraDropout: number;
  fanInFanOut: boolean;
  useRslora: boolean;
  /** true (or any PEFT init name, which AdaLoRA treats as true): E = 0, A, B ~ N(0, 0.02); false: all N(0, 1). */
  initLoraWeights: boolean | string;
  alphaPattern: Record<string, number>;
  /** Target average rank per layer at the end of the budget schedule. */
  targetR: number;
  /** Rank every layer starts with (the compiled shape of A, E, B). */
  initR: number;
  tinit: number;
  tfinal: number;
  deltaT: number;
  beta1: number;
  beta2: number;
  orthRegWeight: number;
  /**
   * PEFT requires it; null here means "the run's planned steps": the controller fills it when
   * training starts (and the saved config then carries the number).
   */
  totalStep: number | null;
  /** Kept triplets per targeted module (PEFT module name, without ".lora_E"), each of length init_r; null: none pruned yet. */
  rankPattern: Record<string, boolean[]> | null;
}

/** LoraConfig fields AdaLoRA does not implement here: refused unless left at PEFT's default. */
const UNSUPPORTED: readonly [string, (v: unknown) => boolean][] = [
  ["megatron_config", (v) => v == null],
  ["trainable_token_indices", (v) => v == null],
  ["eva_config", (v) => v == null],
  ["corda_config", (v) => v == null],
  ["lora_ga_config", (v) => v == null],
  ["velora_config", (v) => v == null],
  ["alora_invocation_tokens", (v) => v == null],
  ["use_qalora", (v) => v == null || v === false],
  ["monteclora_config", (v) => v == null],
  ["layer_replication", (v) => v == null],
  ["target_parameters", (v) => v == null],
  ["use_bdlora", (v) => v == null || v === false],
  ["arrow_config", (v) => v == null],
  ["lora_bias", (v) => v == null || v === false],
  ["bias", (v) => v == null || v === "none"],
];

/** The module a rank_pattern key names: PEFT writes "<module>.lora_E" (adapter name stripped) and accepts "<module>.lora_E.<adapter>". */
export function rankPatternModule(key: string): string | null {
  const m = /^(.+)\.lora_E(?:\.[^.]+)?$/.exec(key);
  return m ? m[1] : null;
}

function readRankPattern(f: FieldReader, where: string): Record<string, boolean[]> | null {
  const v = f.any("rank_pattern");
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v))
    throw new PeftConfigError(`${where}: field "rank_pattern" must be an object of "<module>.lora_E" → list of booleans`);
  const out: Record<string, boolean[]> = {};
  for (const [k, bits] of Object.entries(v as Record<string, unknown>)) {
    const module = rankPatternModule(k);
    if (!module) throw new PeftConfigError(`${where}: rank_pattern key "${k}" must name a module's lora_E ("<module>.lora_E")`);
    if (!Array.isArray(bits) || !bits.every((b) => typeof b === "boolean"))
      throw new PeftConfigError(`${where}: rank_pattern["${k}"] must be a list of booleans (PEFT's mask), got ${JSON.stringify(bits)}`);
    out[module] = [...bits];
  }
  return out;
}

export function parseAdaLoraConfig(raw: RawPeftConfig, where: string): AdaLoraConfig {
  const f = new FieldReader(raw, where);
  const init = f.any("init_lora_weights");
  if (init !== undefined && init !== null && typeof init !== "boolean" && typeof init !== "string")
    throw new PeftConfigError(`${where}: field "init_lora_weights" must be true, false or a string, got ${JSON.stringify(init)}`);
  const c: AdaLoraConfig = {
    ...readCommon(f, "ADALORA"),
    ...readTargetFields(f),
    r: f.int("r", 8, 0),
    loraAlpha: f.num("lora_alpha", 8),
    loraDropout: f.num("lora_dropout", 0),
    fanInFanOut: f.bool("fan_in_fan_out", false),
    useRslora: f.bool("use_rslora", false),
    initLoraWeights: (init ?? true) as boolean | string,
    alphaPattern: f.numberMap("alpha_pattern"),
    targetR: f.int("target_r", 8, 0),
    initR: f.int("init_r", 12, 1),
    tinit: f.int("tinit", 0, 0),
    tfinal: f.int("tfinal", 0, 0),
    // PEFT spells it deltaT; normalizeKeys made that delta_t (delta_t is read too).
    deltaT: f.int("delta_t", 1, 1),
    beta1: f.num("beta1", 0.85),
    beta2: f.num("beta2", 0.85),
    orthRegWeight: f.num("orth_reg_weight", 0.5),
    totalStep: null,
    rankPattern: readRankPattern(f, where),
  };
  const ts = f.any("total_step");
  if (ts !== undefined && ts !== null) {
    if (typeof ts !== "number" || !Number.isInteger(ts) || ts <= 0)
      throw new PeftConfigError(
        `${where}: field "total_step" must be an integer > 0 (AdaLoRA's budget schedule needs it), got ${JSON.stringify(ts)}`,
      );
    c.totalStep = ts;
  }
  if (f.bool("use_dora", false)) throw new PeftConfigError(`${where}: field "use_dora": ADALORA does not support DoRA (as PEFT)`);
  const loftq = f.any("loftq_config");
  if (loftq !== undefined && loftq !== null && !(typeof loftq === "object" && Object.keys(loftq).length === 0))
    throw new PeftConfigError(`${where}: field "loftq_config": ADALORA does not support LoftQ (as PEFT)`);
  for (const [field, ok] of UNSUPPORTED)
    if (!ok(f.any(field)))
      throw new PeftConfigError(`${where}: field "${field}" = ${JSON.stringify(raw[field])} is not supported for ADALORA`);
  if (!(c.loraAlpha > 0))
    throw new PeftConfigError(
      `${where}: field "lora_alpha" must be > 0 (with lora_alpha <= 0 PEFT scales by the rank, which changes when a pruned adapter is loaded)`,
    );
  if (c.loraDropout < 0 || c.loraDropout >= 1)
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${c.loraDropout}`);
  if (typeof c.targetModules === "string" && c.layersToTransform !== null)
    throw new PeftConfigError(`${where}: field "layers_to_transform" cannot be used when "target_modules" is a regex string (as PEFT)`);
  if (c.layersPattern !== null && c.layersToTransform === null)
    throw new PeftConfigError(`${where}: field "layers_pattern" needs "layers_to_transform" (as PEFT)`);
  if (c.orthRegWeight < 0) throw new PeftConfigError(`${where}: field "orth_reg_weight" must be >= 0, got ${c.orthRegWeight}`);
  for (const b of ["beta1", "beta2"] as const)
    if (!(c[b] > 0 && c[b] < 1))
      throw new PeftConfigError(`${where}: field "${b}" must be in (0, 1) (PEFT's RankAllocator asserts it), got ${c[b]}`);
  if (c.targetR > c.initR)
    throw new PeftConfigError(`${where}: field "target_r" (${c.targetR}) must be <= "init_r" (${c.initR}): the budget only shrinks`);
  if (c.totalStep !== null) checkSchedule(c, c.totalStep, where);
  return c;
}

/** PEFT's check: the budget must have a reduction phase, tinit < total_step − tfinal. */
export function checkSchedule(c: AdaLoraConfig, totalStep: number, where: string): void {
  if (c.tinit >= totalStep - c.tfinal)
    throw new PeftConfigError(
      `${where}: "tinit" (${c.tinit}) + "tfinal" (${c.tfinal}) must be < "total_step" (${totalStep}): the supplied schedule values don't allow for a budgeting phase (decrease tfinal/tinit or increase total_step)`,
    );
}

/** Every field PEFT's AdaLoraConfig writes (LoraConfig's and its own), unsupported ones at PEFT's defaults. */
export function adaLoraConfigJson(c: AdaLoraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    fan_in_fan_out: c.fanInFanOut,
    bias: "none",
    use_rslora: c.useRslora,
    init_lora_weights: c.initLoraWeights,
    rank_pattern: c.rankPattern ? Object.fromEntries(Object.entries(c.rankPattern).map(([m, bits]) => [`${m}.lora_E`, bits])) : null,
    alpha_pattern: c.alphaPattern,
    megatron_config: null,
    megatron_core: "megatron.core",
    trainable_token_indices: null,
    loftq_config: {},
    eva_config: null,
    corda_config: null,
    lora_ga_config: null,
    use_dora: false,
    velora_config: null,
    alora_invocation_tokens: null,
    use_qalora: false,
    qalora_group_size: 16,
    monteclora_config: null,
    layer_replication: null,
    lora_bias: false,
    target_parameters: null,
    use_bdlora: null,
    arrow_config: null,
    ensure_weight_tying: false,
    target_r: c.targetR,
    init_r: c.initR,
    tinit: c.tinit,
    tfinal: c.tfinal,
    deltaT: c.deltaT,
    beta1: c.beta1,
    beta2: c.beta2,
    orth_reg_weight: c.orthRegWeight,
    total_step: c.totalStep,
  };
}
