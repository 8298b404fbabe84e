/**
 * The README's worked example: load a model, attach LoRA, train a step, save, reload, merge.
 * Run it with `npm run build && node dist/src/examples/quickstart.js [modelDir] [outDir]`.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AutoModelForCausalLM, AutoTokenizer, getPeftModel, PeftModel, PeftTrainer } from "../index.js";

export async function quickstart(modelDir: string, outDir: string): Promise<{ before: number; after: number; mergedMatches: boolean }> {
  // 1. Load a Hugging Face checkpoint folder and its tokenizer.
  const model = await AutoModelForCausalLM.fromPretrained(modelDir);
  const tok = await AutoTokenizer.fromPretrained(modelDir);

  // 2. Attach a LoRA adapter (keys may be camelCase or PEFT's snake_case).
  const peft = getPeftModel(model, { peftType: "LORA", taskType: "CAUSAL_LM", r: 8, loraAlpha: 16, targetModules: "all-linear" });
  peft.printTrainableParameters();

  // 3. Train: one compiled step (forward, backward, AdamW) per call; only the adapter changes.
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw", weightDecay: 0.01 }, clipNorm: 1 });
  const ids = [tok.encode("a poodle is a kind of dog")];
  let before = Number.NaN;
  let after = Number.NaN;
  for (let step = 0; step < 20; step++) {
    const { loss } = await trainer.train({ inputIds: ids, labels: ids }, { lr: 5e-3 });
    if (step === 0) before = loss;
    after = loss;
  }
  await trainer.release();

  // 4. Save in HF PEFT's format (adapter_config.json + adapter_model.safetensors) and reload it.
  peft.savePretrained(outDir);
  const fresh = await AutoModelForCausalLM.fromPretrained(modelDir);
  const reloaded = PeftModel.fromPretrained(fresh, outDir);
  const a = (await reloaded.forward({ inputIds: ids })).logits?.data as Float32Array;

  // 5. Merge the adapter into the weights: a plain model again, with the same outputs.
  const merged = reloaded.mergeAndUnload({ safeMerge: true });
  const b = (await merged.forward({ inputIds: ids })).logits?.data as Float32Array;
  const mergedMatches = a.every((v, i) => Math.abs(v - b[i]) < 1e-4);
  await model.release();
  await fresh.release();
  return { before, after, mergedMatches };
}

const entry = process.argv[1] ?? "";
if (entry.endsWith("quickstart.js")) {
  const modelDir = process.argv[2] ?? "models/wordnet-llama";
  const outDir = process.argv[3] ?? mkdtempSync(join(tmpdir(), "peftkit-quickstart-"));
  quickstart(modelDir, outDir).then((r) =>
    console.log(`loss ${r.before.toFixed(3)} → ${r.after.toFixed(3)}; adapter in ${outDir}; merged = unmerged: ${r.mergedMatches}`),
  );
}
