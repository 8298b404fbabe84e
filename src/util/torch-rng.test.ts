import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { kaimingUniformVera, TorchGenerator } from "./torch-rng.js";

interface Goldens {
  torch_version: string;
  uniform: { seed: number; lo: number; hi: number; values: number[] }[];
  randperm: { seed: number; n: number; perm: number[] }[];
  vera: { seed: number; r: number; in: number; out: number; vera_A: number[]; vera_B: number[] }[];
}

const G = JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/torch-rng.json"), "utf8")) as Goldens;

describe(`torch's CPU generator, bit for bit (goldens from torch ${G.torch_version})`, () => {
  test("mt19937 reference values (seed 5489: the 10000th draw is 4123659995)", () => {
    const g = new TorchGenerator(5489);
    let v = 0;
    for (let i = 0; i < 10000; i++) v = g.random();
    assert.equal(v, 4123659995);
  });

  test("uniform_(lo, hi) on float32, across the 624-draw refill, with seeds above 2³²", () => {
    for (const u of G.uniform) {
      const got = new TorchGenerator(BigInt(u.seed)).uniform(u.values.length, u.lo, u.hi);
      assert.deepEqual([...got], u.values, `seed ${u.seed}`);
    }
  });

  test("randperm(n)", () => {
    for (const p of G.randperm) assert.deepEqual([...new TorchGenerator(p.seed).randperm(p.n)], p.perm, `seed ${p.seed} n ${p.n}`);
  });

  test("VeRA's projections: kaiming vera_A [r, in] then vera_B [out, r] from one generator", () => {
    for (const v of G.vera) {
      const g = new TorchGenerator(v.seed);
      assert.deepEqual([...kaimingUniformVera(g, v.r, v.in)], v.vera_A);
      assert.deepEqual([...kaimingUniformVera(g, v.out, v.r)], v.vera_B);
    }
  });
});
