import assert from "node:assert/strict";
import { resolve } from "node:path";
import { test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { trace } from "../../engine/trace/trace.js";
import { readSafetensors } from "../../io/safetensors.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { maxDiff } from "../ia3/testing.js";
import { parsePolyConfig } from "./config.js";
import { polyMix, polyRouterWeights } from "./index.js";

// scripts/goldens/make_poly_goldens.py: HF PEFT's PolyRouter.forward and poly Linear.forward
// re-derived in torch from their source (float64); the training case uses torch's own
// RelaxedBernoulli(T = 1).rsample() with its uniforms saved.
const { tensors } = readSafetensors(resolve(REPO_ROOT, "test/golden/poly/golden.safetensors"));
const f64 = (k: string) => tensors[k].data as Float64Array;

for (const name of ["poly", "mhr"]) {
  for (const mode of ["eval", "train"] as const) {
    test(`POLY's routing mixes the skills as PEFT does (${name}, ${mode}; torch golden, f64)`, () => {
      const [nTasks, q, s, r, din, dout] = Array.from(f64(`${name}.dims`));
      const c = parsePolyConfig({ peft_type: "POLY", r, n_tasks: nTasks, n_skills: s, n_splits: q }, "golden");
      const layer = { path: "l", key: "l", inFeatures: din, outFeatures: dout };
      const x = tensors[`${name}.x`];
      const ids = Array.from(f64(`${name}.task_ids`));
      const taskIds = hostTensor("i32", [ids.length], Int32Array.from(ids));
      const inputs: HostTensor[] = [
        tensors[`${name}.module_logits`],
        taskIds,
        tensors[`${name}.poly_lora_A`],
        tensors[`${name}.poly_lora_B`],
        x,
        tensors[`${name}.u`],
      ];
      const g = trace(
        (logits, t, a, b, xx, u) => {
          const w = polyRouterWeights(logits, t, q, s, mode === "train" ? u : null);
          return { w, delta: polyMix(xx, a, b, w, layer, c) };
        },
        inputs.map((h) => ({ dtype: h.dtype, shape: h.shape })),
      );
      const [w, delta] = interpret(g, inputs, { precision: "f64" });
      const dw = maxDiff(w.data as Float64Array, f64(`${name}.w_${mode}`));
      const dd = maxDiff(delta.data as Float64Array, f64(`${name}.delta_${mode}`));
      assert.ok(dw < 1e-12, `weights: ${dw}`);
      assert.ok(dd < 1e-12, `delta: ${dd}`);
    });
  }
}
