import {
  type CommonConfig,
  commonJson,
  FieldReader,
  normalizeKeys,
  PeftConfigError,
  type RawPeftConfig,
  readCommon,
  readTargetFields,
  type TargetFields,
  targetFieldsJson,
} from "../config.js";

export type LoraInit = true | false | "gaussian" | "pissa" | "olora" | "corda" | `pissa_niter_${number}`;

/** PEFT's CordaConfig (only corda_method changes what peftkit computes; the rest is kept for the file). */
export interface CordaConfig {
  cacheFile: string | null;
  covarianceFile: string | null;
  /** "ipm": the r largest components; "kpm": the r smallest. */
  cordaMethod: "ipm" | "kpm";
  verbose: boolean;
  useFloat16ForCovariance: boolean;
  pruneTemporaryFields: boolean;
}

export interface LoraConfig extends CommonConfig, TargetFields {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  fanInFanOut: boolean;
  bias: "none" | "all" | "lora_only";
  useRslora: boolean;
  useDora: boolean;
  initLoraWeights: LoraInit;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  loraBias: boolean;
  /** Set when init_lora_weights is "corda" (PEFT then defaults it) or when given. */
  cordaConfig: CordaConfig | null;
}

function parseInit(v: unknown, where: string): LoraInit {
  if (v === undefined || v === null) return true;
  if (v === true || v === false || v === "gaussian" || v === "pissa" || v === "olora" || v === "corda") return v;
  if (typeof v === "string" && /^pissa_niter_\d+$/.test(v)) return v as LoraInit;
  throw new PeftConfigError(
    `${where}: field "init_lora_weights" must be true, false, "gaussian", "pissa", "pissa_niter_N", "olora" or "corda", got ${JSON.stringify(v)}`,
  );
}

/** corda_config as PEFT writes it (snake_case fields of its CordaConfig dataclass); null stays null. */
function parseCorda(v: unknown, where: string): CordaConfig | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) throw new PeftConfigError(`${where}: field "corda_config" must be an object or null`);
  const r = new FieldReader(normalizeKeys(v as Record<string, unknown>, `${where}: corda_config`), `${where}: corda_config`);
  const c: CordaConfig = {
    cacheFile: r.optStr("cache_file"),
    covarianceFile: r.optStr("covariance_file"),
    cordaMethod: r.str("corda_method", "ipm", ["ipm", "kpm"] as const),
    verbose: r.bool("verbose", false),
    useFloat16ForCovariance: r.bool("use_float16_for_covariance", false),
    pruneTemporaryFields: r.bool("prune_temporary_fields", true),
  };
  const unknown = Object.keys(r.raw).filter((k) => !r.used.has(k));
  if (unknown.length) throw new PeftConfigError(`${where}: corda_config has unknown field(s) ${unknown.map((k) => `"${k}"`).join(", ")}`);
  return c;
}

export const DEFAULT_CORDA: CordaConfig = {
  cacheFile: null,
  covarianceFile: null,
  cordaMethod: "ipm",
  verbose: false,
  useFloat16ForCovariance: false,
  pruneTemporaryFields: true,
};

export function cordaConfigJson(c: CordaConfig | null): Record<string, unknown> | null {
  if (!c) return null;
  return {
    cache_file: c.cacheFile,
    covariance_file: c.covarianceFile,
    corda_method: c.cordaMethod,
    verbose: c.verbose,
    use_float16_for_covariance: c.useFloat16ForCovariance,
    prune_temporary_fields: c.pruneTemporaryFields,
  };
}

export function parseLoraConfig(raw: RawPeftConfig, where: string): LoraConfig {
  const r = new FieldReader(raw, where);
  const common = readCommon(r, "LORA");
  const cfg: LoraConfig = {
    ...common,
    r: r.int("r", 8, 1),
    loraAlpha: r.num("lora_alpha", 8),
    loraDropout: r.num("lora_dropout", 0),
    ...readTargetFields(r),
    fanInFanOut: r.bool("fan_in_fan_out", false),
    bias: r.str("bias", "none", ["none", "all", "lora_only"] as const),
    useRslora: r.bool("use_rslora", false),
    useDora: r.bool("use_dora", false),
    initLoraWeights: parseInit(r.any("init_lora_weights"), where),
    rankPattern: r.numberMap("rank_pattern"),
    alphaPattern: r.numberMap("alpha_pattern"),
    loraBias: r.bool("lora_bias", false),
    cordaConfig: parseCorda(r.any("corda_config"), where),
  };
  // PEFT's LoraConfig.__post_init__: corda without a corda_config gets the default one.
  if (cfg.initLoraWeights === "corda" && !cfg.cordaConfig) cfg.cordaConfig = { ...DEFAULT_CORDA };
  if (cfg.loraDropout < 0 || cfg.loraDropout >= 1)
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${cfg.loraDropout}`);
  if (cfg.loraBias) throw new PeftConfigError(`${where}: "lora_bias": true is not supported yet`);
  return cfg;
}

/**
 * Every field PEFT's LoraConfig writes (test/golden/peft-config-fields.json); the options we do not
 * support are written as PEFT's defaults. runtime_config is not written: LoraConfig.to_dict drops it.
 */
export function loraConfigJson(c: LoraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    r: c.r,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    ...targetFieldsJson(c),
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    use_rslora: c.useRslora,
    use_dora: c.useDora,
    init_lora_weights: c.initLoraWeights,
    rank_pattern: c.rankPattern,
    alpha_pattern: c.alphaPattern,
    lora_bias: c.loraBias,
    megatron_config: null,
    megatron_core: "megatron.core",
    trainable_token_indices: null,
    loftq_config: {},
    eva_config: null,
    corda_config: cordaConfigJson(c.cordaConfig),
    lora_ga_config: null,
    velora_config: null,
    alora_invocation_tokens: null,
    use_qalora: false,
    qalora_group_size: 16,
    monteclora_config: null,
    layer_replication: null,
    target_parameters: null,
    use_bdlora: null,
    arrow_config: null,
    ensure_weight_tying: false,
  };
}
