import assert from "node:assert/strict";
import { test } from "node:test";
import { EvalLabelError, type EvalModel, evaluate } from "./evaluate.js";

test("a class id past the model's logits is an error, not a NaN loss", async () => {
  const model: EvalModel = {
    forward: async () => ({ logits: { shape: [2, 2], data: new Float32Array([1, 0, 0, 1]) } }),
    generate: async () => [],
  };
  const batch = (labels: number[]) => ({ inputIds: [[1], [2]], attentionMask: [[1], [1]], labels: labels.map((l) => [l]) });
  const ok = await evaluate(model, [batch([0, 1])], { causal: false, classification: true });
  assert.equal(ok.eval_accuracy, 1);
  assert.ok(Math.abs(ok.eval_loss - Math.log(1 + Math.exp(-1))) < 1e-6);
  await assert.rejects(
    evaluate(model, [batch([0, 5])], { causal: false, classification: true }),
    (e: Error) => e instanceof EvalLabelError && /label 5 is out of range for the model's 2 classes/.test(e.message),
  );
});
