/**
 * add_weighted_adapter against test/golden/merge/merge.json (scripts/goldens/make_merge_goldens.py:
 * our own torch re-derivation of PEFT's merge_utils and add_weighted_adapter, not PEFT output):
 * linear, negation, cat, ties (total/frequency), magnitude_prune as A and B; svd, ties_svd and
 * magnitude_prune_svd as ΔW = B·A (independent of the singular vectors' signs); torch.quantile.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { loadTestModel } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { quantile } from "./merge-utils.js";
import type { CombinationType } from "./weighted.js";

interface Case {
  method: CombinationType;
  adapters: string[];
  weights: number[];
  density?: number;
  sign?: "total" | "frequency";
  svd_rank?: number;
  a?: number[];
  b?: number[];
  delta?: number[];
}
interface Golden {
  layer: string;
  in_features: number;
  out_features: number;
  adapters: Record<string, { r: number; lora_alpha: number; a: number[]; b: number[] }>;
  cases: Case[];
  quantile: { values: number[]; q: number[]; torch: number[] };
}

const G = JSON.parse(readFileSync(join(REPO_ROOT, "test/golden/merge/merge.json"), "utf8")) as Golden;
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

function product(b: ArrayLike<number>, a: ArrayLike<number>, out: number, r: number, inF: number): Float64Array {
  const d = new Float64Array(out * inF);
  for (let o = 0; o < out; o++) for (let k = 0; k < r; k++) for (let i = 0; i < inF; i++) d[o * inF + i] += b[o * r + k] * a[k * inF + i];
  return d;
}

describe("add_weighted_adapter against the torch re-derivation (test/golden/merge)", async () => {
  const m = await loadTestModel("llama_basic");
  const names = Object.keys(G.adapters);
  const peft = new PeftModel(m);
  for (const [i, n] of names.entries()) {
    const g = G.adapters[n];
    peft.addAdapter(n, { peftType: "LORA", r: g.r, loraAlpha: g.lora_alpha, initLoraWeights: false }, { seed: i + 1 });
    peft.setAdapterTensors(
      n,
      new Map<string, HostTensor>([
        [`${G.layer}.lora_A.weight`, hostTensor("f32", [g.r, G.in_features], Float32Array.from(g.a))],
        [`${G.layer}.lora_B.weight`, hostTensor("f32", [G.out_features, g.r], Float32Array.from(g.b))],
      ]),
    );
  }
  G.cases.forEach((c, i) => {
    test(`${c.method}(${c.adapters.join(", ")}; ${c.weights.join(", ")}${c.density ? `; density ${c.density}` : ""}${c.sign ? `, ${c.sign}` : ""}${c.svd_rank ? `; rank ${c.svd_rank}` : ""})`, () => {
      const got = peft.addWeightedAdapter(c.adapters, c.weights, `case${i}`, {
        combinationType: c.method,
        density: c.density,
        majoritySignMethod: c.sign,
        svdRank: c.svd_rank,
      });
      const A = got.tensors.get(`${G.layer}.lora_A.weight`) as HostTensor;
      const B = got.tensors.get(`${G.layer}.lora_B.weight`) as HostTensor;
      if (c.delta) {
        const r = A.shape[0];
        const d = product(B.data as Float32Array, A.data as Float32Array, G.out_features, r, G.in_features);
        const scale = Math.max(...c.delta.map(Math.abs));
        assert.ok(maxDiff(d, c.delta) < 1e-5 * scale, `ΔW max diff ${maxDiff(d, c.delta)} (scale ${scale})`);
      } else {
        assert.ok(
          maxDiff(A.data as Float32Array, c.a as number[]) < 2e-6,
          `A max diff ${maxDiff(A.data as Float32Array, c.a as number[])}`,
        );
        assert.ok(
          maxDiff(B.data as Float32Array, c.b as number[]) < 2e-6,
          `B max diff ${maxDiff(B.data as Float32Array, c.b as number[])}`,
        );
      }
    });
  });
  test("quantile = torch.quantile (linear interpolation)", () => {
    const { values, q, torch } = G.quantile;
    q.forEach((x, i) => {
      assert.ok(Math.abs(quantile(values, x) - torch[i]) < 1e-12, `q ${x}: ${quantile(values, x)} vs ${torch[i]}`);
    });
  });
});
