/**
 * The controller part of the Tuner contract (controller.ts), exercised through a toy method
 * registered here: the gradients it reads, the tensors and config it changes, its metrics in
 * metrics.jsonl and on the progress line, and its state across a checkpoint and resume.
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../nn/context.js";
import { adapterDiffs, stopThenResume } from "../testing/resume.js";
import { Progress } from "../train/progress.js";
import { type BatchSource, Trainer } from "../train/trainer.js";
import { type CommonConfig, commonJson, FieldReader, type RawPeftConfig, readCommon } from "./config.js";
import { loadTestModel, maxAbsDiff, randomIds } from "./conformance.js";
import type { Controller, ControllerStep } from "./controller.js";
import { PeftModel } from "./peft-model.js";
import { registerTuner } from "./registry.js";
import { PeftTrainer } from "./train.js";
import { DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "./tuner.js";

/**
 * Toy method: each q/v projection's input is gated, x' = x ⊙ (1 + g). Its controller keeps an EMA
 * of |g ⊙ ∂L/∂g| per entry and, every second step, zeroes the entries with the lowest scores so
 * that `keep` of each layer's stay, recording how many stay in the config field `kept`. The saved
 * adapter rounds g to 1e-3, so a resume must take the trained tensors from the checkpoint.
 */
interface PruneConfig extends CommonConfig {
  keep: number;
  kept: Record<string, number> | null;
}
const LAYERS = /\.(q_proj|v_proj)$/;
const layersOf = (info: ModelInfo) => info.linearLayers.filter((p) => LAYERS.test(p));
const inOf = (info: ModelInfo, p: string) => info.weight(`${p}.weight`).shape[1];
const EMA = 0.5;

/** What the controllers of the last run saw, for the tests. */
const seen: ControllerStep[] = [];

function pruneController(info: ModelInfo, c: PruneConfig): Controller<PruneConfig> {
  const keys = layersOf(info).map((p) => `${p}.gate`);
  let scores = new Map<string, Float64Array>();
  let kept: Record<string, number> = {};
  return {
    gradientKeys: keys,
    configFields: ["kept"],
    gatedUpdates: true,
    afterStep(s) {
      seen.push(s);
      const out = new Map<string, HostTensor>();
      const trainable = new Map<string, HostTensor>();
      for (const k of keys) {
        const g = s.tensors.get(k)?.data as Float32Array;
        const d = s.gradients.get(k)?.data as Float32Array;
        const e = scores.get(k) ?? new Float64Array(g.length);
        for (let i = 0; i < g.length; i++) e[i] = EMA * e[i] + (1 - EMA) * Math.abs(g[i] * d[i]);
        scores.set(k, e);
        if (s.step % 2 !== 0) continue;
        const n = Math.ceil(c.keep * g.length);
        const order = [...e.keys()].sort((a, b) => e[b] - e[a] || a - b);
        const next = new Float32Array(g.length);
        for (const i of order.slice(0, n)) next[i] = g[i];
        out.set(k, hostTensor("f32", [g.length], next));
        // Pruned entries stay pruned: they no longer train.
        trainable.set(
          k,
          hostTensor(
            "f32",
            [g.length],
            Float32Array.from(next, (v) => (v !== 0 ? 1 : 0)),
          ),
        );
        kept[k] = n;
      }
      return out.size ? { tensors: out, config: { ...c, kept: { ...kept } }, trainable } : null;
    },
    metrics: () => ({ kept_total: Object.values(kept).reduce((a, b) => a + b, 0) }),
    state: () => ({
      tensors: new Map([...scores].map(([k, v]) => [k, hostTensor("f64", [v.length], Float64Array.from(v))])),
      json: { kept },
    }),
    restore(st) {
      scores = new Map([...st.tensors].map(([k, t]) => [k, Float64Array.from(t.data as Float64Array)]));
      kept = { ...(st.json as { kept: Record<string, number> }).kept };
      return Object.keys(kept).length ? { config: { ...c, kept: { ...kept } } } : null;
    },
  };
}

const PRUNE: Tuner<PruneConfig> = {
  peftType: "TOY_PRUNE",
  supportsMixedBatch: true,
  parseConfig(raw: RawPeftConfig, where: string): PruneConfig {
    const r = new FieldReader(raw, where);
    const kept = (raw.kept ?? null) as Record<string, number> | null;
    return { ...readCommon(r, "TOY_PRUNE"), keep: r.num("keep", 0.5), kept };
  },
  toJson: (c) => ({ ...commonJson(c), keep: c.keep, kept: c.kept }),
  create(info: ModelInfo, _c, rng) {
    const tensors = new Map<string, HostTensor>();
    for (const p of layersOf(info)) {
      const n = inOf(info, p);
      tensors.set(
        `${p}.gate`,
        hostTensor(
          "f32",
          [n],
          Float32Array.from({ length: n }, () => 0.1 * rng.normal()),
        ),
      );
    }
    return { tensors };
  },
  expectedTensors(info) {
    return new Map(layersOf(info).map((p) => [`${p}.gate`, [inOf(info, p)]]));
  },
  tensorsToSave: (_info, _c, tensors) =>
    new Map(
      [...tensors].map(([k, t]) => [
        k,
        hostTensor(
          "f32",
          t.shape,
          Float32Array.from(t.data as Float32Array, (v) => Math.round(v * 1000) / 1000),
        ),
      ]),
    ),
  controller: (info, c) => pruneController(info, c),
  wrap(base: ForwardContext, info: ModelInfo, _c, opts: WrapOptions): ForwardContext {
    const layers = new Set(layersOf(info));
    return new (class extends DelegatingContext {
      override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
        if (!layers.has(path)) return this.inner.linear(path, x, lin);
        const gated = x.add(maskRows(x.mul(opts.tensor(`${path}.gate`)), opts.rowMask));
        opts.probe?.(`input:${path}`, gated, (v, g) => v.mul(g).sum());
        return this.inner.linear(path, gated, lin);
      }
    })(base);
  },
};
registerTuner(PRUNE);

const CONFIG = { peft_type: "TOY_PRUNE", keep: 0.5 };

describe("Tuner contract: controllers between steps", () => {
  test("the controller sees the update's gradient; its changes reach the step, the model and the config", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CONFIG, { seed: 1 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd", momentum: 0 }, totalSteps: 7 });
    const ids = randomIds(2, 6, 100);
    seen.length = 0;
    const before = new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.5 });
    // SGD: g1 = g0 − lr·∇, so the gradient the controller got is (g0 − g1)/lr.
    assert.equal(seen.length, 1);
    assert.equal(seen[0].step, 1);
    assert.equal(seen[0].totalSteps, 7);
    for (const [k, g0] of before) {
      const g1 = seen[0].tensors.get(k)?.data as Float32Array;
      const grad = seen[0].gradients.get(k)?.data as Float32Array;
      const want = Float32Array.from(g0, (v, i) => (v - g1[i]) / 0.5);
      assert.ok(maxAbsDiff(grad, want) < 1e-4 * Math.max(1, ...want.map(Math.abs)), `${k}: ${maxAbsDiff(grad, want)}`);
    }
    // The forward's probes arrive by name: one scalar Σ x'·∂L/∂x' per gated layer.
    assert.deepEqual(
      [...seen[0].statistics.keys()].sort(),
      layersOf(peft.info)
        .map((p) => `input:${p}`)
        .sort(),
    );
    for (const t of seen[0].statistics.values()) assert.ok(t.shape.length === 0 && Number.isFinite(t.data[0]) && t.data[0] !== 0);
    assert.equal(peft.adapter("default").config.peftType, "TOY_PRUNE");
    assert.equal((peft.adapter("default").config as PruneConfig).kept, null);
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.5 });
    const a = peft.adapter("default");
    const cfg = a.config as PruneConfig;
    for (const [k, t] of a.tensors) {
      const zeros = (t.data as Float32Array).filter((v) => v === 0).length;
      assert.equal(zeros, t.data.length - Math.ceil(0.5 * t.data.length), `${k}: ${zeros} zeros`);
      assert.equal(cfg.kept?.[k], Math.ceil(0.5 * t.data.length));
      // The step trains on from the pruned values, not from what it had computed.
      assert.deepEqual(trainer.step.getParams()[k].data, t.data, `${k}: the step did not take the pruned values`);
    }
    assert.deepEqual(Object.keys(trainer.controllerMetrics()), ["kept_total"]);
    // Gated off by the controller, the pruned entries stay exactly 0 through the next update.
    const pruned = new Map([...a.tensors].map(([k, t]) => [k, [...(t.data as Float32Array).keys()].filter((i) => t.data[i] === 0)]));
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.5 });
    for (const [k, idx] of pruned) {
      const t = peft.adapter("default").tensors.get(k)?.data as Float32Array;
      assert.ok(idx.length > 0 && idx.every((i) => t[i] === 0), `${k}: a pruned entry moved`);
    }
    await trainer.release();
    await model.release();
  });

  const root = mkdtempSync(join(tmpdir(), "peftkit-controller-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const _quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CONFIG, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 7 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 7, lr: 0.05, seed: 3, saveSteps: 2 });

  test("metrics.jsonl and the progress line show the controller's numbers; a resumed run ends where an uninterrupted one does", async () => {
    const a = await target();
    const shown: string[] = [];
    const progress = new Progress({ write: (l: string) => shown.push(l) > 0, isTTY: false }, 1);
    await new Trainer(a, source, null, args(join(root, "full")), progress).run();
    assert.ok(
      shown.some((l) => /^step 2\/7 loss \d+\.\d{4} kept_total \d+ tokens\/s/.test(l)),
      shown.join(""),
    );
    const records = readFileSync(join(root, "full", "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.loss !== undefined);
    assert.equal(records[0].kept_total, 0);
    assert.ok(records[1].kept_total > 0);
    assert.ok(existsSync(join(root, "full", "checkpoint-2", "controller.safetensors")));
    const saved = JSON.parse(readFileSync(join(root, "full", "checkpoint-7", "adapter_config.json"), "utf8"));
    assert.deepEqual(saved.kept, (a.peft.adapter("default").config as PruneConfig).kept);

    // Stopped after step 5 (a checkpoint at step 5, between two pruning steps, with the scores
    // and the pruned config in it), resumed to 7.
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 5);
    for (const [k, d] of adapterDiffs(a, c)) assert.ok(d <= 1e-6, `${k}: ${d}`);
    assert.deepEqual(c.peft.adapter("default").config, a.peft.adapter("default").config);
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });
});
