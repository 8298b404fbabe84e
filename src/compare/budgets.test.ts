import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { configLabel, explicitConfigs, nearestConfigs, parseBudgets } from "./budgets.js";
import { runId, settingsHash } from "./plan.js";

describe("--budgets", () => {
  test("knob groups and parameter targets", () => {
    const b = parseBudgets("r=4,8,16;tokens=10 bottleneck=64");
    assert.deepEqual(b.values, { r: [4, 8, 16], tokens: [10], bottleneck: [64] });
    assert.deepEqual(explicitConfigs("dora", b).map(configLabel), ["r=4", "r=8", "r=16"]);
    assert.deepEqual(explicitConfigs("prefix", b).map(configLabel), ["tokens=10"]);
    assert.deepEqual(explicitConfigs("ia3", b).map(configLabel), ["default"]);
    assert.deepEqual(explicitConfigs("lora", parseBudgets(undefined)).map(configLabel), ["r=8"]);
    assert.deepEqual(parseBudgets("params=100k,1.5M,300").params, [100_000, 1_500_000, 300]);
  });

  test("bad budgets are one-line errors naming the group", () => {
    assert.throws(() => parseBudgets("rank=4"), /--budgets rank=4: unknown knob "rank"/);
    assert.throws(() => parseBudgets("r=0"), /--budgets r=0: "0" must be an integer/);
    assert.throws(() => parseBudgets("r=4.5"), /must be an integer/);
    assert.throws(() => parseBudgets("params=lots"), /not a parameter count/);
    assert.throws(() => parseBudgets("r"), /expected KNOB=V1,V2/);
    assert.throws(() => parseBudgets("r=4;params=10k"), /either params=/);
  });

  test("params= picks the nearest count in ratio, ties to the smaller", () => {
    const counts = [
      { value: 1, params: 1000 },
      { value: 2, params: 2000 },
      { value: 4, params: 4000 },
      { value: 8, params: 8000 },
    ];
    assert.deepEqual(nearestConfigs(counts, [2900]), [4]); // ln(4000/2900)=0.32 < ln(2900/2000)=0.37
    assert.deepEqual(nearestConfigs(counts, [Math.sqrt(2000 * 4000)]), [2]);
    assert.deepEqual(nearestConfigs(counts, [10, 1e9, 1e9]), [1, 8]);
  });

  test("run ids are stable and change with the settings", () => {
    const s = { lr: 1e-3, maxSteps: 10, runSeconds: null, batchSize: 8, maxLength: 256, warmup: 0 };
    const id = runId("t", "lora", { knob: "r", value: 8 }, 2, s);
    assert.equal(id, `t.lora.r=8.s2.${settingsHash(s)}`);
    assert.equal(id, runId("t", "lora", { knob: "r", value: 8 }, 2, { ...s }));
    assert.notEqual(settingsHash(s), settingsHash({ ...s, maxSteps: 11 }));
    assert.notEqual(settingsHash(s), settingsHash({ ...s, warmup: 0.1 }));
    assert.match(settingsHash(s), /^[0-9a-f]{6}$/);
  });
});
