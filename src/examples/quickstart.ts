import { AutoModelForCausalLM, AutoTokenizer, getPeftModel, PeftModel, PeftTrainer } from "peftkit";

const model = await AutoModelForCausalLM.fromPretrained("models/wordnet-llama");
const tok = await AutoTokenizer.fromPretrained("models/wordnet-llama");

const peft = getPeftModel(model, { peftType: "LORA", taskType: "CAUSAL_LM", r: 8, loraAlpha: 16, targetModules: "all-linear" });
peft.printTrainableParameters(); // trainable params: 147,968 || all params: 4,098,816 || trainable%: 3.6100

const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw", weightDecay: 0.01 }, clipNorm: 1 });
const ids = [tok.encode("a poodle is a kind of dog")];
for (let step = 1; step <= 5; step++) {
  const { loss } = await trainer.train({ inputIds: ids, labels: ids }, { lr: 5e-3 }); // one compiled step
  console.log(`step ${step}: loss ${loss.toFixed(3)}`);
}
await trainer.release();

peft.savePretrained("runs/quickstart"); // adapter_config.json + adapter_model.safetensors
const base = await AutoModelForCausalLM.fromPretrained("models/wordnet-llama");
const merged = PeftModel.fromPretrained(base, "runs/quickstart").mergeAndUnload({ safeMerge: true }); // W + (α/r)·B·A
const [out] = await merged.generate([tok.encode("a poodle is a kind of")], { maxNewTokens: 3 });
console.log(tok.decode(out));
