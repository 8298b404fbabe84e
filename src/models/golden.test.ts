/**
 * Logits of every architecture against goldens from our own PyTorch forward passes, written from
 * transformers' modeling code (scripts/goldens/ref_models.py via make_goldens.py; transformers itself
 * is not run; committed so CI needs no PyTorch).
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { readJsonFile } from "../io/hf-folder.js";
import { readSafetensors } from "../io/safetensors.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import type { TaskHead } from "./architecture.js";
import { type ForwardInputs, PreTrainedModel } from "./pretrained.js";

interface Meta {
  architecture: string;
  atol: number;
  inputs: string[];
  outputs: Record<string, { valid?: string | null; position_ids?: string }>;
  num_labels?: number;
}

function headOf(arch: string): TaskHead {
  if (arch.endsWith("ForCausalLM") || arch.endsWith("LMHeadModel")) return "causal_lm";
  if (arch.endsWith("ForSequenceClassification")) return "sequence_classification";
  if (arch.endsWith("ForTokenClassification")) return "token_classification";
  if (arch.endsWith("ForMaskedLM")) return "masked_lm";
  if (arch.endsWith("ForImageClassification")) return "image_classification";
  return "base";
}

/** Max |a − b| over positions where `valid` (per [B, T] row position) is set. */
function maxDiff(got: Float32Array, want: Float32Array, valid: HostTensor | null, shape: readonly number[]): number {
  const per = valid ? want.length / valid.data.length : want.length;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (valid && !(valid.data as Uint8Array | BigInt64Array)[Math.floor(i / per)]) continue;
    worst = Math.max(worst, Math.abs(got[i] - want[i]));
  }
  assert.equal(got.length, want.length, `output size for shape [${shape}]`);
  return worst;
}

const models: PreTrainedModel[] = [];
after(async () => {
  for (const m of models) await m.release();
});

describe("architectures match PyTorch goldens (atol from each meta.json: 1e-4, sliding-window and masked-LM cases 1e-5)", () => {
  for (const name of readdirSync(GOLDEN_MODELS).sort()) {
    const dir = join(GOLDEN_MODELS, name);
    const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as Meta;
    const golden = readSafetensors(join(dir, "golden.safetensors")).tensors;
    for (const [out, spec] of Object.entries(meta.outputs)) {
      test(`${name}: ${out}`, async () => {
        const model = await PreTrainedModel.load(dir, headOf(meta.architecture), { numLabels: meta.num_labels });
        models.push(model);
        const inputs: ForwardInputs = {};
        if (golden.input_ids) inputs.inputIds = golden.input_ids;
        if (golden.attention_mask) inputs.attentionMask = golden.attention_mask;
        if (golden.token_type_ids) inputs.tokenTypeIds = golden.token_type_ids;
        if (golden.pixel_values) inputs.pixelValues = golden.pixel_values;
        if (out === "logits_mask_positions") inputs.positionIds = golden.position_ids_mask;
        const res = await model.forward(inputs, { outputHiddenStates: out === "last_hidden_state" });
        const got = out === "pooler_output" ? res.poolerOutput : out === "last_hidden_state" ? res.lastHiddenState : res.logits;
        assert.ok(got, `no ${out} output`);
        const want = golden[out];
        assert.deepEqual(got.shape, [...want.shape]);
        const valid = spec.valid ? golden[spec.valid] : null;
        const d = maxDiff(got.data, want.data as Float32Array, valid, want.shape);
        assert.ok(d <= meta.atol, `${name} ${out}: max |diff| ${d} > ${meta.atol}`);
      });
    }
  }
});
