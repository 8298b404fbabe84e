/** `peftkit demo`: until the embedded language model lands, an engine demo on two spirals. */
import { createMlpTrainer, initMlp, mlpAccuracy, twoSpirals } from "../examples/spirals.js";

export async function runEngineDemo(opts: { steps: number; threads: number }): Promise<void> {
  const train = twoSpirals(200);
  const heldOut = twoSpirals(200);
  const params = initMlp(64);
  const before = await mlpAccuracy(params, heldOut);
  const t0 = performance.now();
  const step = await createMlpTrainer(params, { threads: opts.threads });
  const compileMs = performance.now() - t0;
  console.log(`two spirals, MLP 2-64-64-2, AdamW in one ONNX Runtime session (compiled in ${compileMs.toFixed(0)} ms)`);
  console.log(`held-out accuracy before training: ${(before * 100).toFixed(1)}%`);
  const t1 = performance.now();
  for (let i = 1; i <= opts.steps; i++) {
    const r = await step.step(train, { lr: i <= (opts.steps * 2) / 3 ? 0.01 : 0.003 });
    if (i % 250 === 0 || i === opts.steps)
      console.log(`step ${String(i).padStart(5)}  loss ${r.loss.toFixed(4)}  grad-norm ${r.gradNorm.toFixed(3)}`);
  }
  const secs = (performance.now() - t1) / 1000;
  const after = await mlpAccuracy(step.getParams(), heldOut);
  console.log(`held-out accuracy after ${opts.steps} steps: ${(after * 100).toFixed(1)}%  (${(opts.steps / secs).toFixed(0)} steps/s)`);
}
