/**
 * DoRA's adapter gradients against PyTorch autograd (test/golden/peft/dora_llama, written by
 * scripts/goldens/make_peft_goldens.py: our PyTorch re-implementation of PEFT's DoraLinearLayer, with
 * the norm ‖W + s·B·A‖ detached as PEFT and the DoRA paper §4.3 prescribe). The script checks that
 * differentiating through the norm would change every A/B gradient by more than 0.1%.
 */
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { valueAndGrad } from "../../engine/autodiff/grad.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import type { HostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { type ForwardContext, WeightContext } from "../../nn/context.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { PeftModel } from "../peft-model.js";

function relError(got: HostTensor, want: HostTensor): number {
  const g = got.data as Float64Array;
  const w = want.data as Float32Array;
  assert.equal(g.length, w.length);
  let d = 0;
  let n = 0;
  for (let i = 0; i < g.length; i++) {
    d += (g[i] - w[i]) ** 2;
    n += w[i] ** 2;
  }
  return Math.sqrt(d / n);
}

test("DoRA: gradients of every A, B and magnitude equal PyTorch autograd's with the norm detached (dora_llama golden)", async () => {
  const dir = resolve(REPO_ROOT, "test/golden/peft/dora_llama");
  const golden = readSafetensors(join(dir, "golden.safetensors")).tensors;
  const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
  try {
    const peft = PeftModel.fromPretrained(model, dir);
    const a = peft.adapter("default");
    const keys = [...a.tensors.keys()];
    const weightNames = [...model.weights.keys()];
    const inputs: HostTensor[] = [
      ...keys.map((k) => a.tensors.get(k) as HostTensor),
      ...weightNames.map((n) => model.weights.get(n) as HostTensor),
      golden.input_ids,
      golden.attention_mask,
      golden.grad_cotangent,
    ];
    const off = keys.length;
    const loss = (...xs: Tensor[]) => {
      const w = new Map(weightNames.map((n, i) => [n, xs[off + i]]));
      const [ids, mask, cot] = xs.slice(off + weightNames.length);
      const tensor = (k: string) => xs[keys.indexOf(k)];
      let ctx: ForwardContext = new WeightContext((n) => w.get(n), new Set(weightNames));
      ctx = a.tuner.wrap(ctx, peft.info, a.config, { adapterName: "default", tensor, rowMask: null, training: false, seed: null });
      const out = model.traceForward(ctx, { input_ids: ids, attention_mask: mask });
      return (out.logits as Tensor).mul(cot).sum();
    };
    const graph = trace(
      (...xs) =>
        valueAndGrad(
          loss,
          keys.map((_, i) => i),
        )(...xs)[1],
      inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })),
    );
    const grads = interpret(graph, inputs, { precision: "f64" });
    const errors = keys.map((k, i) => {
      const want = golden[`grad.base_model.model.${k}`];
      assert.ok(want, `golden has no gradient for ${k}`);
      return [k, relError(grads[i], want)] as const;
    });
    assert.equal(errors.length, Object.keys(golden).filter((k) => k.startsWith("grad.base_model.")).length);
    const bad = errors.filter(([, e]) => !(e < 1e-5)).map(([k, e]) => `${k}: ${e.toExponential(2)}`);
    assert.deepEqual(bad, [], "relative errors ‖ours − torch‖ / ‖torch‖ above 1e-5");
  } finally {
    await model.release();
  }
});
