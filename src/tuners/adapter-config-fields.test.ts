/**
 * adapter_config.json has exactly the keys HF PEFT's config dataclass writes at the PEFT release we
 * pin (test/golden/peft-config-fields.json, read from PEFT's sources by
 * scripts/goldens/peft_config_fields.py), with PEFT's defaults for what a config leaves unset;
 * peftkit's own types write PEFT's base fields plus their own. Reading stays lenient.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { PEFT_COMPAT_VERSION } from "./config.js";
import { loadTestModel } from "./conformance.js";
import { ADAPTER_CONFIG } from "./format.js";
import { randomGradients, withLoraSb } from "./lora_sb/testing.js";
import { PeftModel } from "./peft-model.js";
import { supportedPeftTypes } from "./registry.js";
import { sptStats } from "./spt/testing.js";

interface PeftFields {
  peft_version: string;
  peft_tag: string;
  peft_commit: string;
  base_fields: string[];
  types: Record<string, { class: string; fields: string[]; stripped_on_save: string[]; defaults: Record<string, string | null> }>;
}

const FIELDS = JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/peft-config-fields.json"), "utf8")) as PeftFields;

/** peft_types HF PEFT does not have: PEFT's base fields plus these (docs/peft.md lists them too). */
const PEFTKIT_FIELDS: Record<string, string[]> = {
  SSF: ["target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "modules_to_save", "init_ssf_weights"],
  BITFIT: ["target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "modules_to_save", "init_bitfit_weights"],
  HUT: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "hut_alpha",
    "init_hut_weights",
  ],
  SOKA: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "factor_out",
    "factor_in",
    "energy_threshold",
    "init_soka_weights",
  ],
  LORA_SB: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "lora_alpha",
    "eta",
    "svd_niter",
  ],
  BOTTLENECK: [
    "adapter_type",
    "bottleneck_size",
    "reduction_factor",
    "non_linearity",
    "scaling",
    "dropout",
    "layers_to_transform",
    "init_weights",
    "modules_to_save",
  ],
  SVFIT: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "energy_threshold",
    "init_weights",
  ],
  KASA: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "lora_alpha",
    "lora_dropout",
    "beta",
    "gamma",
    "init_weights",
  ],
  LOLDU: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "lora_alpha",
    "init_weights",
  ],
  INCRELORA: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "init_r",
    "target_r",
    "target_total_rank",
    "lora_alpha",
    "lora_dropout",
    "init_warmup",
    "incre_interval",
    "top_h",
    "incre_rank_num",
    "advance_learn",
    "beta1",
    "beta2",
    "orth_reg_weight",
    "max_rank",
    "rank_pattern",
    "triplet_pattern",
    "init_weights",
  ],
  TRIADAPTLORA: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "init_rank",
    "reference_rank",
    "target_total_rank",
    "lora_alpha",
    "lora_dropout",
    "init_warmup",
    "incre_interval",
    "incre_rank_num",
    "rank_growth_model",
    "total_step",
    "orth_reg_weight",
    "max_rank",
    "rank_pattern",
    "init_weights",
  ],
  PEGO: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "lora_nums",
    "lora_alpha",
    "lora_dropout",
    "orth_lambda",
    "init_weights",
  ],
  // LoRA's own fields (the folder is a LoRA adapter) plus the perturbation's weights.
  LORA_GGPO: [...FIELDS.types.LORA.fields.filter((f) => !FIELDS.base_fields.includes(f)), "ggpo_sigma", "ggpo_beta"],
  // The estimation phase: LoRA's fields plus the masks' and the pruning's (the result is plain LORA).
  LIGHT_PEFT: [
    ...FIELDS.types.LORA.fields.filter((f) => !FIELDS.base_fields.includes(f)),
    "mask_l1_coef",
    "attn_mask_lr_mult",
    "ffn_mask_lr_mult",
    "attn_pruning_ratio",
    "ffn_pruning_ratio",
    "module_pruning_ratio",
    "rank_pruning_ratio",
  ],
  // Exactly LoRA's: IST writes its folder as plain LoRA (peft_type "LORA"); its fields steer training only.
  IST: FIELDS.types.LORA.fields.filter((f) => !FIELDS.base_fields.includes(f)),
  // LoRA's fields plus the sparse part's (VITA-Group/DSEE has no config file).
  DSEE: [
    ...FIELDS.types.LORA.fields.filter((f) => !FIELDS.base_fields.includes(f)),
    "num_sparse",
    "sparse_method",
    "sparse_seed",
    "sparse_scaling",
    "grebsmo_rank_step",
    "grebsmo_outer_iters",
    "grebsmo_inner_iters",
    "grebsmo_threshold",
    "pruning_ratio",
    "ad_pruning_ratio",
    "base_delta",
  ],
  LOCA: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "n_frequency",
    "scale",
    "loca_dropout",
    "learn_location_iter",
    "coefficient_steps",
    "location_steps",
    "location_lr_ratio",
    "init_weights",
  ],
  SNELL: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "num_heads",
    "norm_p",
    "coefficient",
    "sparsify_mode",
    "snell_dropout",
    "sparsity_ratio",
  ],
  SNELLA: [
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "r",
    "num_heads",
    "norm_p",
    "coefficient",
    "sparsify_mode",
    "snell_dropout",
    "init_ratio",
    "target_ratio",
    "init_warmup",
    "final_warmup",
    "mask_interval",
    "beta1",
    "beta2",
    "total_step",
  ],
  // The SpIEL authors' fork (AlanAnsell/peft, SftConfig), plus init_weights.
  SFT: [
    "density",
    "num_tunable_weights",
    "num_deltas",
    "selection_algorithm",
    "reselection_steps",
    "selection_accumulation_steps",
    "initial_reselection_rate",
    "reselection_rate_policy",
    "candidate_reselection_steps",
    "candidate_reselection_proportion",
    "dtype",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "init_weights",
  ],
  SPT: [
    "num_tunable_weights",
    "density",
    "alpha",
    "r",
    "lora_dropout",
    "structured_modules",
    "num_deltas",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "init_weights",
  ],
  // peftkit's own (sjtuplayer/SaRA has no config file).
  SARA: [
    "threshold",
    "progressive_iter",
    "lambda_rank",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "init_weights",
  ],
  // peftkit's own; budget, max_steps, eps, exp as the toolkit's Id3 kwargs.
  ID3: [
    "budget",
    "density",
    "max_steps",
    "eps",
    "exp",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "init_weights",
  ],
  // S²FT (Infini-AI-Lab/S2FT finetune.py's arguments; no config class of its own), plus init_weights.
  S2FT: ["v_ratio", "o_ratio", "u_ratio", "d_ratio", "seed", "init_weights", "modules_to_save"],
  // LoRA's own fields plus the HSMs' (the authors' DimDownLayer/DimDownMask arguments, peftkit's names).
  PAT: [
    ...FIELDS.types.LORA.fields.filter((f) => !FIELDS.base_fields.includes(f)),
    "keep_dim",
    "schedule_steps",
    "hsm_rank",
    "identity_loss",
    "identity_loss_last_layer_only",
    "count_loss_weight",
    "init_hsm_weights",
  ],
  // R-AMT (wuw2019/RMT cfg.MASK: SCALE, THRESHOLD, LOSS_WEIGHT, GDR_LAMBDA, GDR_T), peftkit's names.
  RAMT: [
    "mask_scale",
    "threshold",
    "mask_loss_weight",
    "grad_drop_lambda",
    "distill_temperature",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "save_scores",
    "init_weights",
  ],
  // Low-bit adapters (JieShibo/PETL-ViT binary_adapter main.py: --dim, --scale, --bit), peftkit's names.
  LOWBIT: [
    "r",
    "scale",
    "bits",
    "codebook",
    "codebook_values",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "save_latent",
    "packed",
  ],
};

/** Configs that exercise every option peftkit writes, per type (the first one uses defaults only). */
const CONFIGS: Record<string, Record<string, unknown>[]> = {
  LORA: [
    { peftType: "LORA" },
    { peftType: "LORA", useDora: true, r: 4, loraAlpha: 16, rankPattern: { q_proj: 2 }, initLoraWeights: false, useRslora: true },
    { peftType: "LORA", targetModules: ["embed_tokens", "q_proj"], bias: "lora_only", loraDropout: 0.1 },
  ],
  IA3: [{ peftType: "IA3" }, { peftType: "IA3", targetModules: ["q_proj", "down_proj"], feedforwardModules: ["down_proj"] }],
  LN_TUNING: [{ peftType: "LN_TUNING" }, { peftType: "LN_TUNING", initLnTuningWeights: false }],
  PROMPT_TUNING: [{ peftType: "PROMPT_TUNING", numVirtualTokens: 3 }],
  PREFIX_TUNING: [{ peftType: "PREFIX_TUNING", numVirtualTokens: 3 }],
  SSF: [{ peftType: "SSF" }],
  BITFIT: [{ peftType: "BITFIT" }],
  BOTTLENECK: [{ peftType: "BOTTLENECK" }],
  HUT: [{ peftType: "HUT" }],
  POLY: [
    { peftType: "POLY" },
    { peftType: "POLY", r: 4, nTasks: 3, nSkills: 2, nSplits: 2, initWeights: false, targetModules: ["q_proj"] },
  ],
  SOKA: [{ peftType: "SOKA", r: 2 }],
  LORA_SB: [{ peftType: "LORA_SB", r: 4 }],
  HRA: [{ peftType: "HRA" }, { peftType: "HRA", r: 4, apply_GS: true, targetModules: ["q_proj"], initWeights: false }],
  VERA: [{ peftType: "VERA" }, { peftType: "VERA", r: 16, saveProjection: false, projectionPrngKey: 3, veraDropout: 0.1, dInitial: 0.5 }],
  OFT: [
    { peftType: "OFT" },
    { peftType: "OFT", r: 4, oftBlockSize: 0, coft: true, eps: 1e-3, blockShare: true, useCayleyNeumann: false, numCayleyNeumannTerms: 7 },
  ],
  BOFT: [{ peftType: "BOFT" }, { peftType: "BOFT", boftBlockSize: 0, boftBlockNum: 4, boftNButterflyFactor: 2, boftDropout: 0.1 }],
  LOHA: [
    { peftType: "LOHA" },
    { peftType: "LOHA", r: 4, alpha: 16, rankDropout: 0.1, moduleDropout: 0.2, initWeights: false, rankPattern: { q_proj: 2 } },
  ],
  LOKR: [
    { peftType: "LOKR" },
    {
      peftType: "LOKR",
      r: 2,
      decomposeBoth: true,
      decomposeFactor: 4,
      rankDropoutScale: true,
      initWeights: "lycoris",
      alphaPattern: { v_proj: 4 },
    },
  ],
  SVFIT: [{ peftType: "SVFIT" }, { peftType: "SVFIT", energyThreshold: 0.9 }],
  KASA: [{ peftType: "KASA" }],
  LOLDU: [{ peftType: "LOLDU" }],
  INCRELORA: [{ peftType: "INCRELORA" }, { peftType: "INCRELORA", initR: 2, targetR: 4, topH: 3, advanceLearn: false, maxRank: 6 }],
  // PEFT requires total_step (written as given; NOT_DEFAULT below).
  ADALORA: [
    { peftType: "ADALORA", totalStep: 100 },
    { peftType: "ADALORA", totalStep: 50, initR: 6, targetR: 3, tinit: 5, tfinal: 10, deltaT: 5, orthRegWeight: 0.1, loraDropout: 0.1 },
  ],
  FOURIERFT: [
    { peftType: "FOURIERFT" },
    { peftType: "FOURIERFT", nFrequency: 100, scaling: 20, randomLocSeed: 3, nFrequencyPattern: { q_proj: 50 }, initWeights: true },
  ],
  TRIADAPTLORA: [
    { peftType: "TRIADAPTLORA" },
    { peftType: "TRIADAPTLORA", referenceRank: 4, increRankNum: 1, rankGrowthModel: "non-linear", totalStep: 10, maxRank: 5 },
  ],
  PEGO: [{ peftType: "PEGO" }],
  LORA_GGPO: [{ peftType: "LORA_GGPO" }],
  LIGHT_PEFT: [
    { peftType: "LIGHT_PEFT" },
    { peftType: "LIGHT_PEFT", maskL1Coef: 0, attnMaskLrMult: 1, ffnMaskLrMult: 1, rankPruningRatio: 0 },
  ],
  DSEE: [
    { peftType: "DSEE", numSparse: 8 },
    { peftType: "DSEE", numSparse: 4, sparseMethod: "rp", sparseSeed: 3, sparseScaling: false, targetModules: ["q_proj"] },
    { peftType: "DSEE", pruningRatio: 0.2, adPruningRatio: 0, baseDelta: "dsee_pruned_base.safetensors" },
  ],
  LOCA: [{ peftType: "LOCA" }, { peftType: "LOCA", nFrequency: 16, scale: 2, learnLocationIter: 0, locationLrRatio: 1, locaDropout: 0.1 }],
  SNELL: [{ peftType: "SNELL" }, { peftType: "SNELL", sparsityRatio: 0, sparsifyMode: "mask", numHeads: 4 }],
  SNELLA: [{ peftType: "SNELLA" }, { peftType: "SNELLA", totalStep: 100, targetRatio: 0.5 }],
  SFT: [
    { peftType: "SFT", targetModules: ["q_proj"] },
    { peftType: "SFT", targetModules: ["q_proj", "v_proj"], density: 0.05, reselectionSteps: 0, reselectionRatePolicy: "cosine" },
    // What --method lt_sft saves: fixed index sets, counts per module.
    { peftType: "SFT", targetModules: ["q_proj"], reselectionSteps: 0, numDeltas: { "model.layers.0.self_attn.q_proj": 3 } },
  ],
  SPT: [
    { peftType: "SPT", targetModules: ["q_proj", "v_proj"] },
    { peftType: "SPT", targetModules: ["q_proj", "v_proj", "down_proj"], numTunableWeights: 500, alpha: 2, r: 2, loraDropout: 0.1 },
  ],
  SARA: [
    { peftType: "SARA", targetModules: ["q_proj"] },
    { peftType: "SARA", targetModules: ["q_proj", "v_proj"], threshold: 0.05, progressiveIter: 3, lambdaRank: 0.1 },
  ],
  ID3: [
    { peftType: "ID3", targetModules: ["q_proj"] },
    { peftType: "ID3", targetModules: ["q_proj", "v_proj"], budget: 50, maxSteps: 10, eps: 0.01, exp: 1 },
  ],
  PAT: [{ peftType: "PAT" }, { peftType: "PAT", keepDim: 24, scheduleSteps: 100, hsmRank: 8, identityLoss: false }],
  S2FT: [
    { peftType: "S2FT", dRatio: 0.02 },
    { peftType: "S2FT", vRatio: 0.5, oRatio: 0.25, uRatio: 0.1, seed: 7 },
  ],
  IST: [{ peftType: "IST" }, { peftType: "IST", updateFraction: 0.5, importanceInterval: 3, trials: 2, scoreLr: 1, seed: 5 }],
  RAMT: [
    { peftType: "RAMT" },
    {
      peftType: "RAMT",
      targetModules: ["q_proj"],
      threshold: 0.001,
      maskScale: 0.02,
      maskLossWeight: 0,
      gradDropLambda: 0.3,
      distillTemperature: 2,
      saveScores: true,
    },
  ],
  LOWBIT: [
    { peftType: "LOWBIT" },
    { peftType: "LOWBIT", targetModules: ["q_proj", "v_proj"], r: 4, scale: 10, bits: 2, codebook: "authors", saveLatent: true },
  ],
};

/**
 * Fields whose written value differs from the dataclass default for a reason PEFT shares: set by
 * the user or by save_pretrained, or resolved from the model when the adapter is created.
 */
const NOT_DEFAULT = new Set([
  "peft_type",
  "peft_version",
  "inference_mode",
  "base_model_name_or_path",
  "target_modules",
  "num_virtual_tokens",
  "token_dim",
  "num_transformer_submodules",
  "num_attention_heads",
  "num_layers",
  "encoder_hidden_size",
  "total_step",
]);

/** A dataclass default as JSON: literals, dict()/list(), and str enums (PromptTuningInit.RANDOM → "RANDOM"); undefined otherwise. */
function pythonDefault(src: string | null): unknown {
  if (src === null) return undefined;
  const lit: Record<string, unknown> = { None: null, True: true, False: false, "dict()": {}, "list()": [], "{}": {}, "[]": [] };
  if (src in lit) return lit[src];
  if (/^-?\d+(\.\d+)?(e-?\d+)?$/.test(src)) return Number(src);
  if (/^'[^']*'$|^"[^"]*"$/.test(src)) return src.slice(1, -1);
  if (/^[A-Z]\w*\.[A-Z_]+$/.test(src)) return src.split(".")[1];
  return undefined;
}

async function writtenConfig(config: Record<string, unknown>): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-config-fields-"));
  // llama has no biases for BitFit to train; qwen2's q/k/v have.
  const model = await loadTestModel(config.peftType === "BITFIT" ? "qwen2" : "llama_basic");
  try {
    // LoRA-SB is created from calibration statistics (prescribed gradient sums here).
    const peft =
      config.peftType === "LORA_SB"
        ? withLoraSb(model, config, randomGradients(1))
        : PeftModel.create(model, config, { seed: 1, calibration: config.peftType === "SPT" ? sptStats(model, config) : undefined });
    peft.savePretrained(dir);
    return JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8")) as Record<string, unknown>;
  } finally {
    await model.release();
    rmSync(dir, { recursive: true, force: true });
  }
}

const sorted = (xs: Iterable<string>) => [...xs].sort();

describe(`adapter_config.json keys = HF PEFT ${FIELDS.peft_version}'s (${FIELDS.peft_tag}, ${FIELDS.peft_commit.slice(0, 10)})`, () => {
  test("the pinned PEFT version is the one we write, a plain release number", () => {
    assert.equal(PEFT_COMPAT_VERSION, FIELDS.peft_version);
    assert.match(PEFT_COMPAT_VERSION, /^\d+\.\d+\.\d+$/);
    assert.deepEqual(FIELDS.types.LORA.stripped_on_save, ["runtime_config"]);
  });

  test("every supported peft_type has a config here and a field list (PEFT's or peftkit's)", () => {
    assert.deepEqual(sorted(Object.keys(CONFIGS)), sorted(supportedPeftTypes()));
    for (const t of supportedPeftTypes()) assert.ok(FIELDS.types[t] || PEFTKIT_FIELDS[t], t);
    for (const t of Object.keys(PEFTKIT_FIELDS)) assert.ok(!FIELDS.types[t], `${t} is a PEFT type now: use PEFT's fields`);
  });

  for (const [type, configs] of Object.entries(CONFIGS)) {
    configs.forEach((config, i) => {
      test(`${type} #${i}: exactly the expected keys, PEFT's defaults where unset, peft_version ${PEFT_COMPAT_VERSION}`, async () => {
        const json = await writtenConfig(config);
        const peft = FIELDS.types[type];
        const want = peft ? peft.fields : [...FIELDS.base_fields, ...PEFTKIT_FIELDS[type]];
        const got = Object.keys(json);
        assert.deepEqual(
          { missing: want.filter((k) => !(k in json)).sort(), extra: got.filter((k) => !want.includes(k)).sort() },
          { missing: [], extra: [] },
        );
        assert.deepEqual(got, sorted(got), "keys are written sorted, as PEFT's json.dumps(sort_keys=True)");
        assert.equal(json.peft_version, PEFT_COMPAT_VERSION);
        assert.equal(json.inference_mode, true);
        if (!peft || i > 0) return;
        const wrong: string[] = [];
        for (const [k, src] of Object.entries(peft.defaults)) {
          const d = pythonDefault(src);
          if (NOT_DEFAULT.has(k) || d === undefined) continue;
          if (JSON.stringify(json[k]) !== JSON.stringify(d)) wrong.push(`${k}: wrote ${JSON.stringify(json[k])}, PEFT's default ${src}`);
        }
        assert.deepEqual(wrong, []);
      });
    });
  }

  test("the golden adapter folders (written as PEFT does) have exactly these keys too", () => {
    const root = resolve(REPO_ROOT, "test/golden/peft");
    const cases = readdirSync(root);
    assert.ok(cases.length >= 8);
    for (const c of cases) {
      const json = JSON.parse(readFileSync(join(root, c, ADAPTER_CONFIG), "utf8")) as Record<string, unknown>;
      const fields = FIELDS.types[json.peft_type as string];
      assert.ok(fields, `${c}: peft_type ${json.peft_type}`);
      assert.deepEqual(sorted(Object.keys(json)), sorted(fields.fields), c);
      assert.equal(json.peft_version, FIELDS.peft_version, c);
    }
  });

  test("reading is lenient like PEFT's: unknown keys (runtime_config, later fields) are ignored, absent ones take defaults", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-config-lenient-"));
    const model = await loadTestModel("llama_basic");
    try {
      const peft = PeftModel.create(model, { peftType: "LORA", r: 2, initLoraWeights: false }, { seed: 2 });
      peft.savePretrained(dir);
      const path = join(dir, ADAPTER_CONFIG);
      // An older peftkit file (runtime_config, peft_version "peftkit"), a newer PEFT's field, and nothing else optional.
      const minimal = { peft_type: "LORA", r: 2, lora_alpha: 8, target_modules: ["q_proj", "v_proj"] };
      writeFileSync(
        path,
        JSON.stringify({ ...minimal, runtime_config: { ephemeral_gpu_offload: false }, peft_version: "peftkit", kasa_config: null }),
      );
      const fresh = await loadTestModel("llama_basic");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      assert.equal(loaded.adapter("default").tensors.size, peft.adapter("default").tensors.size);
      await fresh.release();
      writeFileSync(path, JSON.stringify(minimal));
      const again = await loadTestModel("llama_basic");
      assert.equal(PeftModel.fromPretrained(again, dir).adapter("default").tensors.size, peft.adapter("default").tensors.size);
      await again.release();
    } finally {
      await model.release();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
