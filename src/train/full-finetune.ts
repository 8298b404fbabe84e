/**
 * Full fine-tuning (every weight trains): used to pretrain the embedded demo model and as the
 * reference point of the benchmarks. Same batch format as PeftTrainer.
 */
import type { CompileOptions } from "../engine/exec/backend.js";
import type { HostTensor } from "../engine/ir/host.js";
import type { OptimizerConfig } from "../engine/optim/optimizers.js";
import { type StepResult, type TensorDecl, TrainStep } from "../engine/optim/train-step.js";
import { crossEntropy } from "../engine/trace/composites.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { ModelError, WeightContext } from "../nn/context.js";
import { prepareBatch, stepBatchDecls, stepModelInputs, type TrainBatch } from "../tuners/train.js";

export class FullTrainer {
  /** Names of distinct weights (a tied weight trains once, under its first name). */
  private readonly aliases = new Map<string, string>();

  private constructor(
    private readonly model: PreTrainedModel,
    readonly step: TrainStep,
    aliases: Map<string, string>,
  ) {
    this.aliases = aliases;
  }

  static async create(
    model: PreTrainedModel,
    opts: {
      optimizer?: OptimizerConfig;
      clipNorm?: number;
      compile?: CompileOptions;
      gradientCheckpointing?: boolean;
      /** Which weights train (default all); the others enter the step as frozen inputs. Tied weights follow their first name. */
      trains?: (name: string) => boolean;
    } = {},
  ): Promise<FullTrainer> {
    const params: Record<string, TensorDecl> = {};
    const init: Record<string, HostTensor> = {};
    const frozen: Record<string, TensorDecl> = {};
    const frozenInit: Record<string, HostTensor> = {};
    const firstName = new Map<HostTensor, string>();
    const aliases = new Map<string, string>();
    for (const [k, t] of model.weights) {
      const first = firstName.get(t);
      if (first) {
        aliases.set(k, first);
        continue;
      }
      firstName.set(t, k);
      const trains = opts.trains?.(k) ?? true;
      (trains ? params : frozen)[k] = { dtype: t.dtype, shape: t.shape };
      (trains ? init : frozenInit)[k] = t;
    }
    const head = model.head;
    const step = await TrainStep.create(
      {
        params,
        frozen,
        batch: stepBatchDecls(head, model.usesTokenTypeIds),
        optimizer: opts.optimizer ?? { kind: "adamw" },
        clipNorm: opts.clipNorm,
        recompute: opts.gradientCheckpointing,
        loss: ({ params: p, frozen: f, batch }) => {
          const names = new Set(model.weights.keys());
          const ctx = new WeightContext((n) => p[aliases.get(n) ?? n] ?? f[aliases.get(n) ?? n], names);
          const out = model.traceForward(ctx, stepModelInputs(batch));
          if (!out.logits) throw new ModelError(`a ${head} model has no logits to train on`);
          return crossEntropy(out.logits, batch.labels);
        },
      },
      { params: init, frozen: frozenInit },
      { ...model.compileOptions, ...opts.compile },
    );
    return new FullTrainer(model, step, aliases);
  }

  /** One step; the model's weights are replaced by the updated ones. */
  async train(batch: TrainBatch, opts: { lr: number; seed?: number }): Promise<StepResult> {
    const res = await this.step.step(prepareBatch(this.model.head, batch, this.model.usesTokenTypeIds), opts);
    const p = this.step.getParams();
    for (const [k, t] of Object.entries(p)) this.model.weights.set(k, t);
    for (const [alias, first] of this.aliases) if (p[first]) this.model.weights.set(alias, p[first]);
    return res;
  }

  release(): Promise<void> {
    return this.step.release();
  }
}
