/**
 * Prompt learning is batch-invariant, as the base model is: a row's logits, greedy continuation
 * and exact-match result do not depend on its left padding or on the other rows of its batch.
 * Soft tokens and prefix rows take the positions just before the row's first real token, so a
 * left-padded row sees what it sees alone.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { hostTensor } from "../../engine/ir/host.js";
import { positionsFromMask } from "../../models/inputs.js";
import { type CompletionItem, type CompletionTokenizer, exactMatchResults } from "../../train/evaluate.js";
import { loadTestModel, maxAbsDiff, type TestModel } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { rows } from "./testing.js";

const METHODS: Record<string, { config: Readonly<Record<string, unknown>>; virtual: number }> = {
  "prompt tuning": { config: { peftType: "PROMPT_TUNING", numVirtualTokens: 4 }, virtual: 4 },
  "prefix tuning": { config: { peftType: "PREFIX_TUNING", numVirtualTokens: 3 }, virtual: 0 },
};

const SHORT = [7, 3];
const LONG = [5, 9, 11, 13, 17, 19];

/** Rows left-padded to the longest with `pad`, their mask and their positions (as generate builds them). */
function leftPad(prompts: number[][], pad = 0) {
  const t = Math.max(...prompts.map((p) => p.length));
  const ids = prompts.map((p) => [...Array(t - p.length).fill(pad), ...p]);
  const mask = prompts.map((p) => [...Array(t - p.length).fill(0), ...p.map(() => 1)]);
  const m = hostTensor(
    "i64",
    [prompts.length, t],
    BigInt64Array.from(mask.flat(), (x) => BigInt(x)),
  );
  const pos = positionsFromMask(m).data as BigInt64Array;
  const positionIds = prompts.map((_, i) => Array.from(pos.subarray(i * t, (i + 1) * t), Number));
  return { ids, mask, positionIds, t };
}

/** A tokenizer whose words are token ids ("w7 w3"): every generated token shows in the prediction. */
function words(eos: number | null): CompletionTokenizer {
  return {
    encode: (text: string) =>
      text
        .split(" ")
        .filter((w) => w)
        .map((w) => Number(w.slice(1))),
    decode: (ids: readonly number[], o?: { skipSpecialTokens?: boolean }) =>
      ids
        .filter((i) => !(o?.skipSpecialTokens && i === eos))
        .map((i) => `w${i}`)
        .join(" "),
    eosTokenId: eos,
  };
}

async function peftOn(model: TestModel, config: Readonly<Record<string, unknown>>): Promise<PeftModel> {
  // Random (non-default) adapter tensors: a zero prefix or a prompt of real tokens would hide position errors.
  return PeftModel.create(await loadTestModel(model), config, { seed: 11 });
}

describe("prompt learning is batch-invariant", () => {
  for (const [method, { config, virtual: n }] of Object.entries(METHODS)) {
    for (const model of ["llama_gqa_tied", "gpt2"] as const) {
      test(`${method} on ${model}: a left-padded row's logits equal the row's logits alone`, async () => {
        const peft = await peftOn(model, config);
        try {
          const { ids, mask, positionIds, t } = leftPad([SHORT, LONG]);
          const batch = await peft.forward({ inputIds: ids, attentionMask: mask, positionIds });
          const alone = await peft.forward({ inputIds: [SHORT] });
          const full = await peft.forward({ inputIds: [LONG] });
          const logits = batch.logits as { shape: number[]; data: Float32Array };
          const v = logits.shape[2];
          assert.deepEqual(logits.shape, [2, n + t, v]);
          const padN = t - SHORT.length;
          const row = (r: number, from: number, to: number) =>
            rows(logits.data, 2, n + t, v, from, to).subarray(r * (to - from) * v, (r + 1) * (to - from) * v);
          // Soft tokens (input-independent) and real tokens; padding positions are not compared.
          const want0 = alone.logits?.data as Float32Array;
          const d0 = Math.max(
            n ? maxAbsDiff(row(0, 0, n), want0.subarray(0, n * v)) : 0,
            maxAbsDiff(row(0, n + padN, n + t), want0.subarray(n * v)),
          );
          const d1 = maxAbsDiff(row(1, 0, n + t), full.logits?.data as Float32Array);
          assert.ok(d0 < 1e-5, `padded row: max |diff| ${d0}`);
          assert.ok(d1 < 1e-5, `unpadded row: max |diff| ${d1}`);
        } finally {
          await peft.base.release();
        }
      });

      test(`${method} on ${model}: greedy generate of a short prompt is the same alone and in a batch`, async () => {
        const peft = await peftOn(model, config);
        try {
          const opts = { maxNewTokens: 8, eosTokenId: [] as number[] };
          const [alone] = await peft.generate([SHORT], opts);
          const [longAlone] = await peft.generate([LONG], opts);
          const batch = await peft.generate([LONG, SHORT], opts);
          assert.deepEqual(batch[1], alone);
          assert.deepEqual(batch[0], longAlone);
        } finally {
          await peft.base.release();
        }
      });
    }

    test(`${method}: exact-match results per item are the same for batch size 1 and 4`, async () => {
      const peft = await peftOn("llama_gqa_tied", config);
      try {
        const prompts = [SHORT, LONG, [4, 8, 15], [16, 23, 42, 8, 4]];
        // References of different lengths give different token budgets within one batch.
        const items: CompletionItem[] = prompts.map((prompt, i) => ({ prompt, completion: ["w1", "w1 w2 w3 w4 w5", "w5 w6", "w2"][i] }));
        // One item's reference is the start of its own greedy continuation, ended by a token made eos:
        // a hit to keep.
        const [cont] = await peft.generate([SHORT], { maxNewTokens: 8, eosTokenId: [] });
        const gen = cont.slice(SHORT.length);
        const k = gen.findIndex((g, j) => j > 0 && !gen.slice(0, j).includes(g));
        assert.ok(k > 0, `a continuation with a new token: ${gen}`);
        const tok = words(gen[k]);
        items[0] = { prompt: SHORT, completion: tok.decode(gen.slice(0, k)) };
        const one = await exactMatchResults(peft, items, tok, undefined, 1);
        const four = await exactMatchResults(peft, items, tok, undefined, 4);
        assert.equal(one[0].hit, true);
        assert.deepEqual(four, one);
      } finally {
        await peft.base.release();
      }
    });
  }
});
