/**
 * Trainable-parameter counts of candidate configurations, for `--budgets params=N`: each method's
 * adapter is attached to the task's model (no training, no compile) and counted. A classification
 * head's modules_to_save is not counted: it adds the same to every method.
 */
import { headFor } from "../cli/load.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { methodConfig } from "../train/methods.js";
import { PeftConfigError } from "../tuners/config.js";
import { PeftModel, parsePeftConfig } from "../tuners/peft-model.js";
import { KNOB_CANDIDATES, type Knob, knobOf } from "./budgets.js";

/** Methods that share another's parameter shapes (PiSSA, CorDA and rsLoRA differ from LoRA only in init/scale). */
const SAME_COUNT_AS: Record<string, string> = { pissa: "lora", corda: "lora", rslora: "lora", mezo_lora: "lora" };

const KNOB_OPTION: Record<Knob, string> = { r: "r", tokens: "numVirtualTokens", bottleneck: "bottleneckSize" };

/**
 * Trainable parameters of a config on a model. Methods with frozen adapter tensors (trainable())
 * or a data-dependent initialisation (calibration(): LoRA-SB) are counted from their expected
 * tensor shapes, without creating them; the others by attaching the adapter.
 */
export function trainableCount(model: PreTrainedModel, config: Record<string, unknown>): number {
  const { tuner, config: c } = parsePeftConfig(config);
  if (!tuner.trainable && !tuner.calibration) {
    const peft = PeftModel.create(model, config);
    try {
      return peft.parameterCounts().trainable;
    } finally {
      peft.unload();
    }
  }
  const peft = new PeftModel(model);
  try {
    let n = 0;
    for (const [key, shape] of peft.expectedTensors(tuner, c))
      if (tuner.trainable?.(key, c as never) ?? true) n += shape.reduce((a, b) => a * b, 1);
    return n;
  } finally {
    peft.unload();
  }
}

export class ParamCounter {
  private readonly cache = new Map<string, { value: number; params: number }[]>();
  private readonly models = new Map<string, PreTrainedModel>();

  /** Counts of every candidate value of the method's knob on the model (empty for knob-less methods). */
  async candidates(modelDir: string, method: string): Promise<{ value: number; params: number }[]> {
    const knob = knobOf(method);
    if (knob === null) return [];
    const m = SAME_COUNT_AS[method] ?? method;
    const key = `${modelDir}\u0000${m}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    let model = this.models.get(modelDir);
    if (!model) {
      model = await PreTrainedModel.load(modelDir, headFor(modelDir));
      this.models.set(modelDir, model);
    }
    const out: { value: number; params: number }[] = [];
    for (const value of KNOB_CANDIDATES[knob]) {
      const config = methodConfig(m, { [KNOB_OPTION[knob]]: value, taskType: model.head === "causal_lm" ? "CAUSAL_LM" : "SEQ_CLS" });
      try {
        out.push({ value, params: trainableCount(model, config) });
      } catch (e) {
        // Ranks past what the model's layers allow (HUT, SoKA, LoRA-SB refuse them): stop there.
        if (e instanceof PeftConfigError && out.length) break;
        throw e;
      }
    }
    this.cache.set(key, out);
    return out;
  }

  async release(): Promise<void> {
    for (const m of this.models.values()) await m.release();
    this.models.clear();
  }
}
