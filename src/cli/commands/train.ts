import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../io/hf-folder.js";
import { type LabelConfig, parseLabelFields } from "../../io/label-config.js";
import { AutoTokenizer } from "../../io/tokenizer.js";
import type { TaskHead } from "../../models/architecture.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { CalibrationDataError, calibrateFromFile } from "../../train/calibrate.js";
import { DATA_FORMATS, type DataFormat, type Example, loadDataset, splitDataset, trainingLabels } from "../../train/data/index.js";
import { defaultPruneAt, runDseePrune } from "../../train/dsee-prune.js";
import { defaultEstimationSteps, runLightPeft } from "../../train/light-peft.js";
import { runLtSft } from "../../train/lt-sft.js";
import { CALIBRATION_SAMPLES, METHODS, MethodError, type MethodName, methodConfig } from "../../train/methods.js";
import { POLY_FINETUNES, type PolyFinetune, type PolyRun, preparePolyRun } from "../../train/poly-run.js";
import { type RunOptions, runTraining } from "../../train/run.js";
import { type ScheduleName, TrainingArgsError } from "../../train/schedule.js";
import { SELECTIVE_METHODS } from "../../train/selective-run.js";
import type { Trainer } from "../../train/trainer.js";
import { ZO_METHODS } from "../../train/zo/run.js";
import { calibrationRequest } from "../../tuners/peft-model.js";
import type { CalibrationStats } from "../../tuners/tuner.js";
import { type CommandSpec, type Flags, UsageError } from "../args.js";
import { requireDir } from "../load.js";
import { effectiveMaxLength } from "../max-length.js";

/** The model head and PEFT task_type each record format trains. */
/** The model head and PEFT task type each record format trains. */
export const FORMAT_TASKS: Record<DataFormat, { head: TaskHead; taskType: string }> = {
  text: { head: "causal_lm", taskType: "CAUSAL_LM" },
  prompt_completion: { head: "causal_lm", taskType: "CAUSAL_LM" },
  chat: { head: "causal_lm", taskType: "CAUSAL_LM" },
  classification: { head: "sequence_classification", taskType: "SEQ_CLS" },
  pair_classification: { head: "sequence_classification", taskType: "SEQ_CLS" },
  token_classification: { head: "token_classification", taskType: "TOKEN_CLS" },
};

export const TRAIN_FLAGS: CommandSpec["flags"] = [
  { name: "model", type: "string", meta: "DIR", help: "base model folder (config.json, safetensors, tokenizer.json)", required: true },
  {
    name: "data",
    type: "string",
    meta: "FILE",
    help: "training data: .jsonl, .json, .csv, .parquet, .txt or a folder of .txt",
    required: true,
  },
  { name: "eval-data", type: "string", meta: "FILE", help: "evaluation data (default: --eval-fraction of --data)" },
  {
    name: "eval-fraction",
    type: "number",
    meta: "F",
    help: "share of --data held out for evaluation when --eval-data is absent",
    default: 0.05,
    min: 0,
    exclusiveMax: 1,
  },
  { name: "format", type: "string", help: "record format (default: detected from the fields)", choices: DATA_FORMATS },
  { name: "on-bad-record", type: "string", help: "what to do with a malformed record", default: "error", choices: ["error", "skip"] },
  {
    name: "max-length",
    type: "int",
    meta: "N",
    help: "longest example in tokens (default: 512, or the model's position limit if smaller)",
    min: 1,
  },
  { name: "pack", type: "boolean", help: "pack language-modelling examples into rows of --max-length tokens" },
  {
    name: "method",
    type: "string",
    help: "PEFT method, or lisa/hft/gradnorm_lorp (whole base tensors; docs/methods/lisa.md, gradnorm_lorp.md), or mezo/sparse_mezo (zeroth-order, forward passes only: the model's weights, or with --zo-over an adapter; docs/methods/mezo.md)",
    default: "lora",
    choices: [...METHODS, ...SELECTIVE_METHODS, ...ZO_METHODS],
  },
  {
    name: "r",
    type: "int",
    meta: "N",
    help: "rank: LoRA, LoHa, LoKr, HRA (default 8), VeRA (default 256), gradnorm_lorp's projector (default 16)",
    min: 1,
  },
  { name: "alpha", type: "number", meta: "A", help: "LoRA alpha (default 2·r); LoHa / LoKr alpha (default r)", exclusiveMin: 0 },
  { name: "dropout", type: "number", meta: "P", help: "LoRA / adapter dropout", default: 0.05, min: 0, exclusiveMax: 1 },
  {
    name: "rank-dropout",
    type: "number",
    meta: "P",
    help: "LoHa / LoKr: drop output rows of ΔW in training",
    default: 0,
    min: 0,
    exclusiveMax: 1,
  },
  { name: "module-dropout", type: "number", meta: "P", help: "LoHa / LoKr: skip a layer's update in training", default: 0, min: 0, max: 1 },
  { name: "decompose-both", type: "boolean", help: "LoKr: also split the left Kronecker factor into a rank-r product" },
  {
    name: "decompose-factor",
    type: "int",
    meta: "N",
    help: "LoKr: factorization() divider (-1: near the square root)",
    default: -1,
    min: -1,
  },
  { name: "rank-dropout-scale", type: "boolean", help: "LoKr: rescale the rank-dropout mask by its mean" },
  { name: "target", type: "list", meta: "LIST", help: 'target modules, comma-separated, or "all-linear"' },
  {
    name: "layers-to-transform",
    type: "list",
    meta: "LIST",
    help: "LoRA family, adapter: only these transformer layers (0-based indices, comma-separated; PEFT's layers_to_transform)",
  },
  { name: "num-virtual-tokens", type: "int", meta: "N", help: "prompt/prefix tuning: soft tokens", default: 20, min: 1 },
  { name: "bottleneck-size", type: "int", meta: "N", help: "adapter: bottleneck width", default: 32, min: 1 },
  {
    name: "adapter-type",
    type: "string",
    help: "adapter: where adapters go",
    default: "houlsby",
    choices: ["houlsby", "pfeiffer", "parallel"],
  },
  { name: "soka-factors", type: "list", meta: "M,N", help: "soka: U_k is M×N and V_k (out/M)×(in/N) (default: balanced factors)" },
  {
    name: "lora-sb-eta",
    type: "number",
    meta: "η",
    help: "lora_sb: step size of the approximated first step −η·sign(ΣG) (default: the first step's rate, --lr / warm-up steps)",
    exclusiveMin: 0,
  },
  {
    name: "lora-sb-niter",
    type: "int",
    meta: "N",
    help: "lora_sb: a randomized SVD with N power iterations (the authors' 10) instead of the exact one, for large layers",
    min: 0,
  },
  { name: "apply-gs", type: "boolean", help: "HRA: orthogonalise the reflection vectors (Gram–Schmidt)" },
  { name: "projection-prng-key", type: "int", meta: "N", help: "VeRA: seed of the shared random projections", default: 0, min: 0 },
  // λ_d = 0 with λ_b = 0 (the init) gives both zero gradients: nothing would ever train.
  { name: "d-initial", type: "number", meta: "F", help: "VeRA: initial value of the λ_d vectors", default: 0.1, exclusiveMin: 0 },
  {
    name: "save-projection",
    type: "boolean",
    help: "VeRA: save the projections in the adapter (false: rebuilt from the seed on load)",
    default: true,
  },
  {
    name: "corda-method",
    type: "string",
    help: 'corda: "ipm" = the r largest components, "kpm" = the r smallest',
    default: "ipm",
    choices: ["ipm", "kpm"],
  },
  {
    name: "calibration-data",
    type: "string",
    meta: "FILE",
    help: "data-aware initialisation (corda, lora_sb, spt): examples to calibrate on, any format --data takes",
  },
  {
    name: "calibration-samples",
    type: "int",
    meta: "N",
    help: "calibrate on the first N examples of --calibration-data (default: the method's, 256 for corda, 170 for lora_sb, 512 for spt)",
    min: 1,
  },
  { name: "block-size", type: "int", meta: "N", help: "oft: oft_block_size (default 32); boft: boft_block_size (default 4)", min: 1 },
  { name: "butterfly-factor", type: "int", meta: "N", help: "boft: butterfly factors (boft_n_butterfly_factor)", default: 1, min: 1 },
  {
    name: "cayley",
    type: "string",
    help: "oft: Cayley–Neumann series or the exact transform",
    default: "neumann",
    choices: ["neumann", "exact"],
  },
  { name: "coft-eps", type: "number", meta: "EPS", help: "oft: constrained OFT (coft) with this radius", exclusiveMin: 0 },
  { name: "block-share", type: "boolean", help: "oft: one rotation block shared along the diagonal" },
  {
    name: "energy-threshold",
    type: "number",
    meta: "T",
    help: "svfit: per layer, the smallest rank keeping this share of Σσ² (the paper's 0.99), instead of --r; soka: per-layer rank from this energy share and the elbow, at most --r",
    exclusiveMin: 0,
    max: 1,
  },
  { name: "kasa-beta", type: "number", meta: "B", help: "kasa: weight of Σ‖δ‖² in the regulariser (default 1e-4)", min: 0 },
  { name: "kasa-gamma", type: "number", meta: "G", help: "kasa: weight of the orthogonality terms (default 1e-3)", min: 0 },
  {
    name: "target-r",
    type: "int",
    meta: "N",
    help: "adalora, increlora: target average rank per layer at the end of the schedule (default --r, else 8)",
    min: 0,
  },
  {
    name: "init-r",
    type: "int",
    meta: "N",
    help: "adalora: rank every layer starts with (default ⌈1.5 × target_r⌉, PEFT's 12 for 8); increlora: (default target_r / 2); triadaptlora: its init_rank (default 1)",
    min: 1,
  },
  { name: "tinit", type: "int", meta: "N", help: "adalora: warm-up steps before the budget shrinks (default 0)", min: 0 },
  { name: "tfinal", type: "int", meta: "N", help: "adalora: final steps at the fixed rank pattern (default 0)", min: 0 },
  { name: "delta-t", type: "int", meta: "N", help: "adalora: steps between rank reallocations, PEFT's deltaT (default 1)", min: 1 },
  {
    name: "beta1",
    type: "number",
    meta: "B",
    help: "adalora, increlora, snella: EMA factor of the sensitivity (default 0.85)",
    exclusiveMin: 0,
    max: 1,
  },
  {
    name: "beta2",
    type: "number",
    meta: "B",
    help: "adalora, increlora, snella: EMA factor of the uncertainty (default 0.85)",
    exclusiveMin: 0,
    max: 1,
  },
  {
    name: "orth-reg-weight",
    type: "number",
    meta: "W",
    help: "adalora, triadaptlora: weight of the orthogonal regulariser (default 0.5); increlora: (default 0.1)",
    min: 0,
  },
  {
    name: "init-warmup",
    type: "int",
    meta: "N",
    help: "increlora: steps before the first growth round (default 100); triadaptlora: (default 0)",
    min: 0,
  },
  {
    name: "incre-interval",
    type: "int",
    meta: "N",
    help: "increlora: steps between growth rounds (default 100); triadaptlora: (default 1)",
    min: 1,
  },
  { name: "top-h", type: "int", meta: "N", help: "increlora: modules that grow per round (default 10)", min: 1 },
  {
    name: "incre-rank-num",
    type: "int",
    meta: "N",
    help: "increlora, triadaptlora: ranks a module gains per round (default target_r / 2, --r / 2)",
    min: 1,
  },
  {
    name: "max-rank",
    type: "int",
    meta: "N",
    help: "increlora, triadaptlora: the most one module may reach; the step is compiled at it (default 3 × target_r, 3 × --r)",
    min: 1,
  },
  { name: "no-advance-learn", type: "boolean", help: "increlora: reserved ranks stay frozen until added (no advance learning)" },
  {
    name: "total-step",
    type: "int",
    meta: "N",
    help: "adalora: the budget schedule's total_step (default: the run's optimizer steps)",
    min: 1,
  },
  {
    name: "n-frequency",
    type: "int",
    meta: "N",
    help: "fourierft: spectral coefficients trained per layer, at most out·in (PEFT's n_frequency)",
    default: 1000,
    min: 1,
  },
  {
    name: "fourier-scaling",
    type: "number",
    meta: "S",
    help: "fourierft: ΔW = scaling·Re(ifft2(spectrum)) (PEFT's scaling)",
    default: 150,
    exclusiveMin: 0,
  },
  {
    name: "random-loc-seed",
    type: "int",
    meta: "N",
    help: "fourierft: seed of torch.randperm placing the frequencies (PEFT's random_loc_seed)",
    default: 777,
    min: 0,
  },
  {
    name: "triadapt-growth",
    type: "string",
    help: "triadaptlora: threshold schedule, how many modules may grow as training advances (rank_growth_model; default linear)",
    choices: ["linear", "non-linear"],
  },

  {
    name: "pego-loras",
    type: "int",
    meta: "N",
    help: "pego: LoRA modules per layer (default 4; --r is each one's rank, default 4)",
    min: 1,
  },
  { name: "pego-lambda", type: "number", meta: "L", help: "pego: weight λ of the orthogonality regulariser (default 1e-3)", min: 0 },
  {
    name: "ggpo-sigma",
    type: "number",
    meta: "S",
    help: "lora_ggpo: weight of the weight row norm in the perturbation's std (default 0.03)",
    min: 0,
  },
  {
    name: "ggpo-beta",
    type: "number",
    meta: "B",
    help: "lora_ggpo: weight of the squared gradient row norm in the perturbation's std (default 0.01)",
    min: 0,
  },
  {
    name: "pat-keep-dim",
    type: "int",
    meta: "K",
    help: "pat: hidden channels the mask keeps (keep_dim; default ¾ of hidden_size)",
    min: 1,
  },
  {
    name: "pat-schedule-steps",
    type: "int",
    meta: "N",
    help: "pat: steps of the mask's temperature/bias schedule, frozen after 0.8·N (default: --max-steps, else the run's steps)",
    min: 2,
  },
  { name: "pat-hsm-rank", type: "int", meta: "R", help: "pat: rank of each HSM's U·D (default min(200, hidden_size))", min: 1 },
  {
    name: "density",
    type: "number",
    meta: "D",
    help: "spiel, spt: share of all the model's parameters trained (spiel spreads it over the targets by size; spt's budget); id3: the budget as such a share; lt_sft: share of the targeted weights' entries kept after phase 1 (default 0.01)",
    exclusiveMin: 0,
    max: 1,
  },
  {
    name: "num-tunable-weights",
    type: "int",
    meta: "N",
    help: "spiel, spt, lt_sft: total parameters trained (overrides --density)",
    min: 1,
  },
  {
    name: "spt-alpha",
    type: "number",
    meta: "A",
    help: "spt: a matrix with at least (its LoRA's size)/A sensitive entries gets a LoRA module instead (default 10)",
    exclusiveMin: 0,
  },
  {
    name: "full-steps",
    type: "int",
    meta: "N",
    help: "lt_sft: steps of phase 1 (full fine-tuning of the targeted weights); phase 2 takes the rest of --max-steps (default: half)",
    min: 1,
  },
  {
    name: "reselection-steps",
    type: "int",
    meta: "N",
    help: "spiel: steps between drop-and-regrow of the index sets (default 20; 0 keeps the first, random, sets)",
    min: 0,
  },
  {
    name: "selection-accumulation-steps",
    type: "int",
    meta: "N",
    help: "spiel: steps before a reselection whose gradients rank the regrowth candidates (default 5)",
    min: 1,
  },
  {
    name: "initial-reselection-rate",
    type: "number",
    meta: "P",
    help: "spiel: share of each index set replaced at the first reselection, decaying linearly to 0 (default 0.2)",
    min: 0,
    max: 1,
  },
  { name: "sara-threshold", type: "number", meta: "T", help: "sara: entries with |W| < T train (default 2e-3)", exclusiveMin: 0 },
  {
    name: "sara-progressive-iter",
    type: "int",
    meta: "N",
    help: "sara: after N steps keep training only the entries still below the threshold (default: never)",
    min: 1,
  },
  {
    name: "sara-lambda-rank",
    type: "number",
    meta: "L",
    help: "sara: weight of λ·‖ΔW‖_* on one random layer per step (default 0)",
    min: 0,
  },
  { name: "ramt-threshold", type: "number", meta: "T", help: "ramt: τ, an entry is on while its score is above τ (default 5e-3)", min: 0 },
  { name: "ramt-mask-scale", type: "number", meta: "S", help: "ramt: the scores' initial value, above τ (default 1e-2)", exclusiveMin: 0 },
  { name: "ramt-mask-loss-weight", type: "number", meta: "W", help: "ramt: weight of Σ‖S‖₂ over the score tensors (default 1e-4)", min: 0 },
  {
    name: "ramt-lambda",
    type: "number",
    meta: "L",
    help: "ramt: λ of the gradient dropout, 0 (off) to 1 (dropped elements get no update; default 1)",
    min: 0,
    max: 1,
  },
  {
    name: "ramt-temperature",
    type: "number",
    meta: "T",
    help: "ramt: temperature of the soft cross-entropy to the frozen model (default 1)",
    exclusiveMin: 0,
  },
  { name: "ramt-save-scores", type: "boolean", help: "ramt: save the float scores instead of the bit-packed masks" },
  {
    name: "lowbit-bits",
    type: "string",
    meta: "B",
    help: "lowbit: bits per adapter weight, quantisation-aware trained and saved packed (default 1)",
    choices: ["1", "2", "4", "8"],
  },
  {
    name: "lowbit-codebook",
    type: "string",
    meta: "C",
    help: "lowbit: the levels for N(0,1): lloyd-max (default) or authors (the authors' code's median codebook)",
    choices: ["lloyd-max", "authors"],
  },
  { name: "lowbit-scale", type: "number", meta: "S", help: "lowbit: s, the adapter output multiplier (default 1)", exclusiveMin: 0 },
  { name: "lowbit-save-latent", type: "boolean", help: "lowbit: save the latent f32 weights (to train on) instead of the packed codes" },
  {
    name: "lowbit-export-dequantized",
    type: "boolean",
    help: "lowbit: also write the adapter as a plain HF PEFT LoRA of its dequantised weights in OUTPUT_DIR/dequantized_lora/",
  },
  {
    name: "dsee-num-sparse",
    type: "int",
    meta: "N",
    help: "dsee: entries of the sparse update S per targeted matrix (default 16)",
    min: 1,
  },
  {
    name: "dsee-sparse-method",
    type: "string",
    meta: "M",
    help: "dsee: how S's entries are chosen on the pretrained W: omp (largest |W|, default), rp (random), grebsmo (low-rank + sparse split)",
    choices: ["omp", "rp", "grebsmo"],
  },
  { name: "dsee-sparse-seed", type: "int", meta: "S", help: "dsee: seed of the rp draw and of GreBsmo's start (default 0)", min: 0 },
  { name: "dsee-grebsmo-outer", type: "int", meta: "N", help: "dsee: GreBsmo's outer iterations, rank +5 each (default 100)", min: 1 },
  {
    name: "dsee-prune-ratio",
    type: "number",
    meta: "R",
    help: "dsee: after --dsee-prune-at steps, prune this share of the other linear weights (k, o, FFN) by |W|, then re-tune LoRA + S on the pruned base (default 0.2 once any --dsee-prune flag is given)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "dsee-ad-prune-ratio",
    type: "number",
    meta: "R",
    help: "dsee: share of the adapted weights (q, v) pruned by the update's magnitude |s·(B·A + S)| (default 0.2 once any --dsee-prune flag is given)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "dsee-prune-at",
    type: "int",
    meta: "N",
    help: "dsee: the step after which the base is pruned; phase 2 re-tunes for the rest of --max-steps (default: half)",
    min: 1,
  },
  { name: "id3-budget", type: "int", meta: "B", help: "id3: entries unmasked over the run (default: --density of all parameters)", min: 1 },
  {
    name: "id3-max-steps",
    type: "int",
    meta: "T",
    help: "id3: steps the budget is spread over (default: --max-steps, else the run's steps)",
    min: 1,
  },
  { name: "id3-eps", type: "number", meta: "E", help: "id3: ε of the score |g| / (ε + |θ|)^μ (default 1e-3)", exclusiveMin: 0 },
  { name: "id3-exp", type: "number", meta: "M", help: "id3: μ of the score |g| / (ε + |θ|)^μ (default 0)", min: 0 },
  {
    name: "v-ratio",
    type: "number",
    meta: "R",
    help: "s2ft: share of all (layer, KV group) pairs whose v_proj output rows train (default 0; with no --?-ratio given: o 0.052, d 0.02)",
    min: 0,
    max: 1,
  },
  {
    name: "o-ratio",
    type: "number",
    meta: "R",
    help: "s2ft: share of all (layer, KV group) pairs whose o_proj input columns train (default 0.052 when no ratio is given)",
    min: 0,
    max: 1,
  },
  {
    name: "u-ratio",
    type: "number",
    meta: "R",
    help: "s2ft: share of all (layer, FFN channel) pairs whose up_proj output rows train (default 0)",
    min: 0,
    max: 1,
  },
  {
    name: "d-ratio",
    type: "number",
    meta: "R",
    help: "s2ft: share of all (layer, FFN channel) pairs whose down_proj input columns train (default 0.02 when no ratio is given)",
    min: 0,
    max: 1,
  },
  {
    name: "estimation-steps",
    type: "int",
    meta: "N",
    help: "light_peft: steps of the estimation phase (LoRA + head/neuron masks); the pruned phase 2 takes the rest of --max-steps (default: a fifth, at least 2)",
    min: 1,
  },
  { name: "mask-l1", type: "number", meta: "C", help: "light_peft: L1 coefficient on the head and neuron masks (default 1e-4)", min: 0 },
  {
    name: "attn-mask-lr-mult",
    type: "number",
    meta: "M",
    help: "light_peft: learning rate of the head masks as a multiple of --lr (default 100; the authors' shipped scripts ran 1)",
    exclusiveMin: 0,
  },
  {
    name: "ffn-mask-lr-mult",
    type: "number",
    meta: "M",
    help: "light_peft: learning rate of the FFN neuron masks as a multiple of --lr (default 50; the shipped scripts ran 1)",
    exclusiveMin: 0,
  },
  {
    name: "attn-pruning-ratio",
    type: "number",
    meta: "R",
    help: "light_peft: share of attention heads pruned per layer, in whole KV groups (default 1/3)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "ffn-pruning-ratio",
    type: "number",
    meta: "R",
    help: "light_peft: share of FFN neurons pruned per layer (default 1/3)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "module-pruning-ratio",
    type: "number",
    meta: "R",
    help: "light_peft: share of LoRA modules removed, least important first (default 0.75)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "rank-pruning-ratio",
    type: "number",
    meta: "R",
    help: "light_peft: share of the kept modules' LoRA ranks removed, least important first (default 0.5)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "save-pruned-model",
    type: "boolean",
    help: "light_peft: also write the pruned base model as a model folder, OUTPUT/pruned_model",
  },
  { name: "loca-n-frequency", type: "int", meta: "B", help: "loca: spectrum coefficients per layer (n_frequency, default 1000)", min: 1 },
  { name: "loca-scale", type: "number", meta: "A", help: "loca: scale α of ΔW = α·iDCT2(S) (default 1)", exclusiveMin: 0 },
  {
    name: "loca-location-iter",
    type: "int",
    meta: "N",
    help: "loca: steps during which locations may train (learn_location_iter; default 10% of the steps; 0 = never)",
    min: 0,
  },
  {
    name: "loca-location-lr-ratio",
    type: "number",
    meta: "R",
    help: "loca: the locations' learning rate as a share of --lr (default 0.02: the authors' 1e-4 against 5e-3)",
    exclusiveMin: 0,
  },
  { name: "loca-cycle", type: "list", meta: "A,L", help: "loca: steps of coefficient and of location training per cycle (default 10,20)" },
  {
    name: "snell-sparsity",
    type: "number",
    meta: "S",
    help: "snell: share of each layer's |ΔW| entries set to zero (default 0.5; 0 = dense kernelised LoRA)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "snell-mode",
    type: "string",
    help: 'snell/snella: kept entries times their magnitude ("magnitude", the authors\' code) or as they are ("mask", the paper)',
    choices: ["magnitude", "mask"],
  },
  {
    name: "snella-init-ratio",
    type: "number",
    meta: "S",
    help: "snella: every layer's sparsity before the allocator (default 0.01)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "snella-target-ratio",
    type: "number",
    meta: "S",
    help: "snella: the average sparsity the budget ends at (default 0.9)",
    min: 0,
    exclusiveMax: 1,
  },
  { name: "snella-init-warmup", type: "int", meta: "N", help: "snella: steps at the initial budget (default 0)", min: 0 },
  { name: "snella-final-warmup", type: "int", meta: "N", help: "snella: final steps at the target budget (default 0)", min: 0 },
  { name: "snella-mask-interval", type: "int", meta: "N", help: "snella: steps between re-allocations (default 1)", min: 1 },
  { name: "lisa-layers", type: "int", meta: "N", help: "lisa: γ, transformer layers trained at a time", default: 2, min: 1 },
  { name: "lisa-interval", type: "int", meta: "K", help: "lisa: steps between re-draws of the layers", default: 20, min: 1 },
  {
    name: "hft-stage-steps",
    type: "int",
    meta: "N",
    help: "hft: steps per stage, a new half each stage (0 = one stage)",
    default: 0,
    min: 0,
  },
  {
    name: "ist-update-fraction",
    type: "number",
    meta: "F",
    help: "ist: share of the layers whose adapters each step updates, drawn with weights σ(−score) (default 0.25)",
    exclusiveMin: 0,
    max: 1,
  },
  {
    name: "ist-suppress-fraction",
    type: "number",
    meta: "F",
    help: "ist: share of the layers suppressed in each trial of an importance round (default 0.5)",
    exclusiveMin: 0,
    max: 1,
  },
  {
    name: "ist-suppress-factor",
    type: "number",
    meta: "X",
    help: "ist: factor on a suppressed layer's adapter output (default 0.25)",
    min: 0,
  },
  { name: "ist-interval", type: "int", meta: "N", help: "ist: steps between importance rounds (default 10)", min: 1 },
  { name: "ist-trials", type: "int", meta: "N", help: "ist: suppression trials per importance round (default 3)", min: 1 },
  { name: "ist-score-lr", type: "number", meta: "X", help: "ist: step size of the layer-score update (default 10)", min: 0 },
  {
    name: "ist-batch-size",
    type: "int",
    meta: "N",
    help: "ist: examples per importance batch, from the training data (default 16)",
    min: 1,
  },
  { name: "poly-n-skills", type: "int", meta: "N", help: "poly: skills (LoRAs) per layer (n_skills, default 4)", min: 1 },
  { name: "poly-n-splits", type: "int", meta: "N", help: "poly: splits per skill (n_splits; 1 = Poly, > 1 = MHR; default 1)", min: 1 },
  {
    name: "poly-n-tasks",
    type: "int",
    meta: "N",
    help: "poly: rows of the routing table (n_tasks; default: the tasks of the data's task field, 1 without one)",
    min: 1,
  },
  {
    name: "poly-finetune",
    type: "string",
    help: "poly: what trains: full (skills and routers), z (MHR-z: routers only) or mu (MHR-μ: the averaged skills as one LoRA); z and mu need --poly-from",
    choices: POLY_FINETUNES,
  },
  { name: "poly-from", type: "string", meta: "DIR", help: "poly: a trained POLY adapter whose skills the run starts from" },
  {
    name: "poly-router-lr",
    type: "number",
    meta: "LR",
    help: "poly: the routing logits' own peak learning rate (mttl's module_logits_learning_rate; default: --lr)",
    exclusiveMin: 0,
  },
  {
    name: "gradnorm-update-gap",
    type: "int",
    meta: "T",
    help: "gradnorm_lorp: steps between projector refreshes (SVD of the gradient; GaLore's update_proj_gap)",
    default: 200,
    min: 1,
  },
  {
    name: "gradnorm-scale",
    type: "number",
    meta: "A",
    help: "gradnorm_lorp: α, scale of the projected-back update",
    default: 1,
    exclusiveMin: 0,
  },
  {
    name: "gradnorm-compat",
    type: "string",
    meta: "NAME",
    help: "gradnorm_lorp: reproduce a released optimizer instead of the paper's form (authors-2025-01: LowRankWeightNormAdamW.step)",
    choices: ["authors-2025-01"],
  },
  {
    name: "gradnorm-svd",
    type: "string",
    meta: "KIND",
    help: "gradnorm_lorp: the projector's truncated SVD",
    default: "randomized",
    choices: ["randomized", "exact"],
  },
  { name: "output-dir", type: "string", meta: "DIR", help: "where the adapter, checkpoints and metrics go", required: true },
  {
    name: "epochs",
    type: "number",
    meta: "N",
    help: "passes over the data (ignored when --max-steps is smaller)",
    default: 1,
    exclusiveMin: 0,
  },
  { name: "max-steps", type: "int", meta: "N", help: "stop after N optimizer steps", min: 1 },
  {
    name: "max-seconds",
    type: "number",
    meta: "S",
    help: "stop training after S seconds and save the adapter (the schedule still spans all steps)",
    exclusiveMin: 0,
  },
  { name: "batch-size", type: "int", meta: "N", help: "examples per micro-batch", default: 8, min: 1 },
  { name: "grad-accum", type: "int", meta: "N", help: "micro-batches per optimizer step", default: 1, min: 1 },
  { name: "lr", type: "number", meta: "LR", help: "peak learning rate", default: 2e-4, exclusiveMin: 0 },
  {
    name: "schedule",
    type: "string",
    help: "learning-rate schedule (default linear; mezo, sparse_mezo: constant, as the authors' scripts)",
    choices: ["constant", "linear", "cosine"],
  },
  {
    name: "zo-over",
    type: "string",
    meta: "METHOD",
    help: "mezo, sparse_mezo: train this adapter method's trainable tensors (lora, prompt, prefix, ...; its own flags apply) instead of the model's weights",
    choices: [...METHODS],
  },
  {
    name: "zo-eps",
    type: "number",
    meta: "EPS",
    help: "mezo, sparse_mezo: perturbation scale ε (the authors: 1e-3 full weights and LoRA, 1e-1 prefix)",
    default: 1e-3,
    exclusiveMin: 0,
  },
  {
    name: "zo-sparsity",
    type: "number",
    meta: "S",
    help: "sparse_mezo: share of each tensor's entries left unperturbed; the smallest-magnitude 1−S move (default 0.75)",
    min: 0,
    exclusiveMax: 1,
  },
  {
    name: "zo-split",
    type: "boolean",
    help: "mezo, sparse_mezo: run the two forwards as two runs of a one-forward graph: less memory (SmolLM2-135M: 0.87× inference instead of 1.08×) and faster session creation, about a fifth more time per step",
  },
  { name: "warmup", type: "number", meta: "N", help: "warmup steps (>= 1) or fraction of all steps (< 1)", default: 0, min: 0 },
  { name: "optimizer", type: "string", help: "optimizer", default: "adamw", choices: ["adamw", "sgd"] },
  { name: "weight-decay", type: "number", meta: "W", help: "weight decay", default: 0, min: 0 },
  { name: "clip-norm", type: "number", meta: "N", help: "clip the global gradient norm (0 = off)", default: 1, min: 0 },
  { name: "seed", type: "int", meta: "S", help: "seed for initialisation, shuffling and dropout", default: 42, min: 0 },
  { name: "save-steps", type: "int", meta: "N", help: "checkpoint every N steps (0 = only at the end)", default: 100, min: 0 },
  { name: "save-total-limit", type: "int", meta: "N", help: "keep at most N checkpoints (0 = keep all)", default: 2, min: 0 },
  { name: "eval-steps", type: "int", meta: "N", help: "evaluate every N steps (default: at the end)", min: 1 },
  { name: "early-stopping-patience", type: "int", meta: "N", help: "stop after N evaluations without a better eval loss", min: 1 },
  { name: "log-steps", type: "int", meta: "N", help: "log line every N steps when not on a terminal", default: 10, min: 1 },
  { name: "resume", type: "boolean", help: "continue from the newest checkpoint in --output-dir" },
  {
    name: "gradient-checkpointing",
    type: "boolean",
    help: "recompute each layer's activations in the backward pass: less memory, about a third more compute",
  },
];

/**
 * LoRA-SB's default η: the learning rate of the first optimizer step, --lr / warm-up steps (the
 * authors' lr / (warmup_ratio · total_steps)). A warm-up fraction counts steps of --max-steps;
 * with --epochs and a fraction the step count is not known yet, and η = --lr.
 */
function firstStepLr(o: Flags): number {
  const lr = o.lr as number;
  const w = o.warmup as number;
  const steps = w >= 1 ? w : o.maxSteps !== undefined ? Math.round(w * (o.maxSteps as number)) : 0;
  return lr / Math.max(1, steps);
}

/** --loca-cycle A,L → [A, L] (A ≥ 1 coefficient steps, L ≥ 0 location steps). */
function locaCycle(v: string[] | undefined): [number, number] | undefined {
  if (!v) return undefined;
  const n = v.map(Number);
  if (n.length !== 2 || !Number.isInteger(n[0]) || !Number.isInteger(n[1]) || n[0] < 1 || n[1] < 0)
    throw new UsageError(`--loca-cycle: want two integers A,L with A >= 1 and L >= 0, got "${v.join(",")}"`);
  return [n[0], n[1]];
}

/** --soka-factors M,N → [M, N]. */
function sokaFactors(v: string[] | undefined): [number, number] | undefined {
  if (!v) return undefined;
  const n = v.map(Number);
  if (n.length !== 2 || !n.every((x) => Number.isInteger(x) && x >= 1))
    throw new UsageError(`--soka-factors: want two positive integers M,N, got "${v.join(",")}"`);
  return [n[0], n[1]];
}

/** --layers-to-transform 0,2 → [0, 2]. */
function layerIndices(v: string[] | undefined): number[] | undefined {
  if (!v) return undefined;
  const n = v.map(Number);
  if (!n.length || !n.every((x) => Number.isInteger(x) && x >= 0))
    throw new UsageError(`--layers-to-transform: want non-negative layer indices, got "${v.join(",")}"`);
  return n;
}

export const trainCommand: CommandSpec = {
  name: "train",
  summary: "Fine-tune a model with a PEFT method on your data; writes an HF PEFT adapter folder.",
  usage: "peftkit train --model DIR --data FILE --method lora --output-dir DIR [options]",
  flags: TRAIN_FLAGS,
  examples: [
    "peftkit train --model models/wordnet-llama --data data.jsonl --method lora --r 16 --target all-linear --output-dir runs/lora --epochs 2",
    "peftkit train --config train.yaml --lr 1e-4",
  ],
  async run(o) {
    // Numeric ranges were checked by parseFlags from the flags' bounds.
    const ef = o.evalFraction as number;
    const modelDir = requireDir(o.model as string, "--model");
    const zo = (ZO_METHODS as readonly string[]).includes(o.method as string);
    o.schedule ??= zo ? "constant" : "linear";
    if (!zo)
      for (const [f, flag] of [
        ["zoOver", "zo-over"],
        ["zoSparsity", "zo-sparsity"],
        ["zoSplit", "zo-split"],
      ] as const)
        if (o[f] !== undefined && o[f] !== false) throw new UsageError(`--${flag} is for --method mezo or sparse_mezo, not ${o.method}`);
    // The adapter method: the one ZO trains with --zo-over.
    const adapterMethod = zo ? ((o.zoOver as string | undefined) ?? null) : (o.method as string);
    // Prompt/prefix soft tokens take positions too (in the sequence, or shifting the real ones).
    const soft = adapterMethod === "prompt" || adapterMethod === "prefix" ? (o.numVirtualTokens as number) : 0;
    o.maxLength = effectiveMaxLength(modelDir, o.maxLength as number | undefined, soft);
    if (!existsSync(o.data as string)) throw new UsageError(`--data ${o.data}: no such file or folder`);
    if (o.evalData && !existsSync(o.evalData as string)) throw new UsageError(`--eval-data ${o.evalData}: no such file or folder`);
    if (o.calibrationData && !existsSync(o.calibrationData as string))
      throw new UsageError(`--calibration-data ${o.calibrationData}: no such file or folder`);
    if (!existsSync(join(modelDir, "tokenizer.json"))) throw new UsageError(`--model ${modelDir}: no tokenizer.json`);
    if ((SELECTIVE_METHODS as readonly string[]).includes(o.method as string))
      return (await import("./train-selective.js")).trainSelective(o, modelDir);
    if (zo && adapterMethod === null) return (await import("./train-zo.js")).trainZo(o, modelDir, null);
    let peftConfig: Record<string, unknown>;
    try {
      peftConfig = methodConfig(adapterMethod as string, {
        r: o.r as number | undefined,
        alpha: o.alpha as number | undefined,
        dropout: o.dropout as number,
        target: o.target as string[] | undefined,
        layersToTransform: layerIndices(o.layersToTransform as string[] | undefined),
        numVirtualTokens: o.numVirtualTokens as number,
        bottleneckSize: o.bottleneckSize as number,
        adapterType: o.adapterType as "houlsby",
        sokaFactors: sokaFactors(o.sokaFactors as string[] | undefined),
        // The authors' η is the first optimizer step's learning rate (lr / warm-up steps).
        loraSbEta: (o.loraSbEta as number | undefined) ?? firstStepLr(o),
        loraSbNiter: o.loraSbNiter as number | undefined,
        applyGs: o.applyGs as boolean | undefined,
        projectionPrngKey: o.projectionPrngKey as number,
        dInitial: o.dInitial as number,
        saveProjection: o.saveProjection as boolean,
        cordaMethod: o.cordaMethod as "ipm" | "kpm",
        blockSize: o.blockSize as number | undefined,
        butterflyFactor: o.butterflyFactor as number,
        cayley: o.cayley as "neumann" | "exact",
        coftEps: o.coftEps as number | undefined,
        blockShare: o.blockShare as boolean | undefined,
        rankDropout: o.rankDropout as number,
        moduleDropout: o.moduleDropout as number,
        decomposeBoth: o.decomposeBoth as boolean | undefined,
        decomposeFactor: o.decomposeFactor as number,
        rankDropoutScale: o.rankDropoutScale as boolean | undefined,
        energyThreshold: o.energyThreshold as number | undefined,
        kasaBeta: o.kasaBeta as number | undefined,
        kasaGamma: o.kasaGamma as number | undefined,
        targetR: o.targetR as number | undefined,
        initR: o.initR as number | undefined,
        tinit: o.tinit as number | undefined,
        tfinal: o.tfinal as number | undefined,
        deltaT: o.deltaT as number | undefined,
        beta1: o.beta1 as number | undefined,
        beta2: o.beta2 as number | undefined,
        orthRegWeight: o.orthRegWeight as number | undefined,
        totalStep: o.totalStep as number | undefined,
        initWarmup: o.initWarmup as number | undefined,
        increInterval: o.increInterval as number | undefined,
        topH: o.topH as number | undefined,
        increRankNum: o.increRankNum as number | undefined,
        maxRank: o.maxRank as number | undefined,
        advanceLearn: o.noAdvanceLearn ? false : undefined,
        nFrequency: o.nFrequency as number,
        fourierScaling: o.fourierScaling as number,
        randomLocSeed: o.randomLocSeed as number,
        triadaptGrowth: o.triadaptGrowth as "linear" | "non-linear" | undefined,
        pegoLoras: o.pegoLoras as number | undefined,
        pegoLambda: o.pegoLambda as number | undefined,
        ggpoSigma: o.ggpoSigma as number | undefined,
        ggpoBeta: o.ggpoBeta as number | undefined,
        locaNFrequency: o.locaNFrequency as number | undefined,
        locaScale: o.locaScale as number | undefined,
        locaLocationIter: o.locaLocationIter as number | undefined,
        locaLocationLrRatio: o.locaLocationLrRatio as number | undefined,
        locaCycle: locaCycle(o.locaCycle as string[] | undefined),
        snellSparsity: o.snellSparsity as number | undefined,
        snellMode: o.snellMode as "magnitude" | "mask" | undefined,
        snellaInitRatio: o.snellaInitRatio as number | undefined,
        snellaTargetRatio: o.snellaTargetRatio as number | undefined,
        snellaInitWarmup: o.snellaInitWarmup as number | undefined,
        snellaFinalWarmup: o.snellaFinalWarmup as number | undefined,
        snellaMaskInterval: o.snellaMaskInterval as number | undefined,
        density: o.density as number | undefined,
        numTunableWeights: o.numTunableWeights as number | undefined,
        reselectionSteps: o.reselectionSteps as number | undefined,
        selectionAccumulationSteps: o.selectionAccumulationSteps as number | undefined,
        initialReselectionRate: o.initialReselectionRate as number | undefined,
        sptAlpha: o.sptAlpha as number | undefined,
        saraThreshold: o.saraThreshold as number | undefined,
        saraProgressiveIter: o.saraProgressiveIter as number | undefined,
        saraLambdaRank: o.saraLambdaRank as number | undefined,
        id3Budget: o.id3Budget as number | undefined,
        id3MaxSteps: (o.id3MaxSteps ?? o.maxSteps) as number | undefined,
        id3Eps: o.id3Eps as number | undefined,
        id3Exp: o.id3Exp as number | undefined,
        patKeepDim: o.patKeepDim as number | undefined,
        patScheduleSteps: o.patScheduleSteps as number | undefined,
        patHsmRank: o.patHsmRank as number | undefined,
        ramtThreshold: o.ramtThreshold as number | undefined,
        ramtMaskScale: o.ramtMaskScale as number | undefined,
        ramtMaskLossWeight: o.ramtMaskLossWeight as number | undefined,
        ramtLambda: o.ramtLambda as number | undefined,
        ramtTemperature: o.ramtTemperature as number | undefined,
        ramtSaveScores: o.ramtSaveScores === true ? true : undefined,
        lowbitBits: o.lowbitBits === undefined ? undefined : Number(o.lowbitBits),
        lowbitCodebook: o.lowbitCodebook as "lloyd-max" | "authors" | undefined,
        lowbitScale: o.lowbitScale as number | undefined,
        lowbitSaveLatent: o.lowbitSaveLatent === true ? true : undefined,
        dseeNumSparse: o.dseeNumSparse as number | undefined,
        dseeSparseMethod: o.dseeSparseMethod as "omp" | "rp" | "grebsmo" | undefined,
        dseeSparseSeed: o.dseeSparseSeed as number | undefined,
        dseeGrebsmoOuter: o.dseeGrebsmoOuter as number | undefined,
        s2ftRatios:
          o.method === "s2ft"
            ? {
                v: o.vRatio as number | undefined,
                o: o.oRatio as number | undefined,
                u: o.uRatio as number | undefined,
                d: o.dRatio as number | undefined,
              }
            : undefined,
        s2ftSeed: o.seed as number,
        lightPeft: {
          maskL1: o.maskL1 as number | undefined,
          attnMaskLrMult: o.attnMaskLrMult as number | undefined,
          ffnMaskLrMult: o.ffnMaskLrMult as number | undefined,
          attnPruningRatio: o.attnPruningRatio as number | undefined,
          ffnPruningRatio: o.ffnPruningRatio as number | undefined,
          modulePruningRatio: o.modulePruningRatio as number | undefined,
          rankPruningRatio: o.rankPruningRatio as number | undefined,
        },
        istUpdateFraction: o.istUpdateFraction as number | undefined,
        istSuppressFraction: o.istSuppressFraction as number | undefined,
        istSuppressFactor: o.istSuppressFactor as number | undefined,
        istInterval: o.istInterval as number | undefined,
        istTrials: o.istTrials as number | undefined,
        istScoreLr: o.istScoreLr as number | undefined,
        istBatchSize: o.istBatchSize as number | undefined,
        istSeed: o.seed as number,
        polyNSkills: o.polyNSkills as number | undefined,
        polyNSplits: o.polyNSplits as number | undefined,
      });
    } catch (e) {
      if (e instanceof MethodError) throw new UsageError(e.message);
      throw e;
    }
    if (zo) return (await import("./train-zo.js")).trainZo(o, modelDir, peftConfig);
    const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
    const loadOpts = {
      tokenizer,
      format: o.format as DataFormat | undefined,
      maxLength: o.maxLength as number,
      onBadRecord: o.onBadRecord as "error" | "skip",
    };
    const data = await loadDataset(o.data as string, loadOpts);
    for (const m of data.skipped) process.stderr.write(`skipped ${m}\n`);
    if (data.skipped.length) process.stderr.write(`skipped ${data.skipped.length} bad record(s) in ${o.data}\n`);
    const task = FORMAT_TASKS[data.format];
    const classification = task.head !== "causal_lm";
    if (classification && o.pack)
      throw new UsageError(`--pack concatenates language-modelling examples; ${o.data} holds ${data.format} records`);
    // (Token) classification: the classes, from the data and the base model's config.json (see train/data/labels.ts).
    let labels: LabelConfig | undefined;
    let examples = data.examples;
    let modelLabels: LabelConfig | null = null;
    if (classification) {
      const configPath = join(modelDir, "config.json");
      modelLabels = parseLabelFields(loadConfig(modelDir), configPath);
      const chosen = trainingLabels(data, modelLabels, configPath);
      ({ labels, examples } = chosen);
      if (chosen.warning) process.stderr.write(`warning: ${chosen.warning}\n`);
    }
    let train: Example[] = examples;
    let evalSet: Example[] = [];
    if (o.evalData) {
      // The eval file's labels go through the training classes: unknown names and ids out of range are errors.
      const ev = await loadDataset(o.evalData as string, { ...loadOpts, format: data.format, labels: labels?.names });
      evalSet = ev.examples;
    } else if (ef > 0 && examples.length >= 20) ({ train, eval: evalSet } = splitDataset(examples, ef, o.seed as number));
    if (classification) peftConfig.task_type = task.taskType;
    const polyFlags = ["polyNSkills", "polyNSplits", "polyNTasks", "polyFinetune", "polyFrom", "polyRouterLr"].filter(
      (f) => o[f] !== undefined,
    );
    let poly: PolyRun | undefined;
    if (o.method === "poly") {
      if (o.pack) throw new UsageError("--pack puts several examples in one row; --method poly routes each row by its task");
      if (o.polyFrom !== undefined) requireDir(o.polyFrom as string, "--poly-from");
      try {
        poly = preparePolyRun(
          peftConfig,
          {
            finetune: (o.polyFinetune as PolyFinetune | undefined) ?? "full",
            from: o.polyFrom as string | undefined,
            nTasks: o.polyNTasks as number | undefined,
            routerLr: o.polyRouterLr as number | undefined,
            lr: o.lr as number,
          },
          train,
          evalSet,
        );
      } catch (e) {
        if (e instanceof TrainingArgsError) throw new UsageError(e.message);
        throw e;
      }
      peftConfig = poly.peftConfig;
      if (classification) peftConfig.task_type = task.taskType;
    } else if (polyFlags.length)
      throw new UsageError(`--${polyFlags[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is for --method poly, not ${o.method}`);
    let model: PreTrainedModel;
    try {
      model = await PreTrainedModel.load(modelDir, task.head, {
        threads: o.threads as number | undefined,
        numLabels: labels?.names.length,
      });
    } catch (e) {
      if (labels && modelLabels && modelLabels.names.length !== labels.names.length && e instanceof Error)
        e.message += `\n(${modelDir}/config.json declares ${modelLabels.names.length} labels and the data has ${labels.names.length}: a pretrained classification head of another size cannot be reused)`;
      throw e;
    }
    if (classification && !peftConfig.modules_to_save)
      peftConfig.modules_to_save = ["classifier", "score"].filter((m) => [...model.weights.keys()].some((k) => k.startsWith(`${m}.`)));
    // Data-aware initialisation (CorDA): the statistics the method asks for, before the adapter exists.
    const request = calibrationRequest(model, peftConfig);
    let calibration: CalibrationStats | undefined;
    if (request) {
      if (!o.calibrationData)
        throw new UsageError(
          `--method ${o.method} initialises from data: give --calibration-data FILE (e.g. the training file, ${o.data})`,
        );
      o.calibrationSamples ??= CALIBRATION_SAMPLES[o.method as MethodName] ?? 256;
      try {
        calibration = await calibrateFromFile(model, request, {
          file: o.calibrationData as string,
          samples: o.calibrationSamples as number,
          batchSize: o.batchSize as number,
          tokenizer,
          maxLength: o.maxLength as number,
          onBadRecord: o.onBadRecord as "error" | "skip",
          ...(classification ? { format: data.format, labels: labels?.names } : {}),
          log: (line) => process.stdout.write(`${line}\n`),
        });
      } catch (e) {
        if (e instanceof CalibrationDataError) throw new UsageError(`--calibration-data ${e.message}`);
        throw e;
      }
    } else if (o.calibrationData)
      process.stderr.write(`warning: --method ${o.method} needs no calibration; --calibration-data is ignored\n`);
    const record = {
      ...o,
      data_format: data.format,
      train_examples: train.length,
      eval_examples: evalSet.length,
      label_names: labels?.names ?? null,
      peft_config: peftConfig,
    };
    let stopping = false;
    let current: Trainer | null = null;
    let fullSteps: number | undefined;
    if (o.method === "lt_sft") {
      if (o.maxSteps === undefined)
        throw new UsageError("--method lt_sft needs --max-steps (phase 1 takes --full-steps of them, phase 2 the rest)");
      fullSteps = (o.fullSteps as number | undefined) ?? Math.max(1, Math.floor((o.maxSteps as number) / 2));
      if (fullSteps >= (o.maxSteps as number))
        throw new UsageError(`--full-steps ${fullSteps} must be below --max-steps ${o.maxSteps} (lt_sft: phase 2 takes the rest)`);
    } else if (o.fullSteps !== undefined) throw new UsageError(`--full-steps is for --method lt_sft, not ${o.method}`);
    let estimationSteps: number | undefined;
    if (o.method === "light_peft") {
      if (o.maxSteps === undefined)
        throw new UsageError("--method light_peft needs --max-steps (the estimation takes --estimation-steps of them, phase 2 the rest)");
      estimationSteps = (o.estimationSteps as number | undefined) ?? defaultEstimationSteps(o.maxSteps as number);
      if (estimationSteps >= (o.maxSteps as number))
        throw new UsageError(
          `--estimation-steps ${estimationSteps} must be below --max-steps ${o.maxSteps} (light_peft: phase 2 takes the rest)`,
        );
    } else if (o.estimationSteps !== undefined || o.savePrunedModel)
      throw new UsageError(
        `--${o.estimationSteps !== undefined ? "estimation-steps" : "save-pruned-model"} is for --method light_peft, not ${o.method}`,
      );
    if (o.lowbitExportDequantized && o.method !== "lowbit")
      throw new UsageError(`--lowbit-export-dequantized is for --method lowbit, not ${o.method}`);
    let dseePrune: { pruneAt: number; pruningRatio: number; adPruningRatio: number } | undefined;
    const dseeFlags = ["dseePruneRatio", "dseeAdPruneRatio", "dseePruneAt"].filter((f) => o[f] !== undefined);
    if (dseeFlags.length > 0) {
      const flag = `--${dseeFlags[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      if (o.method !== "dsee") throw new UsageError(`${flag} is for --method dsee, not ${o.method}`);
      if (o.maxSteps === undefined)
        throw new UsageError(`${flag} needs --max-steps (dsee: phase 1 takes --dsee-prune-at of them, the pruned phase 2 the rest)`);
      const pruneAt = (o.dseePruneAt as number | undefined) ?? defaultPruneAt(o.maxSteps as number);
      if (pruneAt >= (o.maxSteps as number))
        throw new UsageError(`--dsee-prune-at ${pruneAt} must be below --max-steps ${o.maxSteps} (dsee: phase 2 takes the rest)`);
      dseePrune = {
        pruneAt,
        pruningRatio: (o.dseePruneRatio as number | undefined) ?? 0.2,
        adPruningRatio: (o.dseeAdPruneRatio as number | undefined) ?? 0.2,
      };
    }
    const runOptions: RunOptions = {
      outputDir: o.outputDir as string,
      model,
      tokenizer,
      peftConfig,
      calibration,
      train,
      eval: evalSet,
      batchSize: o.batchSize as number,
      pack: Boolean(o.pack),
      seqLen: o.maxLength as number,
      epochs: o.maxSteps !== undefined ? undefined : (o.epochs as number),
      maxSteps: o.maxSteps as number | undefined,
      maxSeconds: o.maxSeconds as number | undefined,
      gradAccum: o.gradAccum as number,
      lr: o.lr as number,
      schedule: o.schedule as ScheduleName,
      warmup: o.warmup as number,
      optimizer: o.optimizer as "adamw" | "sgd",
      weightDecay: o.weightDecay as number,
      clipNorm: (o.clipNorm as number) > 0 ? (o.clipNorm as number) : undefined,
      seed: o.seed as number,
      saveSteps: (o.saveSteps as number) || undefined,
      saveTotalLimit: o.saveTotalLimit as number,
      evalSteps: (o.evalSteps as number | undefined) ?? (evalSet.length ? Number.MAX_SAFE_INTEGER : undefined),
      earlyStoppingPatience: o.earlyStoppingPatience as number | undefined,
      logSteps: o.logSteps as number,
      resume: Boolean(o.resume),
      gradientCheckpointing: Boolean(o.gradientCheckpointing),
      exactMatchLimit: data.format === "prompt_completion" || data.format === "chat" ? 200 : 0,
      labels,
      record,
      ...(poly ? { taskTable: poly.taskTable, freeze: poly.freeze, lrScale: poly.lrScale, prepareAdapter: poly.prepareAdapter } : {}),
      exportDequantized: Boolean(o.lowbitExportDequantized),
      // Called once per run (lt_sft: once per phase); one handler stops whichever is training.
      onTrainer: (t) => {
        const first = current === null;
        current = t;
        if (!first) return;
        process.on("SIGINT", () => {
          if (stopping) process.exit(130);
          stopping = true;
          process.stderr.write("\ninterrupt: finishing this step and saving a checkpoint (press Ctrl-C again to quit at once)\n");
          current?.requestStop();
        });
      },
    };
    const summary = dseePrune
      ? await runDseePrune({ ...runOptions, ...dseePrune, maxSteps: o.maxSteps as number })
      : estimationSteps !== undefined
        ? await runLightPeft({
            ...runOptions,
            estimationSteps,
            maxSteps: o.maxSteps as number,
            savePrunedModel: Boolean(o.savePrunedModel),
          })
        : fullSteps === undefined
          ? await runTraining(runOptions)
          : await runLtSft({
              ...runOptions,
              fullSteps,
              maxSteps: o.maxSteps as number,
              density: (o.density as number | undefined) ?? 0.01,
              numEntries: o.numTunableWeights as number | undefined,
            });
    await model.release();
    // An interrupted run is not a success (its checkpoint is resumable); the spec reserves 2 for bad usage.
    return summary.stoppedBy === "interrupted" ? 1 : 0;
  },
};
