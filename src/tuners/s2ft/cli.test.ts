/**
 * `peftkit train --method s2ft` end to end on the embedded model (4 layers, 4 query heads in 2 KV
 * groups): the flags reach the config, the folder holds increasing int32 indices and slice
 * tensors of the right shapes, V/O indices cover whole KV groups, and the folder loads back and
 * merges into the same outputs.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { kindOfTrainArgs, MODEL, tempDir, trainWith, writeKindOfData } from "../../testing/train-cli.js";
import { maxAbsDiff } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const tmp = tempDir("peftkit-s2ft-cli-");
const data = writeKindOfData(tmp);
const ARGS = [...kindOfTrainArgs(data), "--max-steps", "4", "--lr", "1e-3", "--method", "s2ft"];

const train = trainWith(ARGS);

describe("peftkit train --method s2ft", () => {
  test("flags → config; the folder holds indices + slices, V/O by whole KV groups; it loads back and merges", async () => {
    const out = join(tmp, "run");
    const r = train(["--v-ratio", "0.5", "--o-ratio", "0.25", "--u-ratio", "0.01", "--d-ratio", "0.02", "--seed", "3"], out);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.v_ratio, cfg.o_ratio, cfg.u_ratio, cfg.d_ratio, cfg.seed], ["S2FT", 0.5, 0.25, 0.01, 0.02, 3]);
    // v: 4 of 8 groups × 64 rows × 256; o: 2 groups × 128 columns × 256; up: 27 channels; down: 55.
    assert.match(r.stdout, /trainable params\s+152,064 /);
    const file = readSafetensors(join(out, "adapter_model.safetensors")).tensors;
    const keys = Object.keys(file);
    assert.ok(keys.length > 0 && keys.every((k) => /\.s2ft\.(indices|weight)$/.test(k)), keys.join(", "));
    let rows = 0;
    for (const k of keys.filter((x) => x.endsWith(".indices"))) {
      const idx = file[k].data as Int32Array;
      assert.equal(file[k].dtype, "i32");
      for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], `${k} is sorted`);
      const block = k.includes("v_proj") ? 64 : k.includes("o_proj") ? 128 : 1;
      for (let i = 0; i < idx.length; i++) assert.equal(idx[i] % block, i % block, `${k}: whole groups`);
      const w = file[k.replace(/indices$/, "weight")];
      const side = k.includes("v_proj") || k.includes("up_proj") ? 0 : 1;
      assert.equal(w.shape[side], idx.length);
      assert.equal(w.shape[1 - side], 256, `${k}: the hidden size`);
      if (k.includes("v_proj")) rows += idx.length;
    }
    assert.equal(rows, 4 * 64);
    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    try {
      const peft = PeftModel.fromPretrained(base, out);
      const ids = [[5, 17, 99, 300, 42, 7]];
      const on = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      const off = (await peft.disableAdapter(() => peft.forward({ inputIds: ids }))).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(on, off) > 1e-5, "the adapter changes the outputs");
      peft.mergeAdapter();
      const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(merged, on) < 1e-4, `merged vs unmerged: ${maxAbsDiff(merged, on)}`);
    } finally {
      await base.release();
    }
  });

  test("bad settings are one line each", () => {
    const bad = train(["--d-ratio", "1.5"], join(tmp, "bad"));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr.trim(), /--d-ratio/);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    const none = train(["--v-ratio", "0"], join(tmp, "bad2"));
    assert.equal(none.code, 1);
    assert.match(
      none.stderr.trim(),
      /^peftkit: adapter config: S2FT trains nothing: set at least one of v_ratio, o_ratio, u_ratio, d_ratio above 0$/,
    );
  });
});
