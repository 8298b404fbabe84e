import assert from "node:assert/strict";
import { test } from "node:test";
import { interpret } from "../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import { spec, trace } from "../engine/trace/trace.js";
import { WeightContext } from "../nn/context.js";
import { loadTestModel } from "./conformance.js";
import { layerSalt } from "./layer-seed.js";
import { PeftModel } from "./peft-model.js";

test("layer salts differ across layers and uses", () => {
  const keys = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.q_proj"];
  const salts = keys.flatMap((k) => [0, 1, 2, 3].map((u) => layerSalt(k, u)));
  assert.equal(new Set(salts).size, salts.length);
});

test("LoRA dropout draws a different mask in each layer (q and k share their input)", async () => {
  const model = await loadTestModel("llama_basic");
  const q = "model.layers.0.self_attn.q_proj";
  const k = "model.layers.0.self_attn.k_proj";
  const peft = PeftModel.create(model, {
    peftType: "LORA",
    r: 4,
    loraDropout: 0.5,
    initLoraWeights: false,
    targetModules: ["q_proj", "k_proj"],
  });
  const a = peft.adapter("default");
  // Same factors and a zero base weight in both layers: their outputs differ only by the dropout mask.
  const same = new Map<string, HostTensor>();
  for (const part of ["lora_A", "lora_B"]) same.set(`${k}.${part}.weight`, a.tensors.get(`${q}.${part}.weight`) as HostTensor);
  peft.setAdapterTensors("default", same);
  const keys = [...a.tensors.keys()];
  const hidden = 32;
  const g = trace(
    (x: Tensor, seed: Tensor, zero: Tensor, ...adapter: Tensor[]) => {
      const base = new WeightContext(() => zero, new Set([`${q}.weight`, `${k}.weight`]));
      const tensor = (key: string) => adapter[keys.indexOf(key)];
      const ctx = a.tuner.wrap(base, peft.info, a.config, { adapterName: "default", tensor, rowMask: null, training: true, seed });
      return [ctx.linear(q, x), ctx.linear(k, x)];
    },
    [
      spec("f32", [1, 3, hidden]),
      spec("i64", []),
      spec("f32", [hidden, hidden]),
      ...keys.map((key) => spec("f32", a.tensors.get(key)?.shape as number[])),
    ],
  );
  const x = hostTensor(
    "f32",
    [1, 3, hidden],
    Float32Array.from({ length: 3 * hidden }, (_, i) => 1 + (i % 7)),
  );
  const [yq, yk] = interpret(g, [
    x,
    hostTensor("i64", [], [5n] as unknown as number[]),
    hostTensor("f32", [hidden, hidden]),
    ...keys.map((key) => a.tensors.get(key) as HostTensor),
  ]);
  let diff = 0;
  for (let i = 0; i < yq.data.length; i++) diff = Math.max(diff, Math.abs((yq.data[i] as number) - (yk.data[i] as number)));
  assert.ok(diff > 1e-3, "q and k dropped the same features");
  await model.release();
});
