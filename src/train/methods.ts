/** The --method names of the CLI and the adapter configs they stand for. */
import { PeftkitError } from "../engine/errors.js";

export class MethodError extends PeftkitError {}

export const METHODS = [
  "lora",
  "dora",
  "rslora",
  "pissa",
  "corda",
  "ia3",
  "adapter",
  "prompt",
  "prefix",
  "ssf",
  "bitfit",
  "ln_tuning",
  "hut",
  "soka",
  "lora_sb",
  "hra",
  "vera",
  "oft",
  "boft",
  "loha",
  "lokr",
  "svfit",
  "kasa",
  "loldu",
  "adalora",
  "increlora",
  "fourierft",
  "triadaptlora",
  "pego",
  "lora_ggpo",
  "loca",
  "snell",
  "snella",
  "spiel",
  "spt",
  "sara",
  "id3",
  "lt_sft",
  "s2ft",
  "light_peft",
  "ist",
  "pat",
  "ramt",
  "dsee",
  "poly",
  "lowbit",
] as const;
export type MethodName = (typeof METHODS)[number];

/**
 * Examples a method calibrates on when --calibration-samples is absent (CorDA: 256, its paper's and
 * PEFT's example's; LoRA-SB: 170, the authors' commonsense script's gradient samples; SPT: 512, its
 * scripts' 16 batches of 32).
 */
export const CALIBRATION_SAMPLES: Partial<Record<MethodName, number>> = { corda: 256, lora_sb: 170, spt: 512 };

export interface MethodOptions {
  r?: number;
  alpha?: number;
  dropout?: number;
  /** Module names or "all-linear". */
  target?: string[];
  /** LoRA-family and bottleneck adapters: PEFT's layers_to_transform (only these layer indices). */
  layersToTransform?: number[];
  numVirtualTokens?: number;
  bottleneckSize?: number;
  adapterType?: "houlsby" | "pfeiffer" | "parallel";
  taskType?: string;
  /** SoKA: m and n of the m×n Kronecker factor U (default: balanced). */
  sokaFactors?: [number, number];
  /** LoRA-SB: step size η of the approximated first full fine-tuning step. */
  loraSbEta?: number;
  /** LoRA-SB: power iterations of a randomized SVD instead of the exact one. */
  loraSbNiter?: number;
  /** HRA: Gram–Schmidt-orthogonalised reflections (PEFT's apply_GS). */
  applyGs?: boolean;
  /** VeRA: seed of the shared random projections. */
  projectionPrngKey?: number;
  /** VeRA: initial value of the λ_d vectors. */
  dInitial?: number;
  /** VeRA: write the projections into the adapter folder (else they are rebuilt from the seed). */
  saveProjection?: boolean;
  /** CorDA: "ipm" (the r largest components, PEFT's default) or "kpm" (the r smallest). */
  cordaMethod?: "ipm" | "kpm";
  /** OFT: oft_block_size (default 32); BOFT: boft_block_size (default 4). */
  blockSize?: number;
  /** BOFT: boft_n_butterfly_factor (default 1). */
  butterflyFactor?: number;
  /** OFT: the truncated Cayley–Neumann series (PEFT's default) or the exact Cayley transform. */
  cayley?: "neumann" | "exact";
  /** OFT: COFT's constraint radius eps (absent: no COFT). */
  coftEps?: number;
  /** OFT: one block shared by the whole diagonal. */
  blockShare?: boolean;
  /** LoHa/LoKr (PEFT's rank_dropout, module_dropout; LoKr's decompose_both, decompose_factor, rank_dropout_scale). */
  rankDropout?: number;
  moduleDropout?: number;
  decomposeBoth?: boolean;
  decomposeFactor?: number;
  rankDropoutScale?: boolean;
  /** svfit: pick r per layer as the smallest keeping this share of Σσ² (replaces r); soka: the energy share of its spectrum-aware rank (r is then the most). */
  energyThreshold?: number;
  /** kasa: weights of the δ norm and the orthogonality terms of its regulariser. */
  kasaBeta?: number;
  kasaGamma?: number;
  /** adalora: PEFT's AdaLoraConfig fields (--r stands for target_r when --target-r is absent). */
  initR?: number;
  targetR?: number;
  tinit?: number;
  tfinal?: number;
  deltaT?: number;
  beta1?: number;
  beta2?: number;
  orthRegWeight?: number;
  /** adalora: absent, the run's planned optimizer steps (the controller fills total_step in). */
  totalStep?: number;
  /** increlora: the growth schedule (the authors' init_warmup, incre_interval, top_h, incre_rank_num), the cap on one module's rank, advance learning. */
  initWarmup?: number;
  increInterval?: number;
  topH?: number;
  increRankNum?: number;
  maxRank?: number;
  advanceLearn?: boolean;
  /** FourierFT: spectral coefficients per layer (PEFT's n_frequency, default 1000). */
  nFrequency?: number;
  /** FourierFT: the factor ΔW is scaled by (PEFT's scaling, default 150). */
  fourierScaling?: number;
  /** FourierFT: seed of the frequencies' positions (PEFT's random_loc_seed, default 777). */
  randomLocSeed?: number;
  /** triadaptlora: rank_growth_model (its init_rank, init_warmup, incre_interval, incre_rank_num, max_rank, orth_reg_weight take the shared flags). */
  triadaptGrowth?: "linear" | "non-linear";
  /** pego: LoRA modules per layer (lora_nums) and the weight λ of its orthogonality regulariser (orth_lambda). */
  pegoLoras?: number;
  pegoLambda?: number;
  /** lora_ggpo: weights of the weight norm (σ) and the gradient norm (β) in the perturbation's std. */
  ggpoSigma?: number;
  ggpoBeta?: number;
  /** loca: coefficients per layer (n_frequency), scale α, location-learning steps, location lr ratio, cycle [coefficient, location] steps. */
  locaNFrequency?: number;
  locaScale?: number;
  locaLocationIter?: number;
  locaLocationLrRatio?: number;
  locaCycle?: [number, number];
  /** snell: each layer's sparsity ratio; snella: the initial and target (average) ratios. */
  snellSparsity?: number;
  snellaInitRatio?: number;
  snellaTargetRatio?: number;
  /** snell/snella: "magnitude" (the authors' code) or "mask" (the paper). */
  snellMode?: "magnitude" | "mask";
  /** snella: the allocator's schedule (steps). */
  snellaInitWarmup?: number;
  snellaFinalWarmup?: number;
  snellaMaskInterval?: number;
  /** s2ft: shares of all (layer, unit) pairs trained: V and O KV groups, up and down channels; the selection's seed. */
  s2ftRatios?: { v?: number; o?: number; u?: number; d?: number };
  s2ftSeed?: number;
  /** light_peft: the masks' L1 coefficient and lr multiples; the shares of heads, FFN neurons, LoRA modules and ranks pruned. */
  lightPeft?: {
    maskL1?: number;
    attnMaskLrMult?: number;
    ffnMaskLrMult?: number;
    attnPruningRatio?: number;
    ffnPruningRatio?: number;
    modulePruningRatio?: number;
    rankPruningRatio?: number;
  };
  /** spiel: share of all the model's parameters trained (density), or a total (num_tunable_weights). */
  density?: number;
  numTunableWeights?: number;
  /** spiel: steps between drop-and-regrow (0: the first random index set stays), gradient steps before one, share replaced at the first. */
  reselectionSteps?: number;
  selectionAccumulationSteps?: number;
  initialReselectionRate?: number;
  /** spt: α of the structured/unstructured choice (default 10). */
  sptAlpha?: number;
  /** sara: the threshold θ (|W| < θ trains), the step of the progressive re-selection, λ of the nuclear-norm term. */
  saraThreshold?: number;
  saraProgressiveIter?: number;
  saraLambdaRank?: number;
  /** id3: the budget B (else --density), the steps T it is spread over, ε and μ of the D³ score. */
  id3Budget?: number;
  id3MaxSteps?: number;
  id3Eps?: number;
  id3Exp?: number;
  /** ist: the authors' constants (ist.py): layers updated per step and suppressed per trial (fractions of L), the suppression factor, steps between importance rounds, trials per round, the score step size, importance batch size, and the seed of the layer draws. */
  istUpdateFraction?: number;
  istSuppressFraction?: number;
  istSuppressFactor?: number;
  istInterval?: number;
  istTrials?: number;
  istScoreLr?: number;
  istBatchSize?: number;
  istSeed?: number;
  /** pat: hidden channels kept (keep_dim; default ¾ of hidden_size), the schedule length N (default: the run's steps), the HSMs' rank. */
  patKeepDim?: number;
  patScheduleSteps?: number;
  patHsmRank?: number;
  /** ramt: τ, the initial score, the ‖S‖₂ weight, λ of the gradient dropout, T_k of the teacher term; save scores instead of masks. */
  ramtThreshold?: number;
  ramtMaskScale?: number;
  ramtMaskLossWeight?: number;
  ramtLambda?: number;
  ramtTemperature?: number;
  ramtSaveScores?: boolean;
  /** dsee: N entries of S per matrix, how they are chosen, the seed of "rp"/"grebsmo", GreBsmo's outer iterations. */
  dseeNumSparse?: number;
  dseeSparseMethod?: "omp" | "rp" | "grebsmo";
  dseeSparseSeed?: number;
  dseeGrebsmoOuter?: number;
  /** poly: skills per layer (n_skills, default 4), splits (n_splits, default 1 = Poly; > 1 = MHR). */
  polyNSkills?: number;
  polyNSplits?: number;
  /** lowbit: bits per adapter weight, the codebook, the output multiplier s; save the latent f32 weights instead of codes. */
  lowbitBits?: number;
  lowbitCodebook?: "lloyd-max" | "authors";
  lowbitScale?: number;
  lowbitSaveLatent?: boolean;
}

/** A PEFT config object for a method name (snake_case keys, as PEFT writes them). */
export function methodConfig(method: string, o: MethodOptions): Record<string, unknown> {
  if (!(METHODS as readonly string[]).includes(method)) {
    throw new MethodError(`unknown method "${method}" (methods: ${METHODS.join(", ")})`);
  }
  const target = o.target?.length ? (o.target.length === 1 && o.target[0] === "all-linear" ? "all-linear" : o.target) : undefined;
  const common = { task_type: o.taskType ?? "CAUSAL_LM" };
  const layers = o.layersToTransform?.length ? { layers_to_transform: [...o.layersToTransform] } : {};
  const lora = {
    ...common,
    peft_type: "LORA",
    r: o.r ?? 8,
    lora_alpha: o.alpha ?? 2 * (o.r ?? 8),
    lora_dropout: o.dropout ?? 0.05,
    target_modules: target ?? "all-linear",
    ...layers,
  };
  // LoHa/LoKr: PEFT's defaults r = alpha = 8 (scale 1); alpha follows r unless given.
  const lycoris = {
    ...common,
    r: o.r ?? 8,
    alpha: o.alpha ?? o.r ?? 8,
    rank_dropout: o.rankDropout ?? 0,
    module_dropout: o.moduleDropout ?? 0,
    target_modules: target ?? "all-linear",
  };
  switch (method as MethodName) {
    case "lora":
      return lora;
    case "dora":
      return { ...lora, use_dora: true };
    case "rslora":
      return { ...lora, use_rslora: true };
    case "pissa":
      return { ...lora, init_lora_weights: "pissa", lora_dropout: 0 };
    case "corda":
      // PEFT's CorDA example: lora_alpha = r, no dropout; corda_config as PEFT's CordaConfig writes it.
      return {
        ...lora,
        lora_alpha: o.alpha ?? o.r ?? 8,
        lora_dropout: 0,
        init_lora_weights: "corda",
        corda_config: {
          cache_file: null,
          covariance_file: null,
          corda_method: o.cordaMethod ?? "ipm",
          verbose: false,
          use_float16_for_covariance: false,
          prune_temporary_fields: true,
        },
      };
    case "ia3":
      return { ...common, peft_type: "IA3", ...(target ? { target_modules: target } : {}) };
    case "adapter":
      return {
        ...common,
        peft_type: "BOTTLENECK",
        adapter_type: o.adapterType ?? "houlsby",
        bottleneck_size: o.bottleneckSize ?? 32,
        dropout: o.dropout ?? 0,
        ...layers,
      };
    case "prompt":
      return { ...common, peft_type: "PROMPT_TUNING", num_virtual_tokens: o.numVirtualTokens ?? 20 };
    case "prefix":
      return { ...common, peft_type: "PREFIX_TUNING", num_virtual_tokens: o.numVirtualTokens ?? 20 };
    case "ssf":
      return { ...common, peft_type: "SSF", ...(target ? { target_modules: target } : {}) };
    case "bitfit":
      return { ...common, peft_type: "BITFIT", ...(target ? { target_modules: target } : {}) };
    case "ln_tuning":
      return { ...common, peft_type: "LN_TUNING", ...(target ? { target_modules: target } : {}) };
    case "poly":
      // n_tasks comes from the data's task fields (src/train/poly-run.ts); PEFT has no alpha or dropout.
      return {
        ...common,
        peft_type: "POLY",
        r: o.r ?? 8,
        target_modules: target ?? "all-linear",
        n_skills: o.polyNSkills ?? 4,
        n_splits: o.polyNSplits ?? 1,
      };
    case "hut":
      return { ...common, peft_type: "HUT", r: o.r ?? 8, hut_alpha: o.alpha ?? o.r ?? 8, target_modules: target ?? "all-linear" };
    case "soka":
      return {
        ...common,
        peft_type: "SOKA",
        r: o.r ?? 8,
        factor_out: o.sokaFactors?.[0] ?? null,
        factor_in: o.sokaFactors?.[1] ?? null,
        energy_threshold: o.energyThreshold ?? null,
        target_modules: target ?? "all-linear",
      };
    case "lora_sb":
      return {
        ...common,
        peft_type: "LORA_SB",
        r: o.r ?? 8,
        lora_alpha: o.alpha ?? o.r ?? 8,
        ...(o.loraSbEta !== undefined ? { eta: o.loraSbEta } : {}),
        ...(o.loraSbNiter !== undefined ? { svd_niter: o.loraSbNiter } : {}),
        target_modules: target ?? "all-linear",
      };
    case "hra":
      return { ...common, peft_type: "HRA", r: o.r ?? 8, apply_GS: o.applyGs ?? false, target_modules: target ?? "all-linear" };
    case "vera":
      return {
        ...common,
        peft_type: "VERA",
        r: o.r ?? 256,
        vera_dropout: o.dropout ?? 0,
        projection_prng_key: o.projectionPrngKey ?? 0,
        d_initial: o.dInitial ?? 0.1,
        save_projection: o.saveProjection ?? true,
        target_modules: target ?? "all-linear",
      };
    case "oft":
      return {
        ...common,
        peft_type: "OFT",
        r: 0,
        oft_block_size: o.blockSize ?? 32,
        target_modules: target ?? "all-linear",
        use_cayley_neumann: (o.cayley ?? "neumann") === "neumann",
        ...(o.coftEps !== undefined ? { coft: true, eps: o.coftEps } : {}),
        ...(o.blockShare ? { block_share: true } : {}),
      };
    case "boft":
      return {
        ...common,
        peft_type: "BOFT",
        boft_block_size: o.blockSize ?? 4,
        boft_n_butterfly_factor: o.butterflyFactor ?? 1,
        target_modules: target ?? "all-linear",
      };
    case "loha":
      return { ...lycoris, peft_type: "LOHA" };
    case "lokr":
      return {
        ...lycoris,
        peft_type: "LOKR",
        decompose_both: o.decomposeBoth ?? false,
        decompose_factor: o.decomposeFactor ?? -1,
        rank_dropout_scale: o.rankDropoutScale ?? false,
      };
    case "svfit":
      return {
        ...common,
        peft_type: "SVFIT",
        target_modules: target ?? "all-linear",
        ...(o.energyThreshold !== undefined ? { energy_threshold: o.energyThreshold } : { r: o.r ?? 8 }),
      };
    case "kasa":
      return {
        ...lora,
        peft_type: "KASA",
        ...(o.kasaBeta !== undefined ? { beta: o.kasaBeta } : {}),
        ...(o.kasaGamma !== undefined ? { gamma: o.kasaGamma } : {}),
      };
    case "adalora": {
      // PEFT's defaults are target_r 8, init_r 12: init_r follows a given target at the same 1.5×.
      // lora_alpha 2·init_r scales the update by ≈ 2, as --method lora's default 2r does.
      const targetR = o.targetR ?? o.r ?? 8;
      const initR = o.initR ?? Math.max(targetR, Math.ceil(1.5 * targetR));
      return {
        ...common,
        peft_type: "ADALORA",
        target_r: targetR,
        init_r: initR,
        lora_alpha: o.alpha ?? 2 * initR,
        lora_dropout: o.dropout ?? 0.05,
        ...(target ? { target_modules: target } : {}),
        ...(o.tinit !== undefined ? { tinit: o.tinit } : {}),
        ...(o.tfinal !== undefined ? { tfinal: o.tfinal } : {}),
        ...(o.deltaT !== undefined ? { deltaT: o.deltaT } : {}),
        ...(o.beta1 !== undefined ? { beta1: o.beta1 } : {}),
        ...(o.beta2 !== undefined ? { beta2: o.beta2 } : {}),
        ...(o.orthRegWeight !== undefined ? { orth_reg_weight: o.orthRegWeight } : {}),
        ...(o.totalStep !== undefined ? { total_step: o.totalStep } : {}),
      };
    }
    case "increlora": {
      // --r stands for the average final rank (as LoRA's r), growth starting from half of it.
      const targetR = o.targetR ?? o.r ?? 8;
      const initR = o.initR ?? Math.max(1, Math.floor(targetR / 2));
      return {
        ...common,
        peft_type: "INCRELORA",
        init_r: initR,
        target_r: targetR,
        lora_alpha: o.alpha ?? 2 * targetR,
        lora_dropout: o.dropout ?? 0,
        target_modules: target ?? "all-linear",
        ...(o.initWarmup !== undefined ? { init_warmup: o.initWarmup } : {}),
        ...(o.increInterval !== undefined ? { incre_interval: o.increInterval } : {}),
        ...(o.topH !== undefined ? { top_h: o.topH } : {}),
        ...(o.increRankNum !== undefined ? { incre_rank_num: o.increRankNum } : {}),
        ...(o.maxRank !== undefined ? { max_rank: o.maxRank } : {}),
        ...(o.advanceLearn === false ? { advance_learn: false } : {}),
        ...(o.beta1 !== undefined ? { beta1: o.beta1 } : {}),
        ...(o.beta2 !== undefined ? { beta2: o.beta2 } : {}),
        ...(o.orthRegWeight !== undefined ? { orth_reg_weight: o.orthRegWeight } : {}),
      };
    }
    case "loldu":
      return {
        ...common,
        peft_type: "LOLDU",
        r: o.r ?? 8,
        target_modules: target ?? "all-linear",
        ...(o.alpha !== undefined ? { lora_alpha: o.alpha } : {}),
      };
    case "spiel":
      // SftConfig's defaults (AlanAnsell/peft); target_modules has no default there.
      return {
        ...common,
        peft_type: "SFT",
        density: o.density ?? 0.01,
        ...(o.numTunableWeights !== undefined ? { num_tunable_weights: o.numTunableWeights } : {}),
        reselection_steps: o.reselectionSteps ?? 20,
        selection_accumulation_steps: o.selectionAccumulationSteps ?? 5,
        initial_reselection_rate: o.initialReselectionRate ?? 0.2,
        target_modules: target ?? "all-linear",
      };
    case "spt":
      // The authors' scripts: α 10, rank 8; the budget as spiel's density or a count.
      return {
        ...common,
        peft_type: "SPT",
        density: o.density ?? 0.01,
        ...(o.numTunableWeights !== undefined ? { num_tunable_weights: o.numTunableWeights } : {}),
        alpha: o.sptAlpha ?? 10,
        r: o.r ?? 8,
        lora_dropout: o.dropout ?? 0,
        target_modules: target ?? "all-linear",
      };
    case "sara":
      // finetune.sh's threshold; progressive re-selection and the rank term off unless asked.
      return {
        ...common,
        peft_type: "SARA",
        threshold: o.saraThreshold ?? 2e-3,
        ...(o.saraProgressiveIter !== undefined ? { progressive_iter: o.saraProgressiveIter } : {}),
        ...(o.saraLambdaRank !== undefined ? { lambda_rank: o.saraLambdaRank } : {}),
        target_modules: target ?? "all-linear",
      };
    case "id3":
      // The toolkit README's ε and μ; the budget defaults to 1% of the parameters, as --density for spiel.
      return {
        ...common,
        peft_type: "ID3",
        ...(o.id3Budget !== undefined ? { budget: o.id3Budget } : {}),
        density: o.density ?? 0.01,
        ...(o.id3MaxSteps !== undefined ? { max_steps: o.id3MaxSteps } : {}),
        eps: o.id3Eps ?? 1e-3,
        exp: o.id3Exp ?? 0,
        target_modules: target ?? "all-linear",
      };
    case "dsee":
      // The authors' GLUE scripts: r 16, α 32, N 16 per matrix; LoRA's default targets (q and v).
      return {
        ...common,
        peft_type: "DSEE",
        r: o.r ?? 16,
        lora_alpha: o.alpha ?? 32,
        lora_dropout: o.dropout ?? 0,
        num_sparse: o.dseeNumSparse ?? 16,
        ...(o.dseeSparseMethod !== undefined ? { sparse_method: o.dseeSparseMethod } : {}),
        ...(o.dseeSparseSeed !== undefined ? { sparse_seed: o.dseeSparseSeed } : {}),
        ...(o.dseeGrebsmoOuter !== undefined ? { grebsmo_outer_iters: o.dseeGrebsmoOuter } : {}),
        ...(target ? { target_modules: target } : {}),
      };
    case "lt_sft":
      // The adapter phase 2 trains (an SFT with fixed index sets); train.ts runs both phases
      // (train/lt-sft.ts) and fills num_deltas from the selection.
      return {
        ...common,
        peft_type: "SFT",
        density: o.density ?? 0.01,
        ...(o.numTunableWeights !== undefined ? { num_tunable_weights: o.numTunableWeights } : {}),
        reselection_steps: 0,
        target_modules: target ?? "all-linear",
      };
    case "s2ft": {
      // With no ratio given, the authors' LLaMA-2-7B scripts' setting (o 0.052, d 0.02).
      const r = o.s2ftRatios ?? {};
      const given = [r.v, r.o, r.u, r.d].some((x) => x !== undefined);
      return {
        ...common,
        peft_type: "S2FT",
        v_ratio: r.v ?? 0,
        o_ratio: r.o ?? (given ? 0 : 0.052),
        u_ratio: r.u ?? 0,
        d_ratio: r.d ?? (given ? 0 : 0.02),
        seed: o.s2ftSeed ?? 1234,
      };
    }
    case "pat":
      // LoRA's CLI defaults on all linear layers (the authors': r 20, α 4), plus the HSMs.
      return {
        ...lora,
        peft_type: "PAT",
        ...(o.patKeepDim !== undefined ? { keep_dim: o.patKeepDim } : {}),
        ...(o.patScheduleSteps !== undefined ? { schedule_steps: o.patScheduleSteps } : {}),
        ...(o.patHsmRank !== undefined ? { hsm_rank: o.patHsmRank } : {}),
      };
    case "lowbit":
      // The authors' defaults (1 bit, s = 1; binary_adapter/main.py) with LoRA's r and targets.
      return {
        ...common,
        peft_type: "LOWBIT",
        r: o.r ?? 8,
        scale: o.lowbitScale ?? 1,
        bits: o.lowbitBits ?? 1,
        codebook: o.lowbitCodebook ?? "lloyd-max",
        ...(o.lowbitSaveLatent ? { save_latent: true } : {}),
        target_modules: target ?? "all-linear",
      };
    case "ramt":
      // The authors' code defaults (cfg.MASK, vit_b16.yaml); targets: the attention projections.
      return {
        ...common,
        peft_type: "RAMT",
        threshold: o.ramtThreshold ?? 5e-3,
        mask_scale: o.ramtMaskScale ?? 1e-2,
        mask_loss_weight: o.ramtMaskLossWeight ?? 1e-4,
        grad_drop_lambda: o.ramtLambda ?? 1,
        distill_temperature: o.ramtTemperature ?? 1,
        ...(o.ramtSaveScores ? { save_scores: true } : {}),
        ...(target ? { target_modules: target } : {}),
      };
    case "fourierft":
      return {
        ...common,
        peft_type: "FOURIERFT",
        n_frequency: o.nFrequency ?? 1000,
        scaling: o.fourierScaling ?? 150,
        random_loc_seed: o.randomLocSeed ?? 777,
        target_modules: target ?? "all-linear",
      };
    case "triadaptlora":
      // --r is the reference (average final) rank; the fork's defaults otherwise (docs/methods/triadaptlora.md).
      return {
        ...common,
        peft_type: "TRIADAPTLORA",
        reference_rank: o.r ?? 8,
        init_rank: o.initR ?? 1,
        lora_alpha: o.alpha ?? 8,
        lora_dropout: o.dropout ?? 0,
        init_warmup: o.initWarmup ?? 0,
        incre_interval: o.increInterval ?? 1,
        rank_growth_model: o.triadaptGrowth ?? "linear",
        orth_reg_weight: o.orthRegWeight ?? 0.5,
        ...(o.increRankNum !== undefined ? { incre_rank_num: o.increRankNum } : {}),
        ...(o.maxRank !== undefined ? { max_rank: o.maxRank } : {}),
        target_modules: target ?? "all-linear",
      };
    case "pego":
      // The authors' defaults (JudgingH/PEGO run.sh): rank 4, 4 modules, λ = 1e-3, no scaling (α = r).
      return {
        ...common,
        peft_type: "PEGO",
        r: o.r ?? 4,
        lora_alpha: o.alpha ?? o.r ?? 4,
        lora_dropout: o.dropout ?? 0,
        lora_nums: o.pegoLoras ?? 4,
        orth_lambda: o.pegoLambda ?? 1e-3,
        target_modules: target ?? "all-linear",
      };
    case "light_peft": {
      // The estimation phase's adapter (LoRA + masks); train.ts runs both phases (train/light-peft.ts).
      const l = o.lightPeft ?? {};
      const field = (name: string, v: number | undefined) => (v !== undefined ? { [name]: v } : {});
      return {
        ...lora,
        peft_type: "LIGHT_PEFT",
        ...field("mask_l1_coef", l.maskL1),
        ...field("attn_mask_lr_mult", l.attnMaskLrMult),
        ...field("ffn_mask_lr_mult", l.ffnMaskLrMult),
        ...field("attn_pruning_ratio", l.attnPruningRatio),
        ...field("ffn_pruning_ratio", l.ffnPruningRatio),
        ...field("module_pruning_ratio", l.modulePruningRatio),
        ...field("rank_pruning_ratio", l.rankPruningRatio),
      };
    }
    case "ist":
      // LoRA trained by IST (the saved folder is plain LoRA); the defaults are ist.py's constants.
      return {
        ...lora,
        peft_type: "IST",
        update_fraction: o.istUpdateFraction ?? 0.25,
        suppress_fraction: o.istSuppressFraction ?? 0.5,
        suppress_factor: o.istSuppressFactor ?? 0.25,
        importance_interval: o.istInterval ?? 10,
        trials: o.istTrials ?? 3,
        score_lr: o.istScoreLr ?? 10,
        importance_batch_size: o.istBatchSize ?? 16,
        seed: o.istSeed ?? 42,
      };
    case "lora_ggpo":
      return {
        ...lora,
        peft_type: "LORA_GGPO",
        ...(o.ggpoSigma !== undefined ? { ggpo_sigma: o.ggpoSigma } : {}),
        ...(o.ggpoBeta !== undefined ? { ggpo_beta: o.ggpoBeta } : {}),
      };
    case "loca":
      // The authors' defaults live in the config parser (n_frequency 1000, scale 1, cycles 10 + 20).
      return {
        ...common,
        peft_type: "LOCA",
        ...(target ? { target_modules: target } : {}),
        ...(o.locaNFrequency !== undefined ? { n_frequency: o.locaNFrequency } : {}),
        ...(o.locaScale !== undefined ? { scale: o.locaScale } : {}),
        ...(o.locaLocationIter !== undefined ? { learn_location_iter: o.locaLocationIter } : {}),
        ...(o.locaLocationLrRatio !== undefined ? { location_lr_ratio: o.locaLocationLrRatio } : {}),
        ...(o.locaCycle ? { coefficient_steps: o.locaCycle[0], location_steps: o.locaCycle[1] } : {}),
      };
    case "snell":
    case "snella": {
      const shared = {
        ...common,
        peft_type: method === "snell" ? "SNELL" : "SNELLA",
        r: o.r ?? 8,
        snell_dropout: o.dropout ?? 0.1,
        target_modules: target ?? "all-linear",
        ...(o.snellMode !== undefined ? { sparsify_mode: o.snellMode } : {}),
      };
      if (method === "snell") return { ...shared, ...(o.snellSparsity !== undefined ? { sparsity_ratio: o.snellSparsity } : {}) };
      return {
        ...shared,
        ...(o.snellaInitRatio !== undefined ? { init_ratio: o.snellaInitRatio } : {}),
        ...(o.snellaTargetRatio !== undefined ? { target_ratio: o.snellaTargetRatio } : {}),
        ...(o.snellaInitWarmup !== undefined ? { init_warmup: o.snellaInitWarmup } : {}),
        ...(o.snellaFinalWarmup !== undefined ? { final_warmup: o.snellaFinalWarmup } : {}),
        ...(o.snellaMaskInterval !== undefined ? { mask_interval: o.snellaMaskInterval } : {}),
        ...(o.beta1 !== undefined ? { beta1: o.beta1 } : {}),
        ...(o.beta2 !== undefined ? { beta2: o.beta2 } : {}),
      };
    }
  }
}

const METHOD_OF_PEFT_TYPE: Record<string, MethodName> = {
  LORA: "lora",
  IA3: "ia3",
  BOTTLENECK: "adapter",
  PROMPT_TUNING: "prompt",
  PREFIX_TUNING: "prefix",
  SSF: "ssf",
  BITFIT: "bitfit",
  LN_TUNING: "ln_tuning",
  HUT: "hut",
  SOKA: "soka",
  LORA_SB: "lora_sb",
  HRA: "hra",
  VERA: "vera",
  OFT: "oft",
  BOFT: "boft",
  LOHA: "loha",
  LOKR: "lokr",
  SVFIT: "svfit",
  KASA: "kasa",
  LOLDU: "loldu",
  ADALORA: "adalora",
  INCRELORA: "increlora",
  FOURIERFT: "fourierft",
  TRIADAPTLORA: "triadaptlora",
  PEGO: "pego",
  LORA_GGPO: "lora_ggpo",
  LOCA: "loca",
  SNELL: "snell",
  SNELLA: "snella",
  SFT: "spiel",
  SPT: "spt",
  SARA: "sara",
  ID3: "id3",
  S2FT: "s2ft",
  LIGHT_PEFT: "light_peft",
  IST: "ist",
  PAT: "pat",
  RAMT: "ramt",
  DSEE: "dsee",
  POLY: "poly",
  LOWBIT: "lowbit",
};

/**
 * The `peftkit train` flag that gives an adapter_config.json field a value, e.g. ("r", 8) →
 * "--r 8", for messages about a run whose flags differ from its checkpoint; null for fields no
 * flag sets. `peftType` tells apart fields two methods name alike (n_frequency: FourierFT, LoCA).
 */
export function configFlag(field: string, value: unknown, peftType?: string): string | null {
  const list = (v: unknown) => (Array.isArray(v) ? v.join(",") : String(v));
  switch (field) {
    case "r":
      return `--r ${value}`;
    case "lora_alpha":
    case "hut_alpha":
      return `--alpha ${value}`;
    case "eta":
      return `--lora-sb-eta ${value}`;
    case "svd_niter":
      return value === null || value === undefined ? null : `--lora-sb-niter ${value}`;
    case "factor_out":
    case "factor_in":
      return value === null || value === undefined ? null : "--soka-factors M,N";
    case "alpha":
      return peftType === "SPT" ? `--spt-alpha ${value}` : `--alpha ${value}`;
    case "rank_dropout":
      return `--rank-dropout ${value}`;
    case "module_dropout":
      return `--module-dropout ${value}`;
    case "decompose_factor":
      return `--decompose-factor ${value}`;
    case "decompose_both":
      return value === true ? "--decompose-both" : null;
    case "rank_dropout_scale":
      return value === true ? "--rank-dropout-scale" : null;
    case "target_r":
      return `--target-r ${value}`;
    case "n_skills":
      return `--poly-n-skills ${value}`;
    case "n_splits":
      return `--poly-n-splits ${value}`;
    case "n_tasks":
      return `--poly-n-tasks ${value}`;
    case "init_r":
      return `--init-r ${value}`;
    case "tinit":
      return `--tinit ${value}`;
    case "tfinal":
      return `--tfinal ${value}`;
    case "deltaT":
      return `--delta-t ${value}`;
    case "beta1":
      return `--beta1 ${value}`;
    case "beta2":
      return `--beta2 ${value}`;
    case "orth_reg_weight":
      return `--orth-reg-weight ${value}`;
    case "init_warmup":
      return peftType === "SNELLA" ? `--snella-init-warmup ${value}` : `--init-warmup ${value}`;
    case "incre_interval":
      return `--incre-interval ${value}`;
    case "top_h":
      return `--top-h ${value}`;
    case "incre_rank_num":
      return value === null || value === undefined ? null : `--incre-rank-num ${value}`;
    case "max_rank":
      return value === null || value === undefined ? null : `--max-rank ${value}`;
    case "advance_learn":
      return value === false ? "--no-advance-learn" : null;
    case "lora_dropout":
    case "vera_dropout":
    case "dropout":
      return `--dropout ${value}`;
    case "target_modules":
      return value === null || value === undefined ? null : `--target ${list(value)}`;
    case "num_virtual_tokens":
      return `--num-virtual-tokens ${value}`;
    case "bottleneck_size":
      return `--bottleneck-size ${value}`;
    case "adapter_type":
      return `--adapter-type ${value}`;
    case "apply_GS":
      return value === true ? "--apply-gs" : null;
    case "projection_prng_key":
      return `--projection-prng-key ${value}`;
    case "d_initial":
      return `--d-initial ${value}`;
    case "save_projection":
      return `--save-projection ${value}`;
    case "oft_block_size":
    case "boft_block_size":
      return `--block-size ${value}`;
    case "boft_n_butterfly_factor":
      return `--butterfly-factor ${value}`;
    case "use_cayley_neumann":
      return `--cayley ${value === false ? "exact" : "neumann"}`;
    case "energy_threshold":
      return value === null || value === undefined ? null : `--energy-threshold ${value}`;
    case "beta":
      return `--kasa-beta ${value}`;
    case "gamma":
      return `--kasa-gamma ${value}`;
    case "n_frequency":
      return peftType === "LOCA" ? `--loca-n-frequency ${value}` : `--n-frequency ${value}`;
    case "scaling":
      return `--fourier-scaling ${value}`;
    case "random_loc_seed":
      return `--random-loc-seed ${value}`;
    case "reference_rank":
      return `--r ${value}`;
    case "init_rank":
      return `--init-r ${value}`;
    case "rank_growth_model":
      return `--triadapt-growth ${value}`;
    case "lora_nums":
      return `--pego-loras ${value}`;
    case "orth_lambda":
      return `--pego-lambda ${value}`;
    case "ggpo_sigma":
      return `--ggpo-sigma ${value}`;
    case "ggpo_beta":
      return `--ggpo-beta ${value}`;
    case "scale":
      return peftType === "LOWBIT" ? `--lowbit-scale ${value}` : `--loca-scale ${value}`;
    case "learn_location_iter":
      return value === null || value === undefined ? null : `--loca-location-iter ${value}`;
    case "location_lr_ratio":
      return `--loca-location-lr-ratio ${value}`;
    case "coefficient_steps":
    case "location_steps":
      return "--loca-cycle A,L";
    case "snell_dropout":
      return `--dropout ${value}`;
    case "sparsity_ratio":
      return `--snell-sparsity ${value}`;
    case "sparsify_mode":
      return `--snell-mode ${value}`;
    case "init_ratio":
      return `--snella-init-ratio ${value}`;
    case "target_ratio":
      return `--snella-target-ratio ${value}`;
    case "final_warmup":
      return `--snella-final-warmup ${value}`;
    case "mask_interval":
      return `--snella-mask-interval ${value}`;
    case "density":
      return `--density ${value}`;
    case "num_tunable_weights":
      return value === null || value === undefined ? null : `--num-tunable-weights ${value}`;
    case "reselection_steps":
      return `--reselection-steps ${value}`;
    case "selection_accumulation_steps":
      return `--selection-accumulation-steps ${value}`;
    case "initial_reselection_rate":
      return `--initial-reselection-rate ${value}`;
    case "threshold":
      return peftType === "SARA" ? `--sara-threshold ${value}` : peftType === "RAMT" ? `--ramt-threshold ${value}` : null;
    case "mask_scale":
      return peftType === "RAMT" ? `--ramt-mask-scale ${value}` : null;
    case "mask_loss_weight":
      return peftType === "RAMT" ? `--ramt-mask-loss-weight ${value}` : null;
    case "grad_drop_lambda":
      return `--ramt-lambda ${value}`;
    case "distill_temperature":
      return peftType === "RAMT" ? `--ramt-temperature ${value}` : null;
    case "save_scores":
      return value === true ? "--ramt-save-scores" : null;
    case "progressive_iter":
      return value === null || value === undefined ? null : `--sara-progressive-iter ${value}`;
    case "lambda_rank":
      return `--sara-lambda-rank ${value}`;
    case "budget":
      return value === null || value === undefined ? null : `--id3-budget ${value}`;
    case "max_steps":
      return value === null || value === undefined ? null : `--id3-max-steps ${value}`;
    case "eps":
      return peftType === "ID3" ? `--id3-eps ${value}` : null;
    case "exp":
      return peftType === "ID3" ? `--id3-exp ${value}` : null;
    case "v_ratio":
    case "o_ratio":
    case "u_ratio":
    case "d_ratio":
      return `--${field[0]}-ratio ${value}`;
    case "seed":
      return peftType === "S2FT" ? `--seed ${value}` : null;
    case "mask_l1_coef":
      return `--mask-l1 ${value}`;
    case "attn_mask_lr_mult":
    case "ffn_mask_lr_mult":
    case "attn_pruning_ratio":
    case "ffn_pruning_ratio":
    case "module_pruning_ratio":
    case "rank_pruning_ratio":
      return `--${field.replace(/_/g, "-")} ${value}`;
    case "keep_dim":
      return value === null || value === undefined ? null : `--pat-keep-dim ${value}`;
    case "schedule_steps":
      return value === null || value === undefined ? null : `--pat-schedule-steps ${value}`;
    case "hsm_rank":
      return value === null || value === undefined ? null : `--pat-hsm-rank ${value}`;
    case "num_sparse":
      return `--dsee-num-sparse ${value}`;
    case "sparse_method":
      return `--dsee-sparse-method ${value}`;
    case "sparse_seed":
      return `--dsee-sparse-seed ${value}`;
    case "bits":
      return peftType === "LOWBIT" ? `--lowbit-bits ${value}` : null;
    case "codebook":
      return peftType === "LOWBIT" ? `--lowbit-codebook ${value}` : null;
    case "save_latent":
      return value === true ? "--lowbit-save-latent" : null;
    case "grebsmo_outer_iters":
      return `--dsee-grebsmo-outer ${value}`;
    case "peft_type":
      return METHOD_OF_PEFT_TYPE[String(value)] ? `--method ${METHOD_OF_PEFT_TYPE[String(value)]}` : null;
    case "use_dora":
      return value === true ? "--method dora" : null;
    case "use_rslora":
      return value === true ? "--method rslora" : null;
    case "init_lora_weights":
      return value === "pissa" ? "--method pissa" : value === "corda" ? "--method corda" : null;
    case "corda_config":
      return value && typeof value === "object" && "corda_method" in value ? `--corda-method ${String(value.corda_method)}` : null;
    default:
      return null;
  }
}
