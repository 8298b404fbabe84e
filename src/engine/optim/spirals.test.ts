import assert from "node:assert/strict";
import { test } from "node:test";
import { createMlpTrainer, initMlp, mlpAccuracy, twoSpirals } from "../../examples/spirals.js";

test("a 2-hidden-layer MLP trained with the compiled AdamW step fits two spirals (>= 98%)", async () => {
  const train = twoSpirals(200);
  const step = await createMlpTrainer(initMlp(64));
  let last = Number.NaN;
  for (let i = 0; i < 1500; i++) {
    last = (await step.step(train, { lr: i < 1000 ? 0.01 : 0.003 })).loss;
  }
  // Fresh points from the same distribution: the model must have learned the spirals, not the noise.
  const acc = await mlpAccuracy(step.getParams(), twoSpirals(200));
  assert.ok(acc >= 0.98, `held-out accuracy ${acc} (final train loss ${last})`);
});
