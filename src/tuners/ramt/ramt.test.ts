import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { backward } from "../../engine/autodiff/grad.js";
import { onesLike } from "../../engine/autodiff/rules.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { reduceSeed, uniformAt } from "../../engine/ir/random.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { SafetensorsFile } from "../../io/safetensors.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { fullFinetuneGradient } from "../increlora/testing.js";
import type { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { parseRamtConfig, type RamtConfig } from "./config.js";
import { DISTILL_TERM, maskKey, RAMT, RamtContext, ramtTargets, scoresKey } from "./index.js";
import { gradientDropout, keepProbability, packMask, straightThroughMask, unpackMask } from "./mask.js";

const CONFIG = { peft_type: "RAMT" };
const TAU = 5e-3;

/** The STE's gradient is the derivative of the mask linearised at the current scores: M₀ + (S − S₀). */
function linearised(
  base: import("../../nn/context.js").ForwardContext,
  tensor: (k: string) => Tensor,
  a: { info: PeftModel["info"]; config: unknown; tensors: ReadonlyMap<string, HostTensor> },
) {
  const c = a.config as RamtConfig;
  return new RamtContext(
    base,
    ramtTargets(a.info, c),
    c,
    { adapterName: "default", tensor, rowMask: null, training: false, seed: null },
    (t, s) => {
      const s0 = a.tensors.get(scoresKey(t)) as HostTensor;
      const shift = Float64Array.from(s0.data as Float32Array, (v) => (v > c.threshold ? 1 : 0) - v);
      return s.add(constant(hostTensor("f64", [...s0.shape], shift)).cast(s.dtype));
    },
  );
}

for (const model of ["llama_basic", "gpt2", "bert_seq_cls"] as const) {
  runConformance({
    name: `RAMT on ${model}`,
    model,
    identityConfig: CONFIG,
    // Random scores (about a quarter of the entries off); the folder holds the scores themselves.
    config: { ...CONFIG, init_weights: false, save_scores: true },
    referenceWrap: linearised,
  });
}
