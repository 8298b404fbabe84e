import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";

export type AdapterType = "houlsby" | "pfeiffer" | "parallel";
export const NON_LINEARITIES = ["relu", "gelu", "gelu_new", "silu", "swish", "tanh", "identity"] as const;
export type NonLinearity = (typeof NON_LINEARITIES)[number];

/** peftkit's own BOTTLENECK config (HF PEFT has no bottleneck adapters). */
export interface BottleneckConfig extends CommonConfig {
  adapterType: AdapterType;
  /** Hidden width r of each adapter; null: hidden_size / reduction_factor. */
  bottleneckSize: number | null;
  reductionFactor: number;
  nonLinearity: NonLinearity;
  /** s in h + s·up(f(down(x))). */
  scaling: number;
  /** Dropout on the adapter's input while training. */
  dropout: number;
  layersToTransform: number | number[] | null;
  /** true: the up-projection starts at zero (the model is unchanged); false: random. */
  initWeights: boolean;
  modulesToSave: string[] | null;
}

export function parseBottleneckConfig(raw: RawPeftConfig, where: string): BottleneckConfig {
  const r = new FieldReader(raw, where);
  const common = readCommon(r, "BOTTLENECK");
  const cfg: BottleneckConfig = {
    ...common,
    adapterType: r.str("adapter_type", "houlsby", ["houlsby", "pfeiffer", "parallel"] as const),
    bottleneckSize: r.int("bottleneck_size", 0, 1) || null,
    reductionFactor: r.num("reduction_factor", 16),
    nonLinearity: r.str("non_linearity", "relu", NON_LINEARITIES),
    scaling: r.num("scaling", 1),
    dropout: r.num("dropout", 0),
    layersToTransform: r.intOrList("layers_to_transform"),
    initWeights: r.bool("init_weights", true),
    modulesToSave: r.strList("modules_to_save"),
  };
  if (!(cfg.reductionFactor > 0)) throw new PeftConfigError(`${where}: field "reduction_factor" must be > 0, got ${cfg.reductionFactor}`);
  if (cfg.dropout < 0 || cfg.dropout >= 1) throw new PeftConfigError(`${where}: field "dropout" must be in [0, 1), got ${cfg.dropout}`);
  return cfg;
}

export function bottleneckConfigJson(c: BottleneckConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    adapter_type: c.adapterType,
    bottleneck_size: c.bottleneckSize,
    reduction_factor: c.reductionFactor,
    non_linearity: c.nonLinearity,
    scaling: c.scaling,
    dropout: c.dropout,
    layers_to_transform: c.layersToTransform,
    init_weights: c.initWeights,
    modules_to_save: c.modulesToSave,
  };
}
