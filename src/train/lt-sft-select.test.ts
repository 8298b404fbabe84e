/**
 * LT-SFT's selection against a closed form: rank every (layer, position) by |θ₁ − θ₀| (ties:
 * layer order, then position), keep the first K. One threshold for all layers, so a layer that
 * moved little may keep nothing.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Rng } from "../util/rng.js";
import { selectLargestChanges } from "./lt-sft-select.js";

function closedForm(layers: { key: string; change: Float32Array }[], k: number): Map<string, number[]> {
  const all = layers.flatMap((l, li) => Array.from(l.change, (v, i) => ({ li, i, m: Number.isNaN(v) ? -1 : Math.abs(v) })));
  all.sort((a, b) => b.m - a.m || a.li - b.li || a.i - b.i);
  const out = new Map<string, number[]>();
  for (const { li, i } of all.slice(0, k)) {
    const key = layers[li].key;
    out.set(
      key,
      [...(out.get(key) ?? []), i].sort((a, b) => a - b),
    );
  }
  return out;
}

const asArrays = (m: Map<string, Int32Array>) => new Map([...m].map(([k, v]) => [k, [...v]]));

describe("LT-SFT selection (global top-K of |θ₁ − θ₀|)", () => {
  test("equals the closed form on random changes of different scales", () => {
    const rng = new Rng(7);
    const layers = [
      { key: "a", scale: 1, n: 60 },
      { key: "b", scale: 0.1, n: 40 },
      { key: "c", scale: 3, n: 25 },
    ].map(({ key, scale, n }) => ({ key, change: Float32Array.from({ length: n }, () => scale * (2 * rng.next() - 1)) }));
    for (const k of [1, 7, 30, 125]) assert.deepEqual(asArrays(selectLargestChanges(layers, k)), closedForm(layers, k), `k=${k}`);
  });

  test("the threshold is global: a layer that moved little keeps nothing", () => {
    const big = { key: "big", change: Float32Array.from([5, -4, 3, 0.5]) };
    const small = { key: "small", change: Float32Array.from([0.1, -0.2, 0.3]) };
    assert.deepEqual(asArrays(selectLargestChanges([small, big], 3)), new Map([["big", [0, 1, 2]]]));
  });

  test("ties keep exactly K (layer order, then position); NaN ranks last", () => {
    const a = { key: "a", change: Float32Array.from([1, 2, 1, Number.NaN]) };
    const b = { key: "b", change: Float32Array.from([1, -1, 2]) };
    const got = selectLargestChanges([a, b], 4);
    assert.deepEqual(asArrays(got), closedForm([a, b], 4));
    assert.deepEqual(
      asArrays(got),
      new Map([
        ["a", [0, 1, 2]],
        ["b", [2]],
      ]),
    );
    assert.throws(() => selectLargestChanges([a, b], 8), /cannot keep 8 entries of the 7/);
  });
});
