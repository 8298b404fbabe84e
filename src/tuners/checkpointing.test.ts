import assert from "node:assert/strict";
import { test } from "node:test";
import { loadTestModel, randomIds } from "./conformance.js";
import { PeftModel } from "./peft-model.js";
import { PeftTrainer } from "./train.js";

test("gradient checkpointing leaves LoRA training unchanged (llama and GPT-2, on ONNX Runtime)", async () => {
  for (const name of ["llama_basic", "gpt2"] as const) {
    const runs: Map<string, Float32Array>[] = [];
    const ids = randomIds(2, 6, 200);
    for (const gradientCheckpointing of [false, true]) {
      const model = await loadTestModel(name);
      const peft = PeftModel.create(model, { peftType: "LORA", r: 4, targetModules: "all-linear", initLoraWeights: false }, { seed: 3 });
      const trainer = await PeftTrainer.create(peft, { gradientCheckpointing });
      const n = trainer.step.graph.nodes.length;
      for (let i = 0; i < 2; i++) await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
      runs.push(new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, t.data as Float32Array])));
      if (gradientCheckpointing) assert.ok(n > 0);
      await trainer.release();
      await model.release();
    }
    for (const [k, a] of runs[0]) {
      const b = runs[1].get(k) as Float32Array;
      a.forEach((v, i) => {
        assert.ok(Math.abs(v - b[i]) < 1e-6, `${name} ${k}[${i}]: ${v} vs ${b[i]}`);
      });
    }
  }
});
