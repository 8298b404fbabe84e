/** Test helper: an independent ∂L/∂W of one base weight, for checking IncreLoRA's score probe. */
import type { HostTensor } from "../../engine/ir/host.js";
import { type TensorDecl, TrainStep } from "../../engine/optim/train-step.js";
import { crossEntropy } from "../../engine/trace/composites.js";
import { constant } from "../../engine/trace/tensor.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import { WeightContext } from "../../nn/context.js";
import type { PeftModel } from "../peft-model.js";
import { prepareBatch, stepBatchDecls, stepModelInputs } from "../train.js";

/**
 * The gradient of the mean next-token loss with respect to the base weight `name`, with the
 * active adapter applied by its inference forward: a training step whose only parameter is that
 * weight (the adapter's tensors enter as constants), so nothing of the probe path is involved.
 */
export async function fullFinetuneGradient(model: PreTrainedModel, peft: PeftModel, name: string, ids: number[][]): Promise<Float32Array> {
  const a = peft.adapter(peft.activeAdapters[0]);
  const w = model.weights.get(name) as HostTensor;
  const params: Record<string, TensorDecl> = { w: { dtype: w.dtype, shape: w.shape } };
  const step = await TrainStep.create(
    {
      params,
      batch: stepBatchDecls(model.head, false),
      optimizer: { kind: "sgd" },
      gradientOutputs: ["w"],
      loss: ({ params: p, batch }) => {
        const names = new Set(model.weights.keys());
        const base = new WeightContext((n) => (n === name ? p.w : constant(model.weights.get(n) as HostTensor)), names);
        const ctx = a.tuner.wrap(base, peft.info, a.config, {
          adapterName: a.name,
          tensor: (k) => constant(a.tensors.get(k) as HostTensor),
          rowMask: null,
          training: false,
          seed: null,
        });
        const out = model.traceForward(ctx, stepModelInputs(batch));
        return crossEntropy(out.logits as NonNullable<typeof out.logits>, batch.labels, { ignoreIndex: -100 });
      },
    },
    { params: { w } },
  );
  await step.step(prepareBatch(model.head, { inputIds: ids, labels: ids }), { lr: 0 });
  const g = step.getGradients().w.data as Float32Array;
  await step.release();
  return g;
}
