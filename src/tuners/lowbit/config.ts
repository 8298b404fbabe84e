import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";
import { CODEBOOK_KINDS, type CodebookKind, LOWBIT_BITS } from "./codebook.js";

/**
 * Low-bit adapters (Jie, Wang, Deng, ICCV 2023, "Revisiting the Parameter Efficiency of Adapters
 * from the Perspective of Precision Redundancy"; JieShibo/PETL-ViT binary_adapter): a LoRA-form
 * adapter y = W·x + s·B_q·A_q·x whose A and B are trained with quantisation-aware training and
 * stored as b-bit codes plus a mean and a std per matrix. peft_type "LOWBIT" is peftkit's.
 */
export interface LowbitConfig extends CommonConfig, TargetSpec {
  /** Adapter dim (rank): 8 (the authors use 32; 8 matches peftkit's LoRA default). */
  r: number;
  /** s, the output multiplier (main.py --scale, default 1; the configs pick from 0.01, 0.1, 1, 10). */
  scale: number;
  /** Bits per weight: 1, 2, 4 or 8 (main.py --bit, default 1). */
  bits: number;
  /** Where the levels come from: "lloyd-max" (default; the paper) or "authors" (the code's median codebook). */
  codebook: CodebookKind;
  /** The 2^bits ascending levels for N(0, 1); null: computed from `codebook` (create() writes them). */
  codebookValues: number[] | null;
  modulesToSave: string[] | null;
  /** Save the trained latent f32 weights instead of the codes (a folder to continue training from). */
  saveLatent: boolean;
  /**
   * The adapter's tensors are the packed codes, μ and σ (a loaded folder): it runs and merges with
   * the dequantised weights and cannot train. Folders written packed say true.
   */
  packed: boolean;
}

export function parseLowbitConfig(raw: RawPeftConfig, where: string): LowbitConfig {
  const f = new FieldReader(raw, where);
  const cfg: LowbitConfig = {
    ...readCommon(f, "LOWBIT"),
    r: f.int("r", 8, 1),
    scale: f.num("scale", 1),
    bits: f.int("bits", 1, 1),
    codebook: f.str("codebook", "lloyd-max", CODEBOOK_KINDS),
    codebookValues: null,
    targetModules: f.targets("target_modules"),
    excludeModules: f.targets("exclude_modules"),
    modulesToSave: f.strList("modules_to_save"),
    layersToTransform: f.intOrList("layers_to_transform"),
    layersPattern: f.targets("layers_pattern"),
    saveLatent: f.bool("save_latent", false),
    packed: f.bool("packed", false),
  };
  if (!LOWBIT_BITS.includes(cfg.bits)) throw new PeftConfigError(`${where}: field "bits" must be 1, 2, 4 or 8, got ${cfg.bits}`);
  const values = f.any("codebook_values");
  if (values !== undefined && values !== null) {
    if (!Array.isArray(values) || values.some((v) => typeof v !== "number" || !Number.isFinite(v)))
      throw new PeftConfigError(`${where}: field "codebook_values" must be a list of numbers`);
    const v = values as number[];
    if (v.length !== 2 ** cfg.bits)
      throw new PeftConfigError(
        `${where}: field "codebook_values" has ${v.length} levels, ${cfg.bits} bits need 2^${cfg.bits} = ${2 ** cfg.bits}`,
      );
    if (v.some((x, i) => i > 0 && !(x > v[i - 1])))
      throw new PeftConfigError(`${where}: field "codebook_values" must be strictly ascending`);
    cfg.codebookValues = [...v];
  }
  if (cfg.packed && cfg.saveLatent) throw new PeftConfigError(`${where}: "packed" and "save_latent" exclude each other`);
  return cfg;
}

export function lowbitConfigJson(c: LowbitConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    r: c.r,
    scale: c.scale,
    bits: c.bits,
    codebook: c.codebook,
    codebook_values: c.codebookValues,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    save_latent: c.saveLatent,
    // What a folder of this config holds: codes unless the latent weights are saved.
    packed: !c.saveLatent,
  };
}
