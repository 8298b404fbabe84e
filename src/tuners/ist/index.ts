/**
 * IST, Importance-aware Sparse Tuning (Yao et al., "Layer-wise Importance Matters: Less Memory for
 * Better Performance in PEFT of LLMs", Findings of EMNLP 2024; catalog §6.2, seed #34): a LoRA adapter of which
 * each step updates only the modules of a sampled quarter of the transformer layers, favouring
 * the layers whose suppression hurts the loss most (controller.ts). Authors' code:
 * antgroup/importance-aware-sparse-tuning-IST-paper, ist.py (ISTCallback).
 *
 * Everything but training is LoRA's (forward, merge, mixed batches): the tuner is LORA with IST's
 * config and controller, and the saved folder is a plain PEFT LoRA one (peft_type "LORA").
 */
import { LORA } from "../lora/index.js";
import type { Tuner } from "../tuner.js";
import { type IstConfig, istConfigJson, parseIstConfig } from "./config.js";
import { IstController } from "./controller.js";

export const IST: Tuner<IstConfig> = {
  peftType: "IST",
  parseConfig: parseIstConfig,
  toJson: istConfigJson,
  // PEFT's default (or Gaussian) init only: parseIstConfig refuses the inits that edit the base.
  create: (info, c, rng, opts) => ({ tensors: LORA.create(info, c, rng, opts).tensors }),
  expectedTensors: LORA.expectedTensors,
  wrap: LORA.wrap,
  merge: LORA.merge,
  supportsMixedBatch: true,
  controller: (info, c) => new IstController(info, c),
};
