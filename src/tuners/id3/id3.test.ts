import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { adapterDiffs, quietProgress, stopThenResume } from "../../testing/resume.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { fullFinetuneGradient } from "../increlora/testing.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { Id3Config } from "./config.js";
import { id3Targets } from "./layers.js";
import { assignSlots, unmaskCount, unmaskedAfter } from "./schedule.js";

const CONFIG = { peft_type: "ID3", target_modules: ["q_proj", "v_proj", "down_proj"], budget: 40, max_steps: 4 };

runConformance({
  name: "ID3",
  model: "llama_basic",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_weights: false },
});
// A classifier head kept with modules_to_save must survive the save (tensorsToSave re-sorts slots).
runConformance({
  name: "ID3 on BERT classification with modules_to_save",
  model: "bert_seq_cls",
  config: {
    peft_type: "ID3",
    target_modules: ["query", "value"],
    budget: 40,
    max_steps: 4,
    init_weights: false,
    modules_to_save: ["classifier"],
  },
  mixedBatch: false,
});

describe("ID³ schedule (Id3.get_num_unmask)", () => {
  test("⌊B/T⌋ per step, +1 for the first B mod T steps; B after T steps, nothing later", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((t) => unmaskCount(t, 10, 4)),
      [3, 3, 2, 2, 0],
    );
    assert.deepEqual(
      [1, 2, 3].map((t) => unmaskCount(t, 2, 3)),
      [1, 1, 0],
    );
    for (const [b, tt] of [
      [7, 3],
      [100, 7],
      [5, 5],
    ])
      assert.equal(unmaskedAfter(tt + 3, b, tt), b);
  });

  test("new entries take free slots, a placeholder's own slot first, positions stay distinct", () => {
    const idx = Int32Array.from([0, 1, 2, 3]);
    const used = Float32Array.from([1, 0, 0, 0]);
    const slots = assignSlots(idx, used, [9, 2]);
    assert.deepEqual(slots, [1, 2]);
    assert.deepEqual([...idx], [0, 9, 2, 3]);
    assert.deepEqual([...used], [1, 1, 1, 0]);
  });
});

/** D³ = |g| / (ε + |θ|)^μ of every still-masked entry of every target, computed independently. */
async function scores(
  model: Awaited<ReturnType<typeof loadTestModel>>,
  peft: PeftModel,
  c: Id3Config,
  ids: number[][],
  chosen: Set<string>,
) {
  const a = peft.adapter("default");
  const out: { key: string; score: number }[] = [];
  for (const t of id3Targets(peft.info, c)) {
    const g = await fullFinetuneGradient(model, peft, t.weight, ids);
    const w = Float32Array.from(peft.info.weight(t.weight).data as Float32Array);
    const idx = a.tensors.get(`${t.key}.id3.indices`)?.data as Int32Array;
    const val = a.tensors.get(`${t.key}.id3.values`)?.data as Float32Array;
    idx.forEach((p, s) => {
      w[p] += val[s];
    });
    g.forEach((gi, p) => {
      const key = `${t.key}@${p}`;
      if (!chosen.has(key)) out.push({ key, score: Math.abs(gi) / (c.eps + Math.abs(w[p])) ** c.exp });
    });
  }
  return out.sort((x, y) => y.score - x.score);
}

const unmasked = (peft: PeftModel, c: Id3Config) => {
  const a = peft.adapter("default");
  const set = new Set<string>();
  for (const t of id3Targets(peft.info, c)) {
    const idx = a.tensors.get(`${t.key}.id3.indices`)?.data as Int32Array;
    const used = a.tensors.get(`${t.key}.id3.used`)?.data as Float32Array;
    idx.forEach((p, s) => {
      if (used[s]) set.add(`${t.key}@${p}`);
    });
  }
  return set;
};

test("ID³: after each step exactly the schedule's count is unmasked, the top D³ scores of the masked entries; only unmasked entries move", async () => {
  const model = await loadTestModel("llama_basic");
  const cfg = { peft_type: "ID3", target_modules: ["v_proj", "down_proj"], budget: 7, max_steps: 3, exp: 1, eps: 1e-2 };
  const peft = PeftModel.create(model, cfg, { seed: 4 });
  const c = peft.adapter("default").config as Id3Config;
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 5 });
  const ids = randomIds(2, 6, 100);
  let chosen = new Set<string>();
  for (let t = 1; t <= 4; t++) {
    const ranked = await scores(model, peft, c, ids, chosen);
    const before = new Map([...peft.adapter("default").tensors].map(([k, v]) => [k, Float32Array.from(v.data as Float32Array)]));
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 0.01 });
    const now = unmasked(peft, c);
    const u = unmaskCount(t, 7, 3);
    assert.equal(now.size, unmaskedAfter(t, 7, 3), `step ${t}`);
    assert.equal(trainer.controllerMetrics().id3_unmasked, now.size);
    const added = [...now].filter((k) => !chosen.has(k)).sort();
    assert.deepEqual(
      added,
      ranked
        .slice(0, u)
        .map((r) => r.key)
        .sort(),
      `step ${t}: the top ${u} scores`,
    );
    if (u > 0) assert.ok(ranked[u - 1].score > ranked[u].score * (1 + 1e-4), `step ${t}: a clear cut`);
    // Only the entries unmasked before this step changed in it.
    for (const target of id3Targets(peft.info, c)) {
      const idx = before.get(`${target.key}.id3.indices`) as Float32Array;
      const v0 = before.get(`${target.key}.id3.values`) as Float32Array;
      const v1 = peft.adapter("default").tensors.get(`${target.key}.id3.values`)?.data as Float32Array;
      idx.forEach((p, s) => {
        const was = chosen.has(`${target.key}@${p}`);
        assert.equal(v1[s] !== v0[s], was, `step ${t}: ${target.key} slot ${s} (position ${p}) moved: ${v1[s] !== v0[s]}`);
      });
    }
    chosen = now;
  }
  assert.equal(trainer.trainedParameters(), 7);
  await trainer.release();
  await model.release();
});

describe("ID³ resume", () => {
  const root = mkdtempSync(join(tmpdir(), "peftkit-id3-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const config = { peft_type: "ID3", target_modules: ["q_proj", "v_proj"], budget: 30, max_steps: 6 };
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, config, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 8 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 8, lr: 0.05, seed: 3, saveSteps: 2 });

  test("a run stopped mid-schedule and resumed ends where an uninterrupted one does (slots exactly)", async () => {
    const a = await target();
    await new Trainer(a, source, null, args(join(root, "full")), quietProgress()).run();
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 3);
    for (const [k, d] of adapterDiffs(a, c)) assert.ok(k.endsWith(".values") ? d <= 1e-6 : d === 0, `${k}: ${d}`);
    assert.equal(c.trainer.controllerMetrics().id3_unmasked, 30);
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });
});
