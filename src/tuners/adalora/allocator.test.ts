/**
 * AdaLoRA's rank allocator: closed forms worked by hand from PEFT's formulas, and a float32 PyTorch
 * re-derivation of PEFT 0.20's RankAllocator / update_and_allocate run on fixed tensors and
 * gradients (test/golden/peft-adalora/allocator.json, scripts/goldens/make_adalora_goldens.py).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { REPO_ROOT } from "../../testing/paths.js";
import type { ControllerAction } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import { budgetSchedule, keepMasks, tripletScores, updateImportance, zeroImportance } from "./allocator.js";
import { type AdaLoraConfig, parseAdaLoraConfig } from "./config.js";
import { AdaLoraController } from "./controller.js";

interface GoldenStep {
  global_step: number;
  budget: number;
  threshold?: number;
  tensors: Record<string, number[]>;
  gradients: Record<string, number[]>;
  e_after: Record<string, number[]>;
  rank_pattern: Record<string, boolean[]> | null;
  kept: number | null;
}
interface Golden {
  allocator: {
    config: Record<string, number>;
    modules: string[];
    shapes: Record<string, [number, number]>;
    steps: GoldenStep[];
  };
  schedules: { config: Record<string, number>; budget_mask: [number, boolean][] }[];
}

const GOLDEN = JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/peft-adalora/allocator.json"), "utf8")) as Golden;

/** Just what targetedLinears reads: two "q" layers of in 5, out 3. */
function fakeInfo(modules: string[], out: number, inF: number): ModelInfo {
  return {
    modelType: "fake",
    linearLayers: modules,
    allLinear: modules,
    fanInFanOut: false,
    peftName: (p: string) => p,
    canonicalName: (p: string) => p,
    weight: () => hostTensor("f32", [out, inF], new Float32Array(out * inF)),
    hasWeight: () => true,
  } as unknown as ModelInfo;
}

function goldenController(): { ctl: AdaLoraController; config: AdaLoraConfig } {
  const g = GOLDEN.allocator;
  const c = g.config;
  const config = parseAdaLoraConfig(
    {
      peft_type: "ADALORA",
      target_modules: ["q"],
      init_r: c.init_r,
      target_r: c.target_r,
      tinit: c.tinit,
      tfinal: c.tfinal,
      total_step: c.total_step,
      delta_t: c.deltaT,
      beta1: c.beta1,
      beta2: c.beta2,
    },
    "test",
  );
  const [out, r] = g.shapes.lora_B;
  const inF = g.shapes.lora_A[1];
  assert.equal(r, c.init_r);
  return { ctl: new AdaLoraController(fakeInfo(g.modules, out, inF), config, { totalSteps: 1000 }), config };
}

function stepInputs(s: GoldenStep): {
  tensors: Map<string, HostTensor>;
  gradients: Map<string, HostTensor>;
  statistics: Map<string, HostTensor>;
} {
  const shapes = GOLDEN.allocator.shapes;
  const t = (k: string, v: number[]) => hostTensor("f32", shapes[k.slice(k.lastIndexOf(".") + 1)], Float32Array.from(v));
  return {
    tensors: new Map(Object.entries(s.tensors).map(([k, v]) => [k, t(k, v)])),
    gradients: new Map(Object.entries(s.gradients).map(([k, v]) => [k, t(k, v)])),
    statistics: new Map(),
  };
}

describe("AdaLoRA budget schedule (RankAllocator.budget_schedule)", () => {
  test("by hand: init 24, target 16, tinit 2, tfinal 3, total 10, deltaT 2", () => {
    const s = { tinit: 2, tfinal: 3, totalStep: 10, deltaT: 2, initBgt: 24, targetBgt: 16 };
    // step ≤ 2: 24; steps 3..7: ⌊8·(1 − (step − 2)/5)³ + 16⌋ = ⌊20.096⌋, ⌊17.728⌋, ⌊16.512⌋, ⌊16.064⌋, 16;
    // after 7: 16 with masking on every step; in between masking when step % 2 = 0.
    const want: [number, boolean][] = [
      [24, false],
      [24, false],
      [24, false],
      [20, false],
      [17, true],
      [16, false],
      [16, true],
      [16, false],
      [16, true],
      [16, true],
      [16, true],
    ];
    assert.deepEqual(
      want.map((_, step) => {
        const r = budgetSchedule(step, s);
        return [r.budget, r.mask];
      }),
      want,
    );
  });

  test("equals the Python schedule step by step (three configs, incl. PEFT's docs example 200/1000/3000/10)", () => {
    for (const { config: c, budget_mask } of GOLDEN.schedules) {
      const s = {
        tinit: c.tinit,
        tfinal: c.tfinal,
        totalStep: c.total_step,
        deltaT: c.deltaT,
        initBgt: c.init_bgt,
        targetBgt: c.target_bgt,
      };
      budget_mask.forEach(([budget, mask], step) => {
        assert.deepEqual(budgetSchedule(step, s), { budget, mask }, `step ${step} of ${JSON.stringify(c)}`);
      });
    }
  });
});

describe("AdaLoRA importance scores", () => {
  test("update_ipt: EMA sensitivity and uncertainty, by hand", () => {
    const s = zeroImportance(1);
    // ipt = |2·3| = 6; Ī = 0.15·6 = 0.9; Ū = 0.15·|6 − 0.9| = 0.765
    updateImportance([2], [3], s, 0.85, 0.85);
    assert.ok(Math.abs(s.ipt[0] - 0.9) < 1e-6 && Math.abs(s.unc[0] - 0.765) < 1e-6, `${s.ipt[0]} ${s.unc[0]}`);
    // ipt = 1; Ī = 0.85·0.9 + 0.15 = 0.915; Ū = 0.85·0.765 + 0.15·|1 − 0.915| = 0.663
    updateImportance([1], [-1], s, 0.85, 0.85);
    assert.ok(Math.abs(s.ipt[0] - 0.915) < 1e-6 && Math.abs(s.unc[0] - 0.663) < 1e-6, `${s.ipt[0]} ${s.unc[0]}`);
  });

  test("triplet score = E's score + mean of A's row scores + mean of B's column scores, by hand", () => {
    const r = 2;
    const imp = (ipt: number[], unc: number[]) => ({ ipt: Float32Array.from(ipt), unc: Float32Array.from(unc) });
    const a = imp([1, 2, 3, 4, 5, 6], [1, 1, 1, 2, 2, 2]); // [2, 3]: row scores 1,2,3 and 8,10,12
    const e = imp([0.5, 1], [2, 3]); // 1, 3
    const b = imp([1, 2, 3, 4], [1, 1, 1, 1]); // [2, 2]: column 0 = 1, 3; column 1 = 2, 4
    assert.deepEqual([...tripletScores(a, e, b, r)], [1 + 2 + 2, 3 + 10 + 3]);
  });

  test("kthvalue threshold keeps exactly `budget` triplets of distinct scores; k ≤ 0 keeps all", () => {
    const scores = [Float32Array.from([0.3, 0.9, 0.1, 0.5]), Float32Array.from([0.7, 0.2, 0.8, 0.4])];
    for (let budget = 1; budget <= 8; budget++) {
      const { keep } = keepMasks(scores, 8, budget);
      assert.equal(keep.flat().filter(Boolean).length, budget, `budget ${budget}`);
      const kept = scores.flatMap((s, i) => [...s].filter((_, j) => keep[i][j]));
      const dropped = scores.flatMap((s, i) => [...s].filter((_, j) => !keep[i][j]));
      assert.ok(Math.min(...kept) > Math.max(...dropped, Number.NEGATIVE_INFINITY), "the highest scores stay");
    }
    assert.deepEqual(keepMasks(scores, 8, 8).keep.flat(), new Array(8).fill(true));
  });
});

describe("AdaLoRA controller = PEFT's update_and_allocate (float32 PyTorch re-derivation)", () => {
  test("budget, rank_pattern, masked E and kept count at every step through all three phases", () => {
    const { ctl } = goldenController();
    assert.deepEqual(ctl.metrics(), { adalora_budget: 8, rank_total: 8 });
    for (const s of GOLDEN.allocator.steps) {
      const { tensors, gradients, statistics } = stepInputs(s);
      const act = ctl.afterStep({ step: s.global_step + 1, totalSteps: 12, tensors, gradients, statistics });
      const m = ctl.metrics();
      assert.equal(m.adalora_budget, s.budget, `budget at global_step ${s.global_step}`);
      if (s.rank_pattern) assert.equal(m.rank_total, s.kept);
      for (const [k, want] of Object.entries(s.e_after)) {
        const got = (act?.tensors?.get(k) ?? tensors.get(k))?.data as Float32Array;
        assert.deepEqual([...got], want, `${k} at global_step ${s.global_step}`);
      }
      const pattern = act?.config?.rankPattern;
      if (pattern) assert.deepEqual(pattern, s.rank_pattern, `rank_pattern at global_step ${s.global_step}`);
    }
  });

  test("a controller restored from state() continues exactly like the uninterrupted one", () => {
    const steps = GOLDEN.allocator.steps;
    const run = (from: number, to: number, ctl: AdaLoraController) => {
      const acts: (ControllerAction<AdaLoraConfig> | null)[] = [];
      for (const s of steps.slice(from, to)) {
        acts.push(ctl.afterStep({ step: s.global_step + 1, totalSteps: 12, ...stepInputs(s) }));
      }
      return acts;
    };
    for (const cut of [3, 7, 9]) {
      const a = goldenController().ctl;
      const b = goldenController().ctl;
      run(0, cut, a);
      run(0, cut, b);
      const state = b.state();
      const c = goldenController().ctl;
      const restored = c.restore(state);
      assert.deepEqual(restored?.config?.rankPattern ?? null, steps[cut - 1].rank_pattern);
      const want = run(cut, steps.length, a);
      const got = run(cut, steps.length, c);
      assert.deepEqual(got, want, `resumed after ${cut} steps`);
      assert.deepEqual(c.metrics(), a.metrics());
    }
  });

  test("total_step left out is the run's planned steps, written into the config on the first update", () => {
    const g = GOLDEN.allocator;
    const config = parseAdaLoraConfig({ peft_type: "ADALORA", target_modules: ["q"], init_r: 4, target_r: 2 }, "test");
    assert.equal(config.totalStep, null);
    const ctl = new AdaLoraController(fakeInfo(g.modules, 3, 5), config, { totalSteps: 12 });
    const act = ctl.afterStep({ step: 1, totalSteps: 12, ...stepInputs(g.steps[0]) });
    assert.equal(act?.config?.totalStep, 12);
    assert.throws(
      () => new AdaLoraController(fakeInfo(g.modules, 3, 5), { ...config, tinit: 6, tfinal: 6 }, { totalSteps: 12 }),
      /"tinit" \(6\) \+ "tfinal" \(6\) must be < "total_step" \(12\)/,
    );
    assert.throws(() => new AdaLoraController(fakeInfo(g.modules, 3, 5), config, { totalSteps: null }), /field "total_step" is missing/);
  });
});
