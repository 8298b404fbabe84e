/**
 * OFT and BOFT adapter folders in HF PEFT 0.20.0's format load and reproduce the logits of
 * scripts/goldens/make_oft_goldens.py (our plain-torch re-derivation of PEFT's math, not PEFT),
 * unmerged and after mergeAndUnload, within the goldens' atol (1e-4). BOFT's permutations match
 * the script's table of (in_features, block size/num, butterfly factor).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readJsonFile } from "../../io/hf-folder.js";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from "../../models/auto.js";
import type { ForwardInputs, PreTrainedModel } from "../../models/pretrained.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { butterflyLayout } from "../boft/butterfly.js";
import { PeftConfigError } from "../config.js";
import { PeftModel } from "../peft-model.js";

const GOLDEN_PEFT = resolve(REPO_ROOT, "test/golden/peft");
const CASES = ["oft_llama", "oft_llama_exact_block_share_coft", "boft_llama", "boft_bert_seq_cls"];

interface Meta {
  base_model: string;
  architecture: string;
  num_labels?: number;
  atol: number;
  inputs: string[];
  compare: { logits: { valid: string | null } };
}

function maxDiff(got: Float32Array, want: Float32Array, valid: HostTensor | null): number {
  assert.equal(got.length, want.length);
  const per = valid ? want.length / valid.data.length : want.length;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (valid && !Number((valid.data as ArrayLike<number | bigint>)[Math.floor(i / per)])) continue;
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

describe("OFT / BOFT folders in PEFT's format match the PyTorch goldens", () => {
  for (const name of CASES) {
    test(name, async () => {
      const dir = join(GOLDEN_PEFT, name);
      const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as Meta;
      const golden = readSafetensors(join(dir, "golden.safetensors")).tensors;
      const modelDir = join(GOLDEN_MODELS, meta.base_model);
      const model: PreTrainedModel = meta.architecture.endsWith("ForSequenceClassification")
        ? await AutoModelForSequenceClassification.fromPretrained(modelDir, { numLabels: meta.num_labels })
        : await AutoModelForCausalLM.fromPretrained(modelDir);
      try {
        const inputs: ForwardInputs = { inputIds: golden.input_ids, attentionMask: golden.attention_mask };
        if (meta.inputs.includes("token_type_ids")) inputs.tokenTypeIds = golden.token_type_ids;
        const valid = meta.compare.logits.valid ? golden[meta.compare.logits.valid] : null;
        const want = golden.logits.data as Float32Array;
        const base = maxDiff((await model.forward(inputs)).logits?.data as Float32Array, want, valid);
        const peft = PeftModel.fromPretrained(model, dir);
        assert.ok(base > 1e-2, `the adapter barely matters (${base})`);
        const unmerged = maxDiff((await peft.forward(inputs)).logits?.data as Float32Array, want, valid);
        assert.ok(unmerged <= meta.atol, `unmerged: ${unmerged}`);
        const merged = peft.mergeAndUnload();
        const m = maxDiff((await merged.forward(inputs)).logits?.data as Float32Array, want, valid);
        assert.ok(m <= meta.atol, `merged: ${m}`);
      } finally {
        await model.release();
      }
    });
  }

  test("BOFT permutations equal PEFT's block_butterfly_perm for every layout of the table, and PEFT's refusals are ours", () => {
    const table = JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/boft-permutations.json"), "utf8")) as {
      rows: {
        in_features: number;
        boft_block_size: number;
        boft_block_num: number;
        boft_n_butterfly_factor: number;
        perms: number[][] | null;
      }[];
    };
    let checked = 0;
    for (const row of table.rows) {
      const c = { boftBlockSize: row.boft_block_size, boftBlockNum: row.boft_block_num, boftNButterflyFactor: row.boft_n_butterfly_factor };
      const what = JSON.stringify(c) + ` in ${row.in_features}`;
      if (row.perms === null) {
        assert.throws(() => butterflyLayout(row.in_features, c, "m"), PeftConfigError, what);
        continue;
      }
      const lay = butterflyLayout(row.in_features, c, "m");
      assert.deepEqual(
        lay.perms.map((p) => Array.from(p)),
        row.perms,
        what,
      );
      checked++;
    }
    assert.ok(checked > 20);
  });
});
