import assert from "node:assert/strict";
import { test } from "node:test";
import { EvalLabelError, type EvalModel, evaluate, macroF1 } from "./evaluate.js";

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

test("macro-F1: the mean of per-class F1 over classes labelled or predicted", () => {
  // Class 0: tp 2, labelled 3, predicted 2 → F1 4/5. Class 1: tp 1, labelled 1, predicted 2 → 2/3.
  // Class 2: predicted once, never labelled → 0.
  const pairs: [number, number][] = [
    [0, 0],
    [0, 0],
    [0, 1],
    [1, 1],
    [3, 2],
  ];
  // Class 3: labelled once, never predicted → 0.
  assert.ok(Math.abs(macroF1(pairs) - (4 / 5 + 2 / 3 + 0 + 0) / 4) < 1e-12);
  assert.equal(macroF1([]), 0);
  assert.equal(
    macroF1([
      [1, 1],
      [2, 2],
    ]),
    1,
  );
});

test("token classification: token accuracy and macro-F1 over labelled tokens only", async () => {
  // One row of 4 tokens, 3 classes; argmax per token: 0, 1, 2, 1.
  const logits = new Float32Array([5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 5, 0]);
  const model: EvalModel = {
    forward: async () => ({ logits: { shape: [1, 4, 3], data: logits } }),
    generate: async () => [],
  };
  // Token 0 is [CLS] (-100); tags: 1 (hit), 2 (hit), 2 (miss: predicted 1).
  const batch = { inputIds: [[1, 2, 3, 4]], attentionMask: [[1, 1, 1, 1]], labels: [[-100, 1, 2, 2]] };
  const m = await evaluate(model, [batch], { causal: false, classification: false, tokenClassification: true });
  assert.equal(m.eval_tokens, 3);
  assert.equal(m.eval_token_accuracy, 2 / 3);
  assert.equal(m.eval_accuracy, undefined);
  // Class 1: tp 1, labelled 1, predicted 2 → 2/3; class 2: tp 1, labelled 2, predicted 1 → 2/3.
  assert.ok(Math.abs(m.eval_macro_f1! - 2 / 3) < 1e-12);
  const nll = (z: number[], t: number) => Math.log(z.reduce((s, x) => s + Math.exp(x), 0)) - z[t];
  const want = (nll([0, 5, 0], 1) + nll([0, 0, 5], 2) + nll([0, 5, 0], 2)) / 3;
  assert.ok(Math.abs(m.eval_loss - want) < 1e-5);
});

test("soft-token logits in front (prompt tuning) are skipped: the same metrics as without them", async () => {
  // Real logits for 3 positions over 4 entries, and the same preceded by 2 soft-token positions.
  const real = [2, 0, 0, 1, 0, 3, 0, 0, 0, 0, 1, 4];
  const soft = [9, 0, 0, 0, 0, 0, 0, 9];
  const fake = (data: number[], t: number): EvalModel => ({
    forward: async () => ({ logits: { shape: [1, t, 4], data: new Float32Array(data) } }),
    generate: async () => [],
  });
  const batch = { inputIds: [[5, 6, 7]], attentionMask: [[1, 1, 1]], labels: [[0, 1, 3]] };
  for (const opts of [
    { causal: true, classification: false },
    { causal: false, classification: false, tokenClassification: true },
  ]) {
    const plain = await evaluate(fake(real, 3), [batch], opts);
    const prompted = await evaluate(fake([...soft, ...real], 5), [batch], opts);
    assert.deepEqual(prompted, plain);
    assert.equal(plain.eval_tokens, opts.causal ? 2 : 3);
  }
});

test("token classification with BIO class names: span precision, recall and F1 over labelled positions", async () => {
  // Classes O=0, B=1, I=2. One row of 6 positions: [CLS], 4 words, a second sub-token (-100).
  // argmax per position: O, B, I, O, B, B.
  const z = (c: number) => [0, 1, 2].map((k) => (k === c ? 5 : 0));
  const logits = new Float32Array([0, 1, 2, 0, 1, 1].flatMap(z));
  const model: EvalModel = {
    forward: async () => ({ logits: { shape: [1, 6, 3], data: logits } }),
    generate: async () => [],
  };
  // Gold over the labelled positions 1-4: B I O B → spans 1-2, 4-4. Predicted: B I O B (position 5's B is
  // unlabelled, so not a span) → both right.
  const batch = { inputIds: [[1, 2, 3, 4, 5, 6]], attentionMask: [[1, 1, 1, 1, 1, 1]], labels: [[-100, 1, 2, 0, 1, -100]] };
  const opts = { causal: false, classification: false, tokenClassification: true };
  const m = await evaluate(model, [batch], { ...opts, labelNames: ["O", "B", "I"] });
  assert.deepEqual([m.eval_span_precision, m.eval_span_recall, m.eval_span_f1], [1, 1, 1]);
  // Gold B O O B (spans 1-1, 4-4); predicted B I O B (1-2, 4-4): P = R = F1 = 1/2.
  const half = await evaluate(model, [{ ...batch, labels: [[-100, 1, 0, 0, 1, -100]] }], { ...opts, labelNames: ["O", "B", "I"] });
  assert.deepEqual([half.eval_span_precision, half.eval_span_recall, half.eval_span_f1], [0.5, 0.5, 0.5]);
  // Names that are not BIO tags, or none: no span metrics.
  for (const labelNames of [["NOUN", "VERB", "ADJ"], undefined]) {
    const other = await evaluate(model, [batch], { ...opts, labelNames });
    assert.equal(other.eval_span_f1, undefined);
    assert.equal(other.eval_token_accuracy, 1);
  }
});
