/**
 * Cost of SNELL's in-graph threshold: ms per training step on the embedded wordnet-llama
 * (hidden 256, MLP 688, 4 layers, all linear layers targeted) for
 *   dense    the kernel matrix without sparsification (SNELL at ratio 0, the authors' KLoRA)
 *   static   SNELL at ratio 0.5: threshold by in-graph bisection (kernel.ts orderStatistics)
 *   static9  SNELL at ratio 0.9
 *   dynamic  SNELLA: the same bisection at the fed ratio
 *   lora     LoRA r = 8, for scale
 * Run: npx tsc -p tsconfig.json && node dist/bench/snell-threshold.js [steps]
 */
import { join } from "node:path";
import { AutoModelForCausalLM } from "../src/models/auto.js";
import { PeftModel } from "../src/tuners/peft-model.js";
import { PeftTrainer } from "../src/tuners/train.js";
import { PACKAGE_ROOT } from "../src/util/paths.js";

const steps = Number(process.argv[2] ?? 10);
const CONFIGS: Record<string, Record<string, unknown>> = {
  dense: { peft_type: "SNELL", r: 8, sparsity_ratio: 0, target_modules: "all-linear" },
  static: { peft_type: "SNELL", r: 8, sparsity_ratio: 0.5, target_modules: "all-linear" },
  static9: { peft_type: "SNELL", r: 8, sparsity_ratio: 0.9, target_modules: "all-linear" },
  dynamic: { peft_type: "SNELLA", r: 8, target_modules: "all-linear" },
  lora: { peft_type: "LORA", r: 8, lora_alpha: 16, target_modules: "all-linear" },
};

const ids = Array.from({ length: 8 }, (_, b) => Array.from({ length: 32 }, (_, t) => 2 + ((b * 131 + t * 17) % 4000)));
for (const [name, config] of Object.entries(CONFIGS)) {
  const model = await AutoModelForCausalLM.fromPretrained(join(PACKAGE_ROOT, "models/wordnet-llama"));
  const peft = PeftModel.create(model, config, { seed: 1 });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: steps + 2 });
  await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 });
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-3 });
  const ms = (performance.now() - t0) / steps;
  console.log(`${name.padEnd(8)} ${ms.toFixed(1)} ms/step`);
  await trainer.release();
  await model.release();
}
