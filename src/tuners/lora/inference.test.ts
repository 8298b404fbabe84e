/** LoRA's fused inference path: host-prepared stacked A and block-diagonal B. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { loadTestModel, maxAbsDiff, randomIds } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { blockDiagonalB, stackedScaledA } from "./inference.js";

test("stacked s·A and block-diagonal B, written out by hand", () => {
  const a1 = hostTensor("f32", [2, 3], [1, 2, 3, 4, 5, 6]);
  const b1 = hostTensor("f32", [2, 2], [1, 2, 3, 4]);
  const a2 = hostTensor("f32", [1, 3], [7, 8, 9]);
  const b2 = hostTensor("f32", [1, 1], [5]);
  // The middle layer has no LoRA: no rows in A, zero rows (4 of them) in B.
  const sites = [{ a: a1, b: b1, scaling: 2 }, null, { a: a2, b: b2, scaling: 0.5 }];
  const a = stackedScaledA(sites, 3);
  assert.deepEqual(a.shape, [3, 3]);
  assert.deepEqual(Array.from(a.data as Float32Array), [2, 4, 6, 8, 10, 12, 3.5, 4, 4.5]);
  const b = blockDiagonalB(sites, [2, 4, 1]);
  assert.deepEqual(b.shape, [7, 3]);
  // prettier-ignore
  assert.deepEqual(Array.from(b.data as Float32Array), [1, 2, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
});

async function logitsOf(peft: PeftModel, ids: number[][]): Promise<Float32Array> {
  const out = await peft.forward({ inputIds: ids });
  return out.logits?.data as Float32Array;
}

test("fused LoRA inference equals the merged weights, follows replaced tensors, and survives re-adding an adapter", async () => {
  const model = await loadTestModel("llama_gqa_tied");
  const config = {
    peft_type: "LORA",
    r: 4,
    lora_alpha: 8,
    target_modules: ["q_proj", "v_proj", "gate_proj", "o_proj"],
    rank_pattern: { v_proj: 2 },
    init_lora_weights: false,
  };
  const peft = PeftModel.create(model, config, { seed: 3 });
  const ids = randomIds(2, 5, model.config.vocab_size as number);
  const viaMerge = async () => {
    peft.mergeAdapter();
    const out = await logitsOf(peft, ids);
    peft.unmergeAdapter();
    return out;
  };
  const base = await peft.disableAdapter(() => logitsOf(peft, ids));
  const fused = await logitsOf(peft, ids);
  assert.ok(
    [...model.derivedInputs.keys()].some((k) => k.includes("fused:")),
    "the forward should take the fused path",
  );
  assert.ok(maxAbsDiff(fused, base) > 1e-3, "the adapter should change the output");
  assert.ok(maxAbsDiff(fused, await viaMerge()) <= 1e-4);

  // Training writes new tensors back with setAdapterTensors: the prepared forms must follow.
  const tripled = new Map<string, HostTensor>();
  for (const [k, t] of peft.adapter("default").tensors) {
    if (k.includes("lora_B"))
      tripled.set(
        k,
        hostTensor(
          "f32",
          t.shape,
          Float32Array.from(t.data as Float32Array, (v) => 3 * v),
        ),
      );
  }
  peft.setAdapterTensors("default", tripled);
  const fused3 = await logitsOf(peft, ids);
  assert.ok(maxAbsDiff(fused3, fused) > 1e-3, "replaced tensors should change the output");
  assert.ok(maxAbsDiff(fused3, await viaMerge()) <= 1e-4);

  // A new adapter under the old name, with other ranks: no stale graph or prepared tensor is used.
  peft.deleteAdapter("default");
  peft.addAdapter("default", { ...config, r: 2, rank_pattern: {} }, { seed: 9 });
  peft.setAdapter("default");
  const again = await logitsOf(peft, ids);
  assert.ok(maxAbsDiff(again, await viaMerge()) <= 1e-4);
  await model.release();
});

test("fused LoRA inference on qwen2 (stacked q/k/v biases) and on a batch mixing adapters equals the merged weights", async () => {
  const model = await loadTestModel("qwen2");
  const config = { peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: "all-linear", init_lora_weights: false };
  const peft = PeftModel.create(model, config, { seed: 5 });
  peft.addAdapter("other", { ...config, r: 2 }, { seed: 6 });
  const ids = randomIds(3, 4, model.config.vocab_size as number);
  const fused = await logitsOf(peft, ids);
  assert.ok(
    [...model.derivedInputs.keys()].some((k) => k.includes("fused:")),
    "the forward should take the fused path",
  );
  const mixed = (await peft.forward({ inputIds: ids, adapterNames: ["default", "other", "__base__"] })).logits?.data as Float32Array;
  peft.mergeAdapter();
  const merged = await logitsOf(peft, ids);
  peft.unmergeAdapter();
  assert.ok(maxAbsDiff(fused, merged) <= 1e-4);
  // Row 0 of the mixed batch used "default": it matches the merged model's row 0.
  const row = merged.length / 3;
  assert.ok(maxAbsDiff(mixed.subarray(0, row), merged.subarray(0, row)) <= 1e-4);
  const base = await peft.disableAdapter(() => logitsOf(peft, ids));
  assert.ok(maxAbsDiff(mixed.subarray(2 * row), base.subarray(2 * row)) <= 1e-4);
  assert.ok(maxAbsDiff(mixed.subarray(row, 2 * row), merged.subarray(row, 2 * row)) > 1e-4, "row 1 used the other adapter");
  await model.release();
});
