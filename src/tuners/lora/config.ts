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

export type LoraInit = true | false | "gaussian" | "pissa" | "olora" | `pissa_niter_${number}`;

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
}

function parseInit(v: unknown, where: string): LoraInit {
  if (v === undefined || v === null) return true;
  if (v === true || v === false || v === "gaussian" || v === "pissa" || v === "olora") return v;
  if (typeof v === "string" && /^pissa_niter_\d+$/.test(v)) return v as LoraInit;
  throw new PeftConfigError(
    `${where}: field "init_lora_weights" must be true, false, "gaussian", "pissa", "pissa_niter_N" or "olora", got ${JSON.stringify(v)}`,
  );
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
  };
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
    corda_config: null,
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
