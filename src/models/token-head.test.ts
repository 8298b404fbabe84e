/**
 * Token classification heads: the logits at every position are the head applied to that
 * position's final hidden state (BERT: `classifier`; llama-family, as transformers'
 * LlamaForTokenClassification: `score` with a bias).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../testing/paths.js";
import { PreTrainedModel } from "./pretrained.js";

const GOLDEN = join(REPO_ROOT, "test/golden/models");
const config = (name: string) => JSON.parse(readFileSync(join(GOLDEN, name, "config.json"), "utf8")) as Record<string, unknown>;

for (const [name, head] of [
  ["llama_basic", "score"],
  ["qwen2", "score"],
  ["bert_token_cls", "classifier"],
] as const) {
  test(`${name}: token classification logits = ${head}(last hidden state) at every position`, async () => {
    const model = PreTrainedModel.fromConfig(config(name), "token_classification", { seed: 5, numLabels: 3 });
    const w = model.weights.get(`${head}.weight`);
    const b = model.weights.get(`${head}.bias`);
    assert.ok(w && b, `${head}.weight and ${head}.bias exist`);
    assert.deepEqual(w.shape.slice(0, 1), [3]);
    const bias = b.data as Float32Array;
    bias.set([0.5, -1, 2]);
    const ids = [
      [3, 17, 9, 42, 5],
      [8, 1, 23, 4, 0],
    ];
    const out = await model.forward(
      {
        inputIds: ids,
        attentionMask: [
          [1, 1, 1, 1, 1],
          [1, 1, 1, 1, 0],
        ],
      },
      { outputHiddenStates: true },
    );
    const h = out.lastHiddenState!;
    const z = out.logits!;
    assert.deepEqual(z.shape, [2, 5, 3]);
    const hidden = h.shape[2];
    const W = w.data as Float32Array;
    for (let p = 0; p < 10; p++) {
      for (let c = 0; c < 3; c++) {
        let want = bias[c];
        for (let k = 0; k < hidden; k++) want += W[c * hidden + k] * h.data[p * hidden + k];
        assert.ok(Math.abs(z.data[p * 3 + c] - want) < 1e-4, `position ${p}, class ${c}: ${z.data[p * 3 + c]} vs ${want}`);
      }
    }
    await model.release();
  });
}
