/**
 * Adapter folders in HF PEFT's format must load through PeftModel.fromPretrained and reproduce the
 * expected logits; mergeable methods must still do so after mergeAndUnload. Folders and logits come
 * from scripts/goldens/make_peft_goldens.py: our PyTorch re-implementation of PEFT's adapter math,
 * written from PEFT's sources, not PEFT itself.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { readJsonFile } from "../io/hf-folder.js";
import { readSafetensors } from "../io/safetensors.js";
import { AutoModelForCausalLM, AutoModelForSequenceClassification } from "../models/auto.js";
import type { ForwardInputs, ModelOutput, PreTrainedModel } from "../models/pretrained.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../testing/paths.js";
import { PeftModel } from "./peft-model.js";
import { supportedPeftTypes } from "./registry.js";

const GOLDEN_PEFT = resolve(REPO_ROOT, "test/golden/peft");

/** Every case the generator writes; listed here so a missing folder fails instead of being skipped. */
const CASES = [
  "lora_llama",
  "lora_gpt2_fan_in_fan_out",
  "rslora_rank_pattern",
  "dora_llama",
  "ia3_llama",
  "lora_bert_seq_cls_modules_to_save",
  "prompt_tuning_llama",
  "prefix_tuning_llama",
] as const;

/**
 * Cases whose method peftkit does not implement yet (beyond the peft_type check below, which the
 * registry answers). Remove an entry when the method lands.
 */
const NOT_YET: Partial<Record<(typeof CASES)[number], string>> = {};

interface Meta {
  case: string;
  base_model: string;
  architecture: string;
  num_labels?: number;
  atol: number;
  inputs: string[];
  compare: Record<string, { valid: string | null }>;
  mergeable: boolean;
}

function loadBase(meta: Meta): Promise<PreTrainedModel> {
  const dir = join(GOLDEN_MODELS, meta.base_model);
  if (meta.architecture.endsWith("ForSequenceClassification")) {
    assert.ok(meta.num_labels, "sequence-classification goldens carry num_labels");
    return AutoModelForSequenceClassification.fromPretrained(dir, { numLabels: meta.num_labels });
  }
  return AutoModelForCausalLM.fromPretrained(dir);
}

/** Max |got − want| over the [batch, position] entries where valid is set (all when valid is null). */
function maxDiff(got: Float32Array, want: Float32Array, valid: HostTensor | null): number {
  assert.equal(got.length, want.length, "logits size");
  const per = valid ? want.length / valid.data.length : want.length;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (valid && !Number((valid.data as ArrayLike<number | bigint>)[Math.floor(i / per)])) continue;
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

function inputsOf(meta: Meta, golden: Record<string, HostTensor>): ForwardInputs {
  const inputs: ForwardInputs = {};
  for (const name of meta.inputs) assert.ok(golden[name], `golden input ${name}`);
  if (golden.input_ids) inputs.inputIds = golden.input_ids;
  if (golden.attention_mask) inputs.attentionMask = golden.attention_mask;
  if (meta.inputs.includes("token_type_ids")) inputs.tokenTypeIds = golden.token_type_ids;
  return inputs;
}

/** Checks `out.logits` against the golden, naming likely causes when a diagnostic output matches instead. */
function compare(what: string, meta: Meta, golden: Record<string, HostTensor>, out: ModelOutput): void {
  const got = out.logits;
  assert.ok(got, `${what}: no logits`);
  const want = golden.logits;
  assert.deepEqual(got.shape, [...want.shape], `${what}: logits shape`);
  const spec = meta.compare.logits;
  const valid = spec.valid ? golden[spec.valid] : null;
  const d = maxDiff(got.data, want.data as Float32Array, valid);
  if (d <= meta.atol) return;
  const hints: string[] = [];
  for (const [name, why] of [
    ["logits_base", "the adapter had no effect"],
    ["logits_lora_only", "the saved modules_to_save head was not used"],
    ["logits_positions_from_zero", "real tokens got rotary positions 0.. instead of num_virtual_tokens.."],
  ] as const) {
    const alt = golden[name];
    if (alt && alt.data.length === got.data.length && maxDiff(got.data, alt.data as Float32Array, valid) <= meta.atol)
      hints.push(`output equals ${name}: ${why}`);
  }
  assert.fail(`${meta.case} ${what}: max |diff| ${d} > ${meta.atol}${hints.length ? ` (${hints.join("; ")})` : ""}`);
}

describe("HF PEFT adapter folders load and match PyTorch goldens (atol 1e-4)", () => {
  const supported = supportedPeftTypes();
  for (const name of CASES) {
    const dir = join(GOLDEN_PEFT, name);
    const present = existsSync(join(dir, "meta.json"));
    const peftType = present
      ? String((readJsonFile(join(dir, "adapter_config.json"), "adapter config") as { peft_type: unknown }).peft_type)
      : "";
    const skip = !present ? false : !supported.includes(peftType) ? `${peftType} not implemented` : (NOT_YET[name] ?? false);
    test(`${name} (${peftType || "?"})`, { skip }, async () => {
      assert.ok(present, `${dir}: missing; run /usr/bin/python3 scripts/goldens/make_peft_goldens.py`);
      const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as Meta;
      const golden = readSafetensors(join(dir, "golden.safetensors")).tensors;
      const inputs = inputsOf(meta, golden);
      const model = await loadBase(meta);
      try {
        const peft = PeftModel.fromPretrained(model, dir);
        assert.deepEqual(peft.adapterNames, ["default"]);
        compare("unmerged", meta, golden, await peft.forward(inputs));
        if (meta.mergeable) {
          const merged = peft.mergeAndUnload();
          compare("after mergeAndUnload", meta, golden, await merged.forward(inputs));
        }
      } finally {
        await model.release();
      }
    });
  }
});
