/**
 * The parts of the Tuner contract the low-rank family added (calibration(), trainable(), loss()),
 * exercised through a toy method registered here: PeftModel, PeftTrainer, the Trainer's
 * metrics.jsonl and resume, and the conformance suite must all honour them.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import type { ModelOutputTensor } from "../models/pretrained.js";
import type { ForwardContext, LinearOptions } from "../nn/context.js";
import { Progress } from "../train/progress.js";
import { type BatchSource, Trainer } from "../train/trainer.js";
import { type Matrix, matrix } from "../util/linalg.js";
import { type CommonConfig, commonJson, FieldReader, type RawPeftConfig, readCommon } from "./config.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "./conformance.js";
import { PeftModel } from "./peft-model.js";
import { registerTuner } from "./registry.js";
import { PeftTrainer } from "./train.js";
import {
  type CalibrationStats,
  type CreateData,
  type CreatedAdapter,
  DelegatingContext,
  type ModelInfo,
  maskRows,
  type Tuner,
  type WrapOptions,
} from "./tuner.js";

/**
 * Toy method: each q/v projection's input is gated, x' = x ⊙ (1 + g ⊙ f), with g trained (zero at
 * start) and f fixed, taken from the calibration covariance's diagonal per token. Its loss is β·Σ g².
 */
interface ToyConfig extends CommonConfig {
  beta: number;
}
const LAYERS = /\.(q_proj|v_proj)$/;
const toyLayers = (info: ModelInfo) => info.linearLayers.filter((p) => LAYERS.test(p));
const inOf = (info: ModelInfo, p: string) => info.weight(`${p}.weight`).shape[1];

const TOY: Tuner<ToyConfig> = {
  peftType: "TOY_GATE",
  supportsMixedBatch: true,
  parseConfig(raw: RawPeftConfig, where: string): ToyConfig {
    const r = new FieldReader(raw, where);
    return { ...readCommon(r, "TOY_GATE"), beta: r.num("beta", 0.5) };
  },
  toJson: (c) => ({ ...commonJson(c), beta: c.beta }),
  calibration: (info) => ({ layers: toyLayers(info), inputCovariance: true }),
  create(info: ModelInfo, _c: ToyConfig, _rng, data?: CreateData): CreatedAdapter {
    const stats = data?.calibration as CalibrationStats;
    const tensors = new Map<string, HostTensor>();
    for (const p of toyLayers(info)) {
      const cov = stats.inputCovariance.get(p) as Matrix;
      const n = inOf(info, p);
      tensors.set(
        `${p}.toy_fixed`,
        hostTensor(
          "f32",
          [n],
          Float32Array.from({ length: n }, (_, i) => cov.data[i * n + i] / stats.tokens),
        ),
      );
      tensors.set(`${p}.toy_gate`, hostTensor("f32", [n]));
    }
    return { tensors };
  },
  expectedTensors(info) {
    const m = new Map<string, number[]>();
    for (const p of toyLayers(info)) for (const k of ["toy_fixed", "toy_gate"]) m.set(`${p}.${k}`, [inOf(info, p)]);
    return m;
  },
  trainable: (key) => !key.endsWith(".toy_fixed"),
  loss(info, c, opts) {
    let sum: Tensor | null = null;
    for (const p of toyLayers(info)) {
      const g = opts.tensor(`${p}.toy_gate`);
      const s = g.mul(g).sum();
      sum = sum ? sum.add(s) : s;
    }
    return sum ? sum.mul(c.beta) : null;
  },
  wrap(base: ForwardContext, info: ModelInfo, _c, opts: WrapOptions): ForwardContext {
    const layers = new Set(toyLayers(info));
    return new (class extends DelegatingContext {
      override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
        if (!layers.has(path)) return this.inner.linear(path, x, lin);
        const gate = opts.tensor(`${path}.toy_gate`).mul(opts.tensor(`${path}.toy_fixed`));
        return this.inner.linear(path, x.add(maskRows(x.mul(gate), opts.rowMask)), lin);
      }
    })(base);
  },
};
registerTuner(TOY);

const CONFIG = { peft_type: "TOY_GATE", beta: 0.5 };

/** Made-up statistics: covariance diagonals 2·tokens·(1 + i mod 3) so the fixed factors are 2, 4, 6, …. */
async function toyStats(): Promise<CalibrationStats> {
  const model = await loadTestModel("llama_basic");
  const probe = new PeftModel(model);
  const inputCovariance = new Map<string, Matrix>();
  const tokens = 10;
  for (const p of toyLayers(probe.info)) {
    const n = inOf(probe.info, p);
    const m = matrix(n, n);
    for (let i = 0; i < n; i++) m.data[i * n + i] = 2 * tokens * (1 + (i % 3));
    inputCovariance.set(p, m);
  }
  await model.release();
  return { samples: 4, batches: 2, tokens, inputCovariance, gradientSum: new Map(), gradientSquareSum: new Map() };
}
const stats = await toyStats();

describe("Tuner contract: calibration, fixed tensors, method loss", () => {
  test("a method that asks for calibration is refused without it, or with statistics that miss a layer", async () => {
    const model = await loadTestModel("llama_basic");
    assert.throws(() => PeftModel.create(model, CONFIG), /TOY_GATE: this initialisation needs calibration data .*--calibration-data FILE/);
    const partial = { ...stats, inputCovariance: new Map([...stats.inputCovariance].slice(1)) };
    const first = [...stats.inputCovariance.keys()][0];
    assert.throws(
      () => new PeftModel(model).addAdapter("x", CONFIG, { calibration: partial }),
      new RegExp(`no input covariance for layer "${first.replace(/\./g, "\\.")}"`),
    );
    await model.release();
  });

  test("create() receives the statistics; fixed tensors count in the total, not as trainable", async () => {
    const model = await loadTestModel("llama_basic");
    const before = new Set(model.weights.values()).size && [...new Set(model.weights.values())].reduce((s, t) => s + t.data.length, 0);
    const peft = PeftModel.create(model, CONFIG, { calibration: stats });
    const a = peft.adapter("default");
    const fixed = [...a.tensors].filter(([k]) => k.endsWith(".toy_fixed"));
    assert.deepEqual([...(fixed[0][1].data as Float32Array).slice(0, 4)], [2, 4, 6, 2]);
    const each = fixed.reduce((s, [, t]) => s + t.data.length, 0);
    assert.deepEqual(peft.parameterCounts(), { trainable: each, total: before + 2 * each });
    await model.release();
  });

  test("training moves only trained tensors; the step's loss is the task loss and method_loss is β·Σg²", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CONFIG, { calibration: stats });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd", momentum: 0 } });
    const ids = randomIds(2, 6, 100);
    const a0 = new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    const r1 = await trainer.train({ inputIds: ids, labels: ids }, { lr: 5 });
    assert.equal(r1.metrics.method_loss, 0);
    const a1 = peft.adapter("default").tensors;
    let sumSq = 0;
    for (const [k, t] of a1) {
      const moved = maxAbsDiff(t.data as Float32Array, a0.get(k) as Float32Array);
      if (k.endsWith(".toy_fixed")) assert.equal(moved, 0, `${k} moved`);
      else {
        assert.ok(moved > 0, `${k} did not move`);
        for (const v of t.data as Float32Array) sumSq += v * v;
      }
    }
    // The task loss at the new point, from the inference forward: mean next-token cross-entropy.
    const logits = (await peft.forward({ inputIds: ids })).logits as ModelOutputTensor;
    const vocab = logits.shape[2];
    let ce = 0;
    let n = 0;
    for (let b = 0; b < 2; b++)
      for (let t = 0; t + 1 < 6; t++) {
        const row = (logits.data as Float32Array).subarray((b * 6 + t) * vocab, (b * 6 + t + 1) * vocab);
        const max = Math.max(...row);
        const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
        ce += lse - row[ids[b][t + 1]];
        n++;
      }
    const r2 = await trainer.train({ inputIds: ids, labels: ids }, { lr: 5 });
    // Large enough that reporting task + method loss as the loss would fail the check below.
    assert.ok(0.5 * sumSq > 1e-3, `method loss ${0.5 * sumSq} too small to tell the terms apart`);
    assert.ok(
      Math.abs((r2.metrics.method_loss as number) - 0.5 * sumSq) <= 1e-5 * 0.5 * sumSq,
      `${r2.metrics.method_loss} vs ${0.5 * sumSq}`,
    );
    assert.ok(Math.abs(r2.loss - ce / n) < 2e-5, `step loss ${r2.loss} vs task loss ${ce / n}`);
    await trainer.release();
    await model.release();
  });

  const root = mkdtempSync(join(tmpdir(), "peftkit-contract-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);
  const target = async (change?: (peft: PeftModel) => void) => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, CONFIG, { calibration: stats });
    change?.(peft);
    // SGD: the update scales with the gradient, so a wrong fixed factor after resume shows (Adam's barely would).
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd", momentum: 0.9 } });
    return { trainer, peft, causal: true, classification: false, model };
  };

  test("metrics.jsonl logs method_loss; a resumed run ends where an uninterrupted one does", async () => {
    const args = (dir: string) => ({ outputDir: dir, maxSteps: 4, lr: 0.05, seed: 3, saveSteps: 2 });
    const a = await target();
    const shown: string[] = [];
    const progress = new Progress({ write: (l: string) => shown.push(l) > 0, isTTY: false }, 1);
    await new Trainer(a, source, null, args(join(root, "full")), progress).run();
    assert.ok(
      shown.some((l) => /^step 2\/4 loss \d+\.\d{4} method_loss \d\.\d{3}e[-+]\d+ tokens\/s/.test(l)),
      shown.join(""),
    );
    const records = readFileSync(join(root, "full", "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.loss !== undefined);
    assert.equal(records.length, 4);
    assert.equal(records[0].method_loss, 0);
    assert.ok(records.slice(1).every((r) => r.method_loss > 0));

    const b = await target();
    const dir = join(root, "cut");
    const first = new Trainer(b, source, null, args(dir), quiet());
    const orig = b.trainer.train.bind(b.trainer);
    let steps = 0;
    b.trainer.train = async (batch, o) => {
      const r = await orig(batch, o);
      if (++steps === 3) first.requestStop();
      return r;
    };
    await first.run();
    // The resumed run must take the fixed tensors from the checkpoint, not from its own init.
    const c = await target((peft) => {
      const [key, t] = [...peft.adapter("default").tensors].find(([k]) => k.endsWith(".toy_fixed")) as [string, HostTensor];
      peft.setAdapterTensors("default", new Map([[key, hostTensor("f32", t.shape, new Float32Array(t.data.length).fill(9))]]));
    });
    await new Trainer(c, source, null, { ...args(dir), resume: true }, quiet()).run();
    for (const [k, t] of a.peft.adapter("default").tensors) {
      const got = c.peft.adapter("default").tensors.get(k) as HostTensor;
      assert.ok(
        maxAbsDiff(t.data as Float32Array, got.data as Float32Array) <= 1e-6,
        `${k}: ${maxAbsDiff(t.data as Float32Array, got.data as Float32Array)}`,
      );
    }
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });
});

runConformance({ name: "toy contract method", model: "llama_basic", config: CONFIG, calibration: stats, mergeable: false });
