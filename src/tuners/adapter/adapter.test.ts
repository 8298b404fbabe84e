import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { spec, trace } from "../../engine/trace/trace.js";
import { WeightContext } from "../../nn/context.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { adapterModules, BOTTLENECK } from "./index.js";

const rand = (n: number) => Float32Array.from({ length: n }, () => Math.fround(Math.random() * 2 - 1));

describe("bottleneck adapters", () => {
  test("keys name the layer and site; layers_to_transform restricts them", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "BOTTLENECK", adapterType: "houlsby", bottleneckSize: 4, layersToTransform: [1] });
    assert.deepEqual(
      [...peft.adapter("default").tensors.keys()],
      [
        "model.layers.1.adapter_attn.down.weight",
        "model.layers.1.adapter_attn.down.bias",
        "model.layers.1.adapter_attn.up.weight",
        "model.layers.1.adapter_attn.up.bias",
        "model.layers.1.adapter_mlp.down.weight",
        "model.layers.1.adapter_mlp.down.bias",
        "model.layers.1.adapter_mlp.up.weight",
        "model.layers.1.adapter_mlp.up.bias",
      ],
    );
    assert.deepEqual([...(peft.adapter("default").tensors.get("model.layers.1.adapter_mlp.down.weight")?.shape ?? [])], [4, 32]);
    peft.addAdapter("p", { peftType: "BOTTLENECK", adapterType: "parallel", reductionFactor: 8 });
    assert.deepEqual([...(peft.adapter("p").tensors.get("model.layers.0.adapter_parallel.up.weight")?.shape ?? [])], [32, 4]);
    assert.throws(() => peft.addAdapter("x", { peftType: "BOTTLENECK", layersToTransform: 9 }), /layers_to_transform/);
    assert.throws(() => peft.addAdapter("y", { peftType: "BOTTLENECK", nonLinearity: "softmax" }), /non_linearity/);
    await model.release();
  });

  for (const type of ["pfeiffer", "houlsby", "parallel"] as const) {
    test(`${type}: the hooks compute h + s·up(f(down(x))) by hand on a tiny example`, async () => {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(model, {
        peftType: "BOTTLENECK",
        adapterType: type,
        bottleneckSize: 3,
        scaling: 2.5,
        nonLinearity: "tanh",
        initWeights: false,
        layersToTransform: 0,
      });
      const c = peft.adapter("default").config;
      const tensors = peft.adapter("default").tensors;
      const keys = [...tensors.keys()];
      const d = 32;
      const t = 2;
      const x = hostTensor("f32", [1, t, d], rand(t * d));
      const h = hostTensor("f32", [1, t, d], rand(t * d));
      const g = trace(
        (...xs: Tensor[]) => {
          const byKey = new Map(keys.map((k, i) => [k, xs[i]]));
          const [xin, hin] = xs.slice(keys.length);
          const ctx = BOTTLENECK.wrap(new WeightContext(() => undefined, new Set()), peft.info, c as never, {
            adapterName: "default",
            tensor: (k) => byKey.get(k) as Tensor,
            rowMask: null,
            training: false,
            seed: null,
          });
          const attn = ctx.hook({ kind: "attention_output", layer: 0 }, hin);
          ctx.hook({ kind: "mlp_input", layer: 0 }, xin);
          const mlp = ctx.hook({ kind: "mlp_output", layer: 0 }, hin);
          const other = ctx.hook({ kind: "mlp_output", layer: 1 }, hin);
          return [attn, mlp, other];
        },
        [...keys.map((k) => spec("f32", (tensors.get(k) as HostTensor).shape)), spec("f32", [1, t, d]), spec("f32", [1, t, d])],
      );
      const [attn, mlp, other] = interpret(g, [...keys.map((k) => tensors.get(k) as HostTensor), x, h]);
      const adapter = (site: string, input: Float32Array) => {
        const get = (k: string) => tensors.get(`model.layers.0.${site}.${k}`)?.data as Float32Array;
        const [dw, db, uw, ub] = [get("down.weight"), get("down.bias"), get("up.weight"), get("up.bias")];
        const out = new Float64Array(t * d);
        for (let i = 0; i < t; i++) {
          const z = Array.from({ length: 3 }, (_, r) => {
            let s = db[r];
            for (let j = 0; j < d; j++) s += dw[r * d + j] * input[i * d + j];
            return Math.tanh(s);
          });
          for (let o = 0; o < d; o++) {
            let s = ub[o];
            for (let r = 0; r < 3; r++) s += uw[o * 3 + r] * z[r];
            out[i * d + o] = 2.5 * s;
          }
        }
        return out;
      };
      const hd = h.data as Float32Array;
      const expect = (delta: Float64Array | null) => Float32Array.from(hd, (v, i) => v + (delta ? delta[i] : 0));
      const near = (got: HostTensor, want: Float32Array, what: string) =>
        assert.ok(maxAbsDiff(got.data as Float32Array, want) < 1e-5, `${what}: ${maxAbsDiff(got.data as Float32Array, want)}`);
      near(attn, expect(type === "houlsby" ? adapter("adapter_attn", hd) : null), "attention output");
      near(
        mlp,
        expect(type === "parallel" ? adapter("adapter_parallel", x.data as Float32Array) : adapter("adapter_mlp", hd)),
        "MLP output",
      );
      near(other, expect(null), "untargeted layer");
      await model.release();
    });
  }

  test("GPT-2 pfeiffer with up = 0 and up bias b equals the base model with c_proj bias + s·b", async () => {
    const model = await loadTestModel("gpt2");
    const ids = randomIds(2, 5, 256);
    const peft = PeftModel.create(model, { peftType: "BOTTLENECK", adapterType: "pfeiffer", bottleneckSize: 4, scaling: 0.5 });
    const b = rand(32);
    peft.setAdapterTensors("default", new Map([["transformer.h.1.adapter_mlp.up.bias", hostTensor("f32", [32], b)]]));
    const got = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const unloaded = peft.unload();
    const name = "transformer.h.1.mlp.c_proj.bias";
    const orig = unloaded.weights.get(name) as HostTensor;
    unloaded.weights.set(
      name,
      hostTensor(
        "f32",
        [32],
        Float32Array.from(orig.data as Float32Array, (v, i) => v + 0.5 * b[i]),
      ),
    );
    const want = (await unloaded.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(got, want) < 1e-5, `${maxAbsDiff(got, want)}`);
    await model.release();
  });

  test("adapter layers are found on every architecture", async () => {
    for (const [name, first] of [
      ["gpt2", "transformer.h.0.adapter_mlp"],
      ["bert_seq_cls", "bert.encoder.layer.0.adapter_mlp"],
    ] as const) {
      const model = await loadTestModel(name);
      const peft = PeftModel.create(model, { peftType: "BOTTLENECK", adapterType: "pfeiffer" });
      assert.equal(adapterModules(peft.info, peft.adapter("default").config as never)[0].key, first);
      await model.release();
    }
  });

  runConformance({
    name: "houlsby adapters on llama",
    model: "llama_basic",
    identityConfig: { peftType: "BOTTLENECK", adapterType: "houlsby", bottleneckSize: 4 },
    config: { peftType: "BOTTLENECK", adapterType: "houlsby", bottleneckSize: 4, initWeights: false, nonLinearity: "gelu" },
    mergeable: false,
  });
  runConformance({
    name: "pfeiffer adapters on GPT-2",
    model: "gpt2",
    identityConfig: { peftType: "BOTTLENECK", adapterType: "pfeiffer", bottleneckSize: 4 },
    config: { peftType: "BOTTLENECK", adapterType: "pfeiffer", bottleneckSize: 4, initWeights: false, dropout: 0.1 },
    mergeable: false,
  });
  runConformance({
    name: "scaled parallel adapters on BERT classification",
    model: "bert_seq_cls",
    identityConfig: { peftType: "BOTTLENECK", adapterType: "parallel", bottleneckSize: 8, scaling: 4 },
    config: { peftType: "BOTTLENECK", adapterType: "parallel", bottleneckSize: 8, scaling: 4, initWeights: false },
    mergeable: false,
  });
});
