/**
 * Measures one training step (forward + backward + AdamW, ONNX Runtime) of LoHa and LoKr against
 * LoRA at about the same trainable-parameter count. Not a test; run after building:
 *   node dist/src/tuners/lycoris/step-time.js [MODEL_DIR] [THREADS] [NAME_FILTER]
 * (default models/wordnet-llama, 1 thread). Prints the fastest and the median of 15 steps after 3
 * warm-up steps (on a shared machine the fastest is the steadier figure).
 */
import { AutoModelForCausalLM } from "../../models/auto.js";
import { Rng } from "../../util/rng.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";

const CONFIGS: Record<string, Record<string, unknown>> = {
  "lora r=8": { peftType: "LORA", r: 8, loraAlpha: 16, targetModules: "all-linear" },
  // On models/wordnet-llama LoHa r=4 takes the factored (rank r²) path on every layer, r=16 the
  // dense ΔW path (r²·(in + out) ≥ in·out); on the tiny golden models both are dense.
  "loha r=4": { peftType: "LOHA", r: 4, alpha: 4, targetModules: "all-linear" },
  "lora r=32": { peftType: "LORA", r: 32, loraAlpha: 64, targetModules: "all-linear" },
  "loha r=16": { peftType: "LOHA", r: 16, alpha: 16, targetModules: "all-linear" },
  "lora r=1": { peftType: "LORA", r: 1, loraAlpha: 2, targetModules: "all-linear" },
  "lokr r=8 (full factors)": { peftType: "LOKR", r: 8, alpha: 8, targetModules: "all-linear" },
  "lokr r=2 decompose_both": { peftType: "LOKR", r: 2, alpha: 2, decomposeBoth: true, targetModules: "all-linear" },
};

async function main(): Promise<void> {
  const dir = process.argv[2] ?? "models/wordnet-llama";
  const threads = Number(process.argv[3] ?? 1);
  const rng = new Rng(7);
  let ids: number[][] | null = null;
  const only = process.argv[4] ?? "";
  for (const [name, cfg] of Object.entries(CONFIGS)) {
    if (!name.includes(only)) continue;
    const model = await AutoModelForCausalLM.fromPretrained(dir, { threads });
    const vocab = Math.min(1000, Number(model.config.vocab_size ?? 1000)) - 3;
    ids ??= Array.from({ length: 8 }, () => Array.from({ length: 64 }, () => 3 + Math.floor((rng.next() * vocab) | 0)));
    const peft = PeftModel.create(model, cfg, { seed: 1 });
    let params = 0;
    for (const t of peft.adapter("default").tensors.values()) params += t.data.length;
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const times: number[] = [];
    for (let s = 0; s < 18; s++) {
      const t0 = performance.now();
      await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-4 });
      if (s >= 3) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const ms = (v: number) => v.toFixed(1).padStart(7);
    console.log(`${name.padEnd(48)} ${String(params).padStart(7)} params  min ${ms(times[0])} ms  median ${ms(times[7])} ms per step`);
    await trainer.release();
    await model.release();
  }
}

await main();
