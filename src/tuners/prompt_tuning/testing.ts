/** Helpers for the prompt-learning tests (prompt and prefix tuning); used only by tests. */
import assert from "node:assert/strict";
import { gradCheck } from "../../engine/autodiff/gradcheck.js";
import { compileGraph } from "../../engine/exec/backend.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { crossEntropy } from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { type PreTrainedModel, traceModelGraph } from "../../models/pretrained.js";
import { type ForwardContext, WeightContext } from "../../nn/context.js";
import type { PeftModel } from "../peft-model.js";
import { PeftTrainer, shiftLabels } from "../train.js";

export const i64 = (shape: number[], values: number[]) =>
  hostTensor(
    "i64",
    shape,
    BigInt64Array.from(values, (v) => BigInt(v)),
  );

/** Per-layer keys and values [1, kv_heads, n, head_dim] of the base model run on `ids` (one row). */
export async function keyValuesOf(model: PreTrainedModel, ids: number[]): Promise<{ key: HostTensor; value: HostTensor }[]> {
  const g = traceModelGraph(
    model,
    { input_ids: { dtype: "i64", shape: [1, ids.length] }, attention_mask: { dtype: "i64", shape: [1, ids.length] } },
    (ctx, t) => {
      const out = model.traceForward(ctx, t);
      const o: Record<string, Tensor> = {};
      (out.present ?? []).forEach((kv, i) => {
        o[`k${i}`] = kv.key;
        o[`v${i}`] = kv.value;
      });
      return o;
    },
  );
  const exec = await compileGraph(g, model.compileOptions);
  try {
    const res = await exec.run(
      model.feedsFor(g, {
        input_ids: i64([1, ids.length], ids),
        attention_mask: i64(
          [1, ids.length],
          ids.map(() => 1),
        ),
      }),
    );
    const kv: { key: HostTensor; value: HostTensor }[] = [];
    for (let i = 0; i < res.length / 2; i++) kv.push({ key: res[2 * i], value: res[2 * i + 1] });
    return kv;
  } finally {
    await exec.release();
  }
}

/** PEFT's flat prefix [n, layers·2·kv·hd] from per-layer keys/values: (token, layer·2 + k|v, head, dim). */
export function flatPrefix(kv: { key: HostTensor; value: HostTensor }[]): HostTensor {
  const [, heads, n, hd] = kv[0].key.shape;
  const per = heads * hd;
  const flat = kv.length * 2 * per;
  const out = new Float32Array(n * flat);
  kv.forEach(({ key, value }, l) => {
    [key, value].forEach((t, which) => {
      const d = t.data as Float32Array;
      for (let h = 0; h < heads; h++)
        for (let j = 0; j < n; j++)
          for (let e = 0; e < hd; e++) out[j * flat + (2 * l + which) * per + h * hd + e] = d[(h * n + j) * hd + e];
    });
  });
  return hostTensor("f32", [n, flat], out);
}

/** Logits rows [from, to) of every batch row of a [B, T, V] output. */
export function rows(data: Float32Array, b: number, t: number, v: number, from: number, to: number): Float32Array {
  const out = new Float32Array(b * (to - from) * v);
  for (let i = 0; i < b; i++) out.set(data.subarray((i * t + from) * v, (i * t + to) * v), i * (to - from) * v);
  return out;
}

/** Adapter gradients vs f64 finite differences on a causal LM, labels padded with −100 for virtual tokens. */
export function adapterGradCheck(peft: PeftModel, ids: number[][], maxElements = 6): number {
  const model = peft.base;
  const a = peft.adapter("default");
  const keys = [...a.tensors.keys()];
  const weightNames = [...model.weights.keys()];
  const [b, t] = [ids.length, ids[0].length];
  const idsT = i64([b, t], ids.flat());
  const maskT = i64(
    [b, t],
    ids.flat().map(() => 1),
  );
  let labels = shiftLabels(idsT);
  const n = a.tuner.virtualTokens?.(a.config) ?? 0;
  if (n) {
    const out: number[] = [];
    const src = labels.data as BigInt64Array;
    for (let i = 0; i < b; i++) {
      for (let j = 0; j < n; j++) out.push(-100);
      for (let j = 0; j < t; j++) out.push(Number(src[i * t + j]));
    }
    labels = i64([b, t + n], out);
  }
  const f64 = (x: HostTensor) => hostTensor("f64", x.shape, Float64Array.from(x.data as Float32Array));
  const inputs = [
    ...keys.map((k) => f64(a.tensors.get(k) as HostTensor)),
    ...weightNames.map((w) => f64(model.weights.get(w) as HostTensor)),
    idsT,
    maskT,
    labels,
  ];
  const f = (...xs: Tensor[]) => {
    const at = new Map(keys.map((k, i) => [k, xs[i]]));
    const w = new Map(weightNames.map((nm, i) => [nm, xs[keys.length + i]]));
    const [inIds, inMask, inLabels] = xs.slice(keys.length + weightNames.length);
    let ctx: ForwardContext = new WeightContext((nm) => w.get(nm), new Set(weightNames));
    ctx = a.tuner.wrap(ctx, peft.info, a.config, {
      adapterName: "default",
      tensor: (k) => at.get(k) as Tensor,
      rowMask: null,
      training: false,
      seed: null,
    });
    const out = model.traceForward(ctx, { input_ids: inIds, attention_mask: inMask });
    return crossEntropy(out.logits as Tensor, inLabels);
  };
  const res = gradCheck(f, inputs, { wrt: keys.map((_, i) => i), maxElements, traceAsF32: true });
  assert.ok(res.maxRelError <= 1e-6, `relative errors ${res.relErrors.map((e) => e.toExponential(2)).join(", ")}`);
  return res.maxRelError;
}

/** One AdamW step: only adapter tensors change, and all of them do. */
export async function trainOneStep(peft: PeftModel, ids: number[][]): Promise<void> {
  const model = peft.base;
  const baseCopy = new Map([...model.weights].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
  const before = new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
  try {
    const r = await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
    assert.ok(Number.isFinite(r.loss));
  } finally {
    await trainer.release();
  }
  for (const [k, t] of model.weights) assert.deepEqual(t.data, baseCopy.get(k), `base weight ${k} changed`);
  for (const [k, t] of peft.adapter("default").tensors) {
    const old = before.get(k) as Float32Array;
    assert.ok(
      (t.data as Float32Array).some((v, i) => v !== old[i]),
      `adapter tensor ${k} did not change`,
    );
  }
}
