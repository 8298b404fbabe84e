import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { adapterDiffs, stopThenResume } from "../../testing/resume.js";
import { Progress } from "../../train/progress.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import type { ControllerAction } from "../controller.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { TriadaptloraConfig } from "./config.js";
import { triadaptloraController } from "./controller.js";
import { triadaptloraKeys, triadaptloraLayers } from "./layers.js";
import { growthCount, triangularMasks } from "./schedule.js";

/** init_rank 1, blocks of 2 (reference_rank 4), capacity 11 on llama_basic's 32×32 q/v projections. */
const CONFIG = {
  peft_type: "TRIADAPTLORA",
  init_rank: 1,
  reference_rank: 4,
  lora_alpha: 8,
  init_warmup: 1,
  incre_interval: 1,
  total_step: 5,
  target_modules: ["q_proj", "v_proj"],
};

describe("TriAdaptLoRA's structure and schedule", () => {
  test("the block-triangular patterns: L's block row i spans blocks 0…i, U's block column i spans blocks 0…i", () => {
    // init_rank 1, blocks of 2: slot blocks [0, 1, 1, 2, 2].
    const { lower, upper } = triangularMasks(5, 1, 2);
    const rows = (m: Float32Array) => Array.from({ length: 5 }, (_, i) => [...m.subarray(i * 5, i * 5 + 5)]);
    assert.deepEqual(rows(lower), [
      [1, 0, 0, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1],
    ]);
    assert.deepEqual(rows(upper), [
      [1, 1, 1, 1, 1],
      [0, 1, 1, 1, 1],
      [0, 1, 1, 1, 1],
      [0, 0, 0, 1, 1],
      [0, 0, 0, 1, 1],
    ]);
  });

  test("modules to grow: (target − total)·coeff (linear) or (target − total)^coeff (non-linear), truncated, at least 1", () => {
    // coeff = (5 − 1) / (9 − 1) = 0.5.
    assert.equal(growthCount("linear", 28, 5, 1, 9), 14);
    assert.equal(growthCount("non-linear", 28, 5, 1, 9), 5); // √28 = 5.29
    // coeff = 1/8: 28/8 = 3.5 → 3; 28^(1/8) = 1.516 → 1.
    assert.equal(growthCount("linear", 28, 2, 1, 9), 3);
    assert.equal(growthCount("non-linear", 28, 2, 1, 9), 1);
    assert.equal(growthCount("linear", 3, 2, 1, 9), 1); // 0.375 → 0 → 1
  });

  test("bad schedules and budgets are refused with one line naming the field", async () => {
    const model = await loadTestModel("llama_basic");
    assert.throws(
      () => PeftModel.create(model, { ...CONFIG, total_step: 1, init_warmup: 1 }),
      /"total_step" \(1\) must exceed "init_warmup" \(1\)/,
    );
    assert.throws(() => PeftModel.create(model, { ...CONFIG, reference_rank: 1 }), /"reference_rank" \(1\) must exceed "init_rank" \(1\)/);
    assert.throws(
      () => PeftModel.create(model, { ...CONFIG, rank_growth_model: "cubic" }),
      /"rank_growth_model" must be one of "linear", "non-linear"/,
    );
    assert.throws(
      () => PeftModel.create(model, { ...CONFIG, init_rank: 40, reference_rank: 50 }),
      /init_rank = 40 exceeds min\(out, in\) = 32/,
    );
    // A saved rank that is not init_rank plus whole blocks (1 + 2k).
    const q0 = "model.layers.0.self_attn.q_proj";
    assert.throws(
      () => PeftModel.create(model, { ...CONFIG, rank_pattern: { [q0]: 2 } }),
      /"rank_pattern" gives module "model\.layers\.0\.self_attn\.q_proj" rank 2, not init_rank 1 plus whole blocks of 2/,
    );
    const peft = PeftModel.create(model, { ...CONFIG, total_step: null, init_warmup: 6 });
    const a = peft.adapter("default");
    assert.throws(
      () => triadaptloraController(peft.info, a.config as TriadaptloraConfig, { totalSteps: 6 }),
      (e: Error) => e instanceof PeftConfigError && /init_warmup \(6\) leaves no step for growth in 6 total steps/.test(e.message),
    );
    assert.throws(
      () => triadaptloraController(peft.info, { ...(a.config as TriadaptloraConfig), targetTotalRank: 4 }, { totalSteps: 10 }),
      /budget 4 must exceed the initial total 4/,
    );
    await model.release();
  });
});

/**
 * ΔW assembled as the stored code's loraW.forward does, independently of schedule.ts: the core
 * is the concatenation of the lower blocks C_row[i] [r_i, s_i] padded right and the upper blocks
 * C_col[i] [s_i, r_i] padded below, then ΔW = B·C·A·α / (R + 1e-5).
 */
function authorsCore(lower: Float32Array, upper: Float32Array, n: number, sizes: number[]): number[][] {
  const R = sizes.reduce((a, b) => a + b, 0);
  const C = Array.from({ length: R }, () => new Array<number>(R).fill(0));
  let start = 0;
  for (const r of sizes) {
    const s = start + r;
    // C_row[i]: rows start…s−1, columns 0…s−1 of L; C_col[i]: rows 0…s−1, columns start…s−1 of U.
    for (let i = start; i < s; i++) for (let j = 0; j < s; j++) C[i][j] += lower[i * n + j];
    for (let i = 0; i < s; i++) for (let j = start; j < s; j++) C[i][j] += upper[i * n + j];
    start = s;
  }
  return C;
}

test("TriAdaptLoRA's ΔW = B·(L + U)·A·α/(R + 1e-5) over the blocks: the same logits as LoRA with A' = C·A", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, CONFIG, { seed: 1 });
  const c = peft.adapter("default").config as TriadaptloraConfig;
  const layers = triadaptloraLayers(peft.info, c);
  const rng = new Rng(9);
  const R = 5; // blocks 1 + 2 + 2
  const sizes = [1, 2, 2];
  const scale = 8 / (R + 1e-5);
  const mine = new Map<string, HostTensor>();
  const loraTensors = new Map<string, HostTensor>();
  for (const l of layers) {
    const k = triadaptloraKeys(l.key);
    const n = l.capacity;
    const rand = (len: number, std: number) => Float32Array.from({ length: len }, () => std * rng.normal());
    // Every entry random, also outside the patterns and beyond R: none of those may count.
    const A = rand(n * l.inFeatures, 0.3);
    const B = rand(l.outFeatures * n, 0.3);
    const lower = rand(n * n, 1);
    const upper = rand(n * n, 1);
    mine.set(k.a, hostTensor("f32", [n, l.inFeatures], A));
    mine.set(k.b, hostTensor("f32", [l.outFeatures, n], B));
    mine.set(k.lower, hostTensor("f32", [n, n], lower));
    mine.set(k.upper, hostTensor("f32", [n, n], upper));
    mine.set(k.ranknum, hostTensor("f32", [1], [R]));
    const C = authorsCore(lower, upper, n, sizes);
    // LoRA with r = R: A' = C·A [R, in], B' = B[:, :R], lora_alpha / r = scale.
    const a2 = new Float32Array(R * l.inFeatures);
    for (let i = 0; i < R; i++)
      for (let j = 0; j < l.inFeatures; j++) {
        let s = 0;
        for (let t = 0; t < R; t++) s += C[i][t] * A[t * l.inFeatures + j];
        a2[i * l.inFeatures + j] = s;
      }
    const b2 = new Float32Array(l.outFeatures * R);
    for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < R; i++) b2[o * R + i] = B[o * n + i];
    loraTensors.set(`${l.key}.lora_A.weight`, hostTensor("f32", [R, l.inFeatures], a2));
    loraTensors.set(`${l.key}.lora_B.weight`, hostTensor("f32", [l.outFeatures, R], b2));
  }
  peft.setAdapterTensors("default", mine);
  const ids = randomIds(2, 6, 100);
  const got = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  const model2 = await loadTestModel("llama_basic");
  const lora = PeftModel.create(model2, {
    peft_type: "LORA",
    r: R,
    lora_alpha: scale * R,
    lora_dropout: 0,
    target_modules: ["q_proj", "v_proj"],
  });
  lora.setAdapterTensors("default", loraTensors);
  const want = (await lora.forward({ inputIds: ids })).logits?.data as Float32Array;
  const base = (await peft.disableAdapter(() => peft.forward({ inputIds: ids }))).logits?.data as Float32Array;
  assert.ok(maxAbsDiff(got, base) > 1e-2, "the adapter changes nothing");
  assert.ok(maxAbsDiff(got, want) < 1e-4, `vs LoRA: ${maxAbsDiff(got, want)}`);
  // merge() folds the same ΔW in.
  peft.mergeAdapter();
  const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  assert.ok(maxAbsDiff(merged, want) < 1e-4, `merged vs LoRA: ${maxAbsDiff(merged, want)}`);
  await model.release();
  await model2.release();
});

/** Drives the controller with chosen core norms, as PeftTrainer would after each update. */
async function driven(config: Record<string, unknown> = CONFIG) {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, config, { seed: 1 });
  const a = peft.adapter("default");
  const c = a.config as TriadaptloraConfig;
  const layers = triadaptloraLayers(peft.info, c);
  const ctl = triadaptloraController(peft.info, c, { totalSteps: null });
  assert.ok(ctl);
  const tensors = new Map(a.tensors);
  const apply = (act: ControllerAction<TriadaptloraConfig> | null) => {
    for (const [k, t] of act?.tensors ?? []) tensors.set(k, t);
  };
  apply(ctl.begin?.(tensors) ?? null);
  /** Sets module i's core so that ‖C‖_F = norms[i] (one entry of L's first block), then runs afterStep(s). */
  const step = (s: number, norms: number[]) => {
    layers.forEach((l, i) => {
      const k = triadaptloraKeys(l.key);
      const n = l.capacity;
      const lower = new Float32Array(n * n);
      lower[0] = norms[i];
      // An entry outside L's pattern (row 0, column 1): masked, it must not count.
      lower[1] = 100;
      tensors.set(k.lower, hostTensor("f32", [n, n], lower));
    });
    const act = ctl.afterStep({ step: s, totalSteps: null, tensors, gradients: new Map(), statistics: new Map() });
    apply(act);
    return act;
  };
  const ranknum = (i: number) => ((tensors.get(triadaptloraKeys(layers[i].key).ranknum) as HostTensor).data as Float32Array)[0];
  return { model, layers, ctl, step, ranknum };
}

describe("TriAdaptLoRA's controller", () => {
  test("a module grows exactly when its score (the change of ‖C‖_F / blocks) reaches τ(t), the n(t)-th largest", async () => {
    const { model, layers, ctl, step, ranknum } = await driven();
    assert.equal(layers.length, 4);
    assert.equal(step(1, [0, 0, 0, 0]), null); // g = 0: no round
    // g = 1 = init_warmup: no round yet; the core is recorded for the round of g = 2.
    assert.equal(step(2, [0.5, 0.1, 0.9, 0.2]), null);
    // g = 2: scores = ‖C‖/1 − 0 = [0.5, 0.1, 0.9, 0.2]; n = trunc((16 − 4)·(2 − 1)/(5 − 1)) = 3,
    // τ = 0.2 (the third largest): modules 0, 2, 3 grow by a block of 2.
    const first = step(3, [1.6, 0.3, 1.0, 1.2]);
    assert.deepEqual(
      layers.map((_, i) => ranknum(i)),
      [3, 1, 3, 3],
    );
    // The norms come from f32 tensors: 0.2 as f32.
    assert.deepEqual(ctl.metrics(), { rank_total: 10, threshold: Math.fround(0.2) });
    assert.deepEqual(first?.config?.rankPattern, Object.fromEntries(layers.map((l, i) => [l.key, [3, 1, 3, 3][i]])));
    // The gates open the grown module's new rows, columns and pattern entries, nothing more.
    const k0 = triadaptloraKeys(layers[0].key);
    const n = layers[0].capacity;
    const gate = (key: string) => [...(((first?.trainable?.get(key) as HostTensor | undefined)?.data ?? []) as Float32Array)];
    const inF = layers[0].inFeatures;
    const ga = gate(k0.a);
    assert.deepEqual([ga[0], ga[2 * inF], ga[3 * inF]], [1, 1, 0]);
    const gl = gate(k0.lower);
    // Slots 0…2 exist: L may hold (0,0), (1,0…2), (2,0…2); U (0,0…2), (1…2,1…2).
    const sub = (g: number[]) => Array.from({ length: 4 }, (_, i) => g.slice(i * n, i * n + 4));
    assert.deepEqual(sub(gl), [
      [1, 0, 0, 0],
      [1, 1, 1, 0],
      [1, 1, 1, 0],
      [0, 0, 0, 0],
    ]);
    assert.deepEqual(sub(gate(k0.upper)), [
      [1, 1, 1, 0],
      [0, 1, 1, 0],
      [0, 1, 1, 0],
      [0, 0, 0, 0],
    ]);
    // g = 3: scores = ‖C‖/blocks − previous: [1.6/2 − 0.5, 0.3 − 0.1, 1.0/2 − 0.9, 1.2/2 − 0.2]
    // = [0.3, 0.2, −0.4, 0.4]; n = trunc(6·2/4) = 3, τ = 0.2: modules 0, 1, 3 grow (module 2
    // has the largest norm but it shrank per block). The total reaches the budget 16.
    step(4, [9, 9, 9, 9]);
    assert.deepEqual(
      layers.map((_, i) => ranknum(i)),
      [5, 3, 3, 5],
    );
    const m = ctl.metrics();
    assert.equal(m.rank_total, 16);
    assert.ok(Math.abs(m.threshold - 0.2) < 1e-7, `${m.threshold}`);
    // Budget reached: no more rounds.
    assert.equal(step(5, [1, 2, 3, 4]), null);
    assert.equal(step(6, [4, 3, 2, 1]), null);
    await model.release();
  });

  test("non-linear: n = trunc((target − total)^coeff); a module at max_rank is passed over", async () => {
    const { model, step, ranknum, ctl } = await driven({ ...CONFIG, rank_growth_model: "non-linear", max_rank: 3 });
    step(1, [0, 0, 0, 0]);
    step(2, [0.5, 0.1, 0.9, 0.2]);
    // g = 2: n = trunc(12^(1/4)) = trunc(1.86) = 1: only module 2 (0.9) grows.
    step(3, [0.5, 0.1, 1.8, 0.2]);
    assert.deepEqual([0, 1, 2, 3].map(ranknum), [1, 1, 3, 1]);
    assert.deepEqual(ctl.metrics(), { rank_total: 6, threshold: Math.fround(0.9) });
    // g = 3: every score is 0 (module 2's is 1.8/2 − 0.9); n = trunc(10^(2/4)) = 3, τ = 0:
    // every module that may grow does, but module 2 is at max_rank 3.
    step(4, [0, 0, 0, 0]);
    assert.deepEqual([0, 1, 2, 3].map(ranknum), [3, 3, 3, 3]);
    await model.release();
  });
});

runConformance({
  name: "TriAdaptLoRA",
  model: "llama_basic",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_weights: false, lora_alpha: 32 },
});

describe("TriAdaptLoRA through the Trainer", () => {
  const root = mkdtempSync(join(tmpdir(), "peftkit-triadaptlora-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);
  // total_step from the run (7 steps); rounds at g = 2, 4, 6.
  const RUN = { ...CONFIG, total_step: null, incre_interval: 2, reference_rank: 6 };
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, RUN, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 7 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 7, lr: 0.05, seed: 3, saveSteps: 2 });

  test("metrics.jsonl shows rank_total and threshold; a run stopped and resumed ends where an uninterrupted one does; the saved adapter reloads", async () => {
    const a = await target();
    await new Trainer(a, source, null, args(join(root, "full")), quiet()).run();
    const records = readFileSync(join(root, "full", "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.loss !== undefined);
    assert.equal(records[0].rank_total, 4);
    assert.equal(records[0].threshold, undefined);
    assert.ok(records[2].rank_total > 4 && Number.isFinite(records[2].threshold), JSON.stringify(records[2]));
    const cfg = a.peft.adapter("default").config as TriadaptloraConfig;
    assert.ok(
      Object.values(cfg.rankPattern ?? {}).some((r) => r > 1),
      JSON.stringify(cfg.rankPattern),
    );

    // Stopped after step 4 (the next step has a round: the norms it scores are in the checkpoint), resumed to 7.
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 4);
    for (const [k, d] of adapterDiffs(a, c)) assert.ok(d <= 1e-6, `${k}: ${d}`);
    assert.deepEqual(c.peft.adapter("default").config, a.peft.adapter("default").config);

    // The saved folder holds each module's R ranks only and gives the trained model's logits.
    const ids = randomIds(2, 6, 100);
    const out = (await a.peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const base2 = await loadTestModel("llama_basic");
    const loaded = PeftModel.fromPretrained(base2, join(root, "full", "checkpoint-7"));
    for (const l of triadaptloraLayers(loaded.info, cfg)) {
      const R = cfg.rankPattern?.[l.key] as number;
      const t = loaded.adapter("default").tensors;
      const k = triadaptloraKeys(l.key);
      assert.deepEqual(t.get(k.a)?.shape, [R, l.inFeatures]);
      assert.deepEqual(t.get(k.lower)?.shape, [R, R]);
      assert.deepEqual([...((t.get(k.ranknum) as HostTensor).data as Float32Array)], [R]);
    }
    const again = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(out, again) < 1e-5, `${maxAbsDiff(out, again)}`);
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
    await base2.release();
  });
});
