/**
 * Trained biases in mixed-adapter batches: rows of a batch mixing adapters equal separate runs,
 * also where a bias is added to a rank-2 output (BERT's pooler, the classification head).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { ModelOutputTensor } from "../../models/pretrained.js";
import { loadTestModel, maxAbsDiff, randomIds } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

/** The adapter's bias tensors shifted by distinct amounts, so each adapter's biases differ from the base. */
function shiftBiases(peft: PeftModel, name: string, by: number): void {
  const out = new Map<string, HostTensor>();
  for (const [k, t] of peft.adapter(name).tensors) {
    if (!k.endsWith(".bias")) continue;
    out.set(
      k,
      hostTensor(
        "f32",
        t.shape,
        Float32Array.from(t.data as Float32Array, (v, i) => v + by * Math.sin(i + 1)),
      ),
    );
  }
  assert.ok(out.size > 0, `adapter ${name} has trained biases`);
  peft.setAdapterTensors(name, out);
}

test("LoRA with trained biases (bias all / lora_only) on BERT: rows of a mixed batch equal separate runs", async () => {
  const model = await loadTestModel("bert_seq_cls");
  const base = { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, lora_alpha: 4, init_lora_weights: false };
  // "default" trains every bias; "other" the biases of its targets, pooler.dense (a [B, out] output) among them.
  const peft = PeftModel.create(model, { ...base, target_modules: ["query", "value"], bias: "all" }, { seed: 1 });
  peft.addAdapter("other", { ...base, target_modules: ["key", "dense"], bias: "lora_only" }, { seed: 2 });
  assert.ok(
    [...peft.adapter("other").tensors.keys()].some((k) => k.includes("pooler.dense") && k.endsWith(".bias")),
    "other trains the pooler's bias",
  );
  shiftBiases(peft, "default", 0.3);
  shiftBiases(peft, "other", -0.2);
  const ids = randomIds(3, 5, model.config.vocab_size as number);
  const logits = async (inputs: Parameters<PeftModel["forward"]>[0]) => (await peft.forward(inputs)).logits as ModelOutputTensor;
  peft.setAdapter("default");
  const d = (await logits({ inputIds: ids })).data;
  peft.setAdapter("other");
  const o = (await logits({ inputIds: ids })).data;
  const b = (await peft.disableAdapter(() => logits({ inputIds: ids }))).data;
  const mixed = await logits({ inputIds: ids, adapterNames: ["default", "__base__", "other"] });
  assert.deepEqual(mixed.shape, [3, 3]);
  const m = mixed.data;
  const row = (x: Float32Array, r: number) => x.subarray(3 * r, 3 * r + 3);
  assert.ok(maxAbsDiff(row(m, 0), row(d, 0)) <= 1e-4, `row 0 (default): ${maxAbsDiff(row(m, 0), row(d, 0))}`);
  assert.ok(maxAbsDiff(row(m, 1), row(b, 1)) <= 1e-4, `row 1 (base): ${maxAbsDiff(row(m, 1), row(b, 1))}`);
  assert.ok(maxAbsDiff(row(m, 2), row(o, 2)) <= 1e-4, `row 2 (other): ${maxAbsDiff(row(m, 2), row(o, 2))}`);
  assert.ok(maxAbsDiff(d, b) > 1e-3 && maxAbsDiff(o, b) > 1e-3, "both adapters change the output");
  await model.release();
});

test("LoRA (bias all) beneath BitFit and LN tuning in one mixed batch: each row equals its own run", async () => {
  const model = await loadTestModel("bert_seq_cls");
  // The outer adapters take their bias change against a bias LoRA already mixed per row.
  const peft = PeftModel.create(
    model,
    { peft_type: "LORA", task_type: "SEQ_CLS", r: 2, lora_alpha: 4, init_lora_weights: false, target_modules: ["query"], bias: "all" },
    { seed: 3 },
  );
  shiftBiases(peft, "default", 0.3);
  peft.addAdapter("bit", { peftType: "BITFIT", targetModules: ["query", "dense"], initBitfitWeights: false }, { seed: 4 });
  peft.addAdapter("ln", { peftType: "LN_TUNING", targetModules: ["pooler.dense"], initLnTuningWeights: false }, { seed: 5 });
  const ids = randomIds(4, 5, model.config.vocab_size as number);
  const logits = async (inputs: Parameters<PeftModel["forward"]>[0]) => (await peft.forward(inputs)).logits as ModelOutputTensor;
  // Adapters stack in the order they first appear in the batch: LoRA innermost.
  const names = ["default", "bit", "ln", "__base__"];
  const single: Float32Array[] = [];
  for (const n of names) {
    if (n === "__base__") single.push((await peft.disableAdapter(() => logits({ inputIds: ids }))).data);
    else {
      peft.setAdapter(n);
      single.push((await logits({ inputIds: ids })).data);
    }
  }
  const mixed = await logits({ inputIds: ids, adapterNames: names });
  assert.deepEqual(mixed.shape, [4, 3]);
  names.forEach((n, r) => {
    const got = mixed.data.subarray(3 * r, 3 * r + 3);
    const want = single[r].subarray(3 * r, 3 * r + 3);
    assert.ok(maxAbsDiff(got, want) <= 1e-4, `row ${r} (${n}): ${maxAbsDiff(got, want)}`);
    if (n !== "__base__") assert.ok(maxAbsDiff(single[r], single[3]) > 1e-3, `${n} changes the output`);
  });
  await model.release();
});
