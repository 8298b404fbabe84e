/**
 * The checks HF PEFT's test suite makes of every method, as reusable test helpers: each method's
 * test file calls runConformance() with its configs. Used only by tests.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { gradCheck } from "../engine/autodiff/gradcheck.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { crossEntropy } from "../engine/trace/composites.js";
import { constant, type Tensor } from "../engine/trace/tensor.js";
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from "../models/auto.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { type ForwardContext, WeightContext } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { Rng } from "../util/rng.js";
import { ADAPTER_CONFIG } from "./format.js";
import type { LoraConfig } from "./lora/config.js";
import { FrozenNormDoraContext, frozenDoraNorms } from "./lora/dora-reference.js";
import { ModulesToSaveContext, modulesToSaveKeys } from "./modules-to-save.js";
import { PeftModel } from "./peft-model.js";
import { PeftTrainer, shiftLabels } from "./train.js";
import type { CalibrationStats, ModelInfo } from "./tuner.js";

export type TestModel = "llama_basic" | "llama_gqa_tied" | "qwen2" | "gpt2" | "bert_seq_cls" | "roberta_seq_cls" | "vit_cls";

export async function loadTestModel(name: TestModel): Promise<PreTrainedModel> {
  const dir = join(GOLDEN_MODELS, name);
  if (name.endsWith("_seq_cls")) return AutoModelForSequenceClassification.fromPretrained(dir, { numLabels: 3 });
  return AutoModelForCausalLM.fromPretrained(dir);
}

/** Seeded, so a failing check fails again on rerun. */
const idRng = new Rng(4242);
export function randomIds(b: number, t: number, vocab: number): number[][] {
  return Array.from({ length: b }, () => Array.from({ length: t }, () => 2 + Math.floor(idRng.next() * (vocab - 2))));
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function logits(m: PeftModel | PreTrainedModel, ids: number[][], tasks?: readonly number[]): Promise<Float32Array> {
  const out = m instanceof PeftModel && tasks ? await m.forward({ inputIds: ids, taskIds: tasks }) : await m.forward({ inputIds: ids });
  assert.ok(out.logits, "no logits");
  return out.logits.data;
}

export interface ConformanceCase {
  /** Test title. */
  name: string;
  model: TestModel;
  /** A config whose default init leaves the model unchanged (omit when the method has none). */
  identityConfig?: Record<string, unknown>;
  /** A config with non-trivial init (outputs differ from the base). */
  config: Record<string, unknown>;
  /** Whether the method can merge (default true). */
  mergeable?: boolean;
  /** Whether rows of mixed-adapter batches are supported (default true). */
  mixedBatch?: boolean;
  /** Elements checked per adapter tensor in the gradient check, every tensor is checked (default 3). */
  gradElements?: number;
  /** Largest relative gradient error accepted (default 1e-6); raise it only with a measured reason. */
  gradTolerance?: number;
  /** Calibration statistics, for methods whose initialisation needs data (CorDA, LoRA-SB). */
  calibration?: CalibrationStats;
  /**
   * A forward whose finite differences give the gradient the method's backward defines, for a
   * backward that is not its forward's derivative by design (R-AMT's straight-through mask: the
   * mask linearised at the adapter's current tensors `adapter`). Default: the method's own forward.
   */
  referenceWrap?: (
    base: ForwardContext,
    tensor: (key: string) => Tensor,
    adapter: { info: ModelInfo; config: unknown; tensors: ReadonlyMap<string, HostTensor> },
  ) => ForwardContext;
  /**
   * For methods that route by task (Tuner.taskCount, POLY): the task id of each of `rows`
   * examples; every forward, training batch and gradient check then carries them.
   */
  tasks?: (rows: number) => number[];
}

const vocabOf = (m: PreTrainedModel) => (m.config.vocab_size as number) ?? 100;

/** Registers the PEFT-suite checks for one method on one model. */
export function runConformance(c: ConformanceCase): void {
  const mergeable = c.mergeable ?? true;
  const tasks = (ids: number[][]) => c.tasks?.(ids.length);
  const logitsOf = (m: PeftModel | PreTrainedModel, ids: number[][]) => logits(m, ids, m instanceof PeftModel ? tasks(ids) : undefined);

  if (c.identityConfig) {
    test(`${c.name}: default init is a no-op on the outputs`, async () => {
      const model = await loadTestModel(c.model);
      const ids = randomIds(2, 6, vocabOf(model));
      const base = await logits(model, ids);
      const peft = PeftModel.create(model, c.identityConfig as Record<string, unknown>, { seed: 1, calibration: c.calibration });
      assert.ok(maxAbsDiff(await logitsOf(peft, ids), base) < 1e-6);
      await model.release();
    });
  }

  if (mergeable) {
    test(`${c.name}: unmerged = merged = unmerged again = mergeAndUnload, and differs from the base`, async () => {
      const model = await loadTestModel(c.model);
      const ids = randomIds(2, 7, vocabOf(model));
      const base = await logits(model, ids);
      const peft = PeftModel.create(model, c.config, { seed: 2, calibration: c.calibration });
      const unmerged = await logitsOf(peft, ids);
      assert.ok(maxAbsDiff(unmerged, base) > 1e-3, "the adapter changes nothing");
      peft.mergeAdapter();
      const merged = await logitsOf(peft, ids);
      peft.unmergeAdapter();
      const again = await logitsOf(peft, ids);
      const unloaded = peft.mergeAndUnload({ safeMerge: true });
      const final = await logitsOf(unloaded, ids);
      assert.ok(maxAbsDiff(merged, unmerged) < 1e-4, `merged vs unmerged ${maxAbsDiff(merged, unmerged)}`);
      assert.ok(maxAbsDiff(again, unmerged) < 1e-4, `unmerged again ${maxAbsDiff(again, unmerged)}`);
      assert.ok(maxAbsDiff(final, unmerged) < 1e-4, `mergeAndUnload ${maxAbsDiff(final, unmerged)}`);
      await model.release();
    });
  }

  test(`${c.name}: save → load round-trips every tensor exactly and gives the same outputs`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-adapter-"));
    try {
      const model = await loadTestModel(c.model);
      const ids = randomIds(2, 5, vocabOf(model));
      const peft = PeftModel.create(model, c.config, { seed: 3, calibration: c.calibration });
      peft.addAdapter("second", c.config, { seed: 4, calibration: c.calibration });
      const before = await logitsOf(peft, ids);
      peft.savePretrained(dir);
      const cfg = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8"));
      assert.equal(typeof cfg.peft_type, "string");
      // PEFT's own field names are kept as PEFT spells them (HRAConfig.apply_GS, AdaLoraConfig.deltaT).
      for (const k of Object.keys(cfg))
        if (k !== "apply_GS" && k !== "deltaT") assert.equal(k, k.replace(/[A-Z]/g, ""), `config key ${k} is not snake_case`);
      const saved = peft.adapter("default").tensors;
      const second = peft.adapter("second").tensors;
      const fresh = await loadTestModel(c.model);
      const loaded = PeftModel.fromPretrained(fresh, dir);
      loaded.loadAdapter(join(dir, "second"), "second");
      for (const [name, want] of [
        ["default", saved],
        ["second", second],
      ] as const) {
        const got = loaded.adapter(name).tensors;
        assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
        for (const [k, t] of want) assert.deepEqual(got.get(k)?.data, t.data, `${name}: ${k}`);
      }
      assert.ok(maxAbsDiff(await logitsOf(loaded, ids), before) < 1e-6);
      await model.release();
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  if (c.mixedBatch ?? true) {
    test(`${c.name}: rows of a mixed-adapter batch equal separate runs`, async () => {
      const model = await loadTestModel(c.model);
      const ids = randomIds(3, 5, vocabOf(model));
      const peft = PeftModel.create(model, c.config, { seed: 5, calibration: c.calibration });
      peft.addAdapter("other", c.config, { seed: 6, calibration: c.calibration });
      const t = tasks(ids);
      const mixed = (await peft.forward({ inputIds: ids, adapterNames: ["default", "__base__", "other"], ...(t ? { taskIds: t } : {}) }))
        .logits?.data as Float32Array;
      const per = mixed.length / 3;
      const rowOf = async (name: string | null, row: number) => {
        if (name === null) return peft.disableAdapter(() => logits(peft, [ids[row]]));
        peft.setAdapter(name);
        return logits(peft, [ids[row]], t ? [t[row]] : undefined);
      };
      const expectRows = [await rowOf("default", 0), await rowOf(null, 1), await rowOf("other", 2)];
      expectRows.forEach((want, r) => {
        assert.ok(maxAbsDiff(mixed.subarray(r * per, (r + 1) * per), want) < 1e-5, `row ${r}`);
      });
      await model.release();
    });
  }

  test(`${c.name}: one optimizer step changes only adapter tensors`, async () => {
    const model = await loadTestModel(c.model);
    const baseCopy = new Map([...model.weights].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    const peft = PeftModel.create(model, c.config, { seed: 7, calibration: c.calibration });
    const before = new Map([...peft.adapter("default").tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const ids = randomIds(2, 6, vocabOf(model));
    const labels = model.head === "sequence_classification" ? [[0], [2]] : ids;
    const t = tasks(ids);
    const r = await trainer.train({ inputIds: ids, labels, ...(t ? { taskIds: t } : {}) }, { lr: 1e-2 });
    assert.ok(Number.isFinite(r.loss));
    for (const [k, t] of model.weights) assert.deepEqual(t.data, baseCopy.get(k), `base weight ${k} changed`);
    let changed = 0;
    const a = peft.adapter("default");
    // A method's controller may rewrite fixed tensors between steps (its own tests check how).
    const controlled = trainer.controller !== null;
    for (const [k, t] of a.tensors) {
      const moved = maxAbsDiff(t.data as Float32Array, before.get(k) as Float32Array) > 0;
      // Tensors the method keeps fixed (Tuner.trainable) must not move at all.
      if (a.tuner.trainable?.(k, a.config) === false) assert.ok(!moved || controlled, `fixed adapter tensor ${k} changed`);
      else if (moved) changed++;
    }
    assert.ok(changed > 0, "no adapter tensor changed");
    await trainer.release();
    await model.release();
  });

  test(`${c.name}: gradients of every adapter tensor match f64 finite differences`, async () => {
    const model = await loadTestModel(c.model);
    const peft = PeftModel.create(model, c.config, { seed: 8, calibration: c.calibration });
    const a = peft.adapter("default");
    const keys = [...a.tensors.keys()];
    const weightNames = [...model.weights.keys()];
    const ids = randomIds(2, 4, vocabOf(model));
    const idsT = hostTensor("i64", [2, 4], BigInt64Array.from(ids.flat(), BigInt));
    const maskT = hostTensor("i64", [2, 4], new BigInt64Array(8).fill(1n));
    const labelsT = model.head === "sequence_classification" ? hostTensor("i64", [2], [1n, 2n] as unknown as number[]) : shiftLabels(idsT);
    const f64 = (t: HostTensor) => (t.dtype === "f32" ? hostTensor("f64", t.shape, Float64Array.from(t.data as Float32Array)) : t);
    const adapterIn = keys.map((k) => f64(a.tensors.get(k) as HostTensor));
    // DoRA's backward treats ‖W + s·B·A‖ as a constant: the finite differences are taken of a
    // forward that gets the norm, computed at this point, as a fixed input.
    const lora = a.config as LoraConfig;
    const dora = a.tuner.peftType === "LORA" && lora.useDora;
    const norms = dora
      ? frozenDoraNorms(
          peft.info,
          lora,
          (k) => adapterIn[keys.indexOf(k)],
          (n) => model.weights.get(n) as HostTensor,
        )
      : new Map<string, HostTensor>();
    const normKeys = [...norms.keys()];
    const inputs = [
      ...adapterIn,
      ...weightNames.map((n) => f64(model.weights.get(n) as HostTensor)),
      idsT,
      maskT,
      labelsT,
      ...normKeys.map((k) => norms.get(k) as HostTensor),
    ];
    const mts = modulesToSaveKeys(peft.info, a.config.modulesToSave ?? null);
    const forward =
      (frozenNorms: boolean) =>
      (...xs: Tensor[]) => {
        const tensor = (k: string) => xs[keys.indexOf(k)];
        const off = keys.length;
        const w = new Map(weightNames.map((n, i) => [n, xs[off + i]]));
        const [inIds, inMask, inLabels] = xs.slice(off + weightNames.length);
        const normOf = (k: string) => xs[off + weightNames.length + 3 + normKeys.indexOf(k)];
        const base = new WeightContext((n) => w.get(n), new Set(weightNames));
        let ctx: ForwardContext = base;
        if (mts.size) ctx = new ModulesToSaveContext(ctx, mts, tensor);
        const t = tasks(ids);
        const wrapOpts = {
          adapterName: "default",
          tensor,
          rowMask: null,
          taskIds: t ? constant(hostTensor("i32", [t.length], Int32Array.from(t))) : null,
          training: false,
          seed: null,
          baseWeight: (n: string) => base.weight(n),
        };
        ctx = frozenNorms
          ? dora
            ? new FrozenNormDoraContext(ctx, peft.info, lora, tensor, normOf)
            : (c.referenceWrap as NonNullable<typeof c.referenceWrap>)(ctx, tensor, {
                info: peft.info,
                config: a.config,
                tensors: a.tensors,
              })
          : a.tuner.wrap(ctx, peft.info, a.config, wrapOpts);
        const out = model.traceForward(ctx, { input_ids: inIds, attention_mask: inMask });
        const task = crossEntropy(out.logits as Tensor, inLabels);
        // The objective the trainer minimises: the task loss plus the method's own (Tuner.loss).
        const reg = a.tuner.loss?.(peft.info, a.config, wrapOpts) ?? null;
        return reg ? task.add(reg.cast(task.dtype)) : task;
      };
    // Fixed tensors (Tuner.trainable false) get no gradient in training: only trained ones are checked.
    const trained = keys.map((k, i) => [k, i] as const).filter(([k]) => a.tuner.trainable?.(k, a.config) !== false);
    const res = gradCheck(forward(false), inputs, {
      wrt: trained.map(([, i]) => i),
      maxElements: c.gradElements ?? 3,
      // With 3 elements a tensor's sampled gradient can be ~1e-4, where h = 1e-6 leaves rounding
      // noise of ~5e-10 (relative ~5e-6); h = 1e-5 keeps every case below 1e-7 (measured).
      h: 1e-5,
      traceAsF32: true,
      reference: dora || c.referenceWrap ? forward(true) : undefined,
    });
    const worst = res.relErrors
      .map((e, i) => [e, trained[i][0]] as const)
      .filter(([e]) => !(e <= (c.gradTolerance ?? 1e-6)))
      .map(([e, k]) => `${k}: ${e.toExponential(2)}`);
    assert.deepEqual(worst, [], `relative errors above ${c.gradTolerance ?? 1e-6} (of ${trained.length} tensors)`);
    await model.release();
  });
}
