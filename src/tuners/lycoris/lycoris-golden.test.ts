/**
 * LoHa and LoKr adapter folders in HF PEFT 0.20.0's format (from scripts/goldens/make_lycoris_goldens.py:
 * our plain-torch reading of PEFT's LoHa/LoKr math, not PEFT itself) load through
 * PeftModel.fromPretrained and reproduce the expected logits unmerged and after mergeAndUnload
 * (atol 1e-4); their configs have exactly PEFT's fields; factorization() matches the script's table.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readJsonFile } from "../../io/hf-folder.js";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../format.js";
import { factorization } from "../lokr/factorization.js";
import { PeftModel } from "../peft-model.js";

const ROOT = resolve(REPO_ROOT, "test/golden/lycoris");
const CASES = ["loha_llama", "lokr_llama", "lokr_decompose_both"] as const;
const FIELDS = JSON.parse(readFileSync(resolve(REPO_ROOT, "test/golden/peft-config-fields.json"), "utf8")) as {
  types: Record<string, { fields: string[] }>;
};

interface Meta {
  base_model: string;
  atol: number;
}

function maxDiff(got: Float32Array, want: Float32Array, valid: HostTensor): number {
  assert.equal(got.length, want.length);
  const per = want.length / valid.data.length;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number((valid.data as ArrayLike<number>)[Math.floor(i / per)])) continue;
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

describe("LoHa/LoKr adapter folders in PEFT's format match PyTorch goldens (atol 1e-4)", () => {
  test("every case folder is listed here", () => {
    const dirs = readdirSync(ROOT).filter((d) => !d.endsWith(".json"));
    assert.deepEqual(dirs.sort(), [...CASES].sort());
  });
  for (const name of CASES) {
    test(name, async () => {
      const dir = join(ROOT, name);
      const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as Meta;
      const cfg = readJsonFile(join(dir, ADAPTER_CONFIG), "adapter config") as Record<string, unknown>;
      assert.deepEqual(Object.keys(cfg).sort(), [...FIELDS.types[cfg.peft_type as string].fields].sort());
      const g = readSafetensors(join(dir, "golden.safetensors")).tensors;
      const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, meta.base_model));
      try {
        const peft = PeftModel.fromPretrained(model, dir);
        const inputs = { inputIds: g.input_ids, attentionMask: g.attention_mask };
        const unmerged = (await peft.forward(inputs)).logits?.data as Float32Array;
        const d = maxDiff(unmerged, g.logits.data as Float32Array, g.valid);
        assert.ok(d <= meta.atol, `unmerged: max |diff| ${d}`);
        assert.ok(maxDiff(unmerged, g.logits_base.data as Float32Array, g.valid) > 1e-2, "the adapter has no effect");
        const merged = (await peft.mergeAndUnload().forward(inputs)).logits?.data as Float32Array;
        const dm = maxDiff(merged, g.logits.data as Float32Array, g.valid);
        assert.ok(dm <= meta.atol, `after mergeAndUnload: max |diff| ${dm}`);
      } finally {
        await model.release();
      }
    });
  }

  test("saving a loaded golden writes the same keys, shapes and config values", async () => {
    const out = mkdtempSync(join(tmpdir(), "peftkit-lycoris-"));
    try {
      for (const name of CASES) {
        const dir = join(ROOT, name);
        const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as Meta;
        const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, meta.base_model));
        PeftModel.fromPretrained(model, dir).savePretrained(join(out, name));
        const want = readSafetensors(join(dir, ADAPTER_WEIGHTS)).tensors;
        const got = readSafetensors(join(out, name, ADAPTER_WEIGHTS)).tensors;
        assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), name);
        for (const k of Object.keys(want)) assert.deepEqual(got[k].data, want[k].data, `${name}: ${k}`);
        const a = readJsonFile(join(dir, ADAPTER_CONFIG), "") as Record<string, unknown>;
        const b = readJsonFile(join(out, name, ADAPTER_CONFIG), "") as Record<string, unknown>;
        for (const k of Object.keys(a)) if (k !== "base_model_name_or_path") assert.deepEqual(b[k], a[k], `${name}: ${k}`);
        await model.release();
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  test("factorization(dimension, factor) equals the golden table derived from PEFT's code", () => {
    const t = JSON.parse(readFileSync(join(ROOT, "factorization.json"), "utf8")) as { rows: [number, number, number, number][] };
    assert.ok(t.rows.length > 200);
    const wrong = t.rows.filter(([d, f, m, n]) => {
      const [gm, gn] = factorization(d, f);
      return gm !== m || gn !== n;
    });
    assert.deepEqual(wrong, []);
  });
});
