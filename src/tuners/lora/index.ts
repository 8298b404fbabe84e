/**
 * LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen linear
 * layer W gains a trainable low-rank update, y = W·x + s·B·A·dropout(x), with s = α/r (or α/√r
 * for rsLoRA). A starts Kaiming-uniform and B at zero, so training starts from the base model.
 * Also: DoRA (use_dora), PiSSA/OLoRA/CorDA initialisation, LoRA on embedding tables, trainable biases
 * (bias="all"/"lora_only"), and weighted combination of adapters (weighted.ts).
 */
import type { Tuner } from "../tuner.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "./config.js";
import { LoraContext } from "./context.js";
import { cordaCalibration } from "./corda.js";
import { createLora, expectedLoraTensors } from "./init.js";
import { mergeLora } from "./merge.js";

export { type LoraLayer, loraLayers } from "./layers.js";

export const LORA: Tuner<LoraConfig> = {
  peftType: "LORA",
  parseConfig: parseLoraConfig,
  toJson: loraConfigJson,
  create: createLora,
  calibration: cordaCalibration,
  expectedTensors: expectedLoraTensors,
  wrap: (base, info, c, opts) => new LoraContext(base, info, c, opts),
  merge: mergeLora,
  supportsMixedBatch: true,
};
