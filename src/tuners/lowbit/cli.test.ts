/**
 * `peftkit train --method lowbit` end to end on the embedded model: the flags reach the config,
 * the folder holds U8 packed codes with μ and σ that load back (and `eval` runs on it), the
 * dequantised LoRA export loads as a plain LORA giving the same outputs, and a run killed with
 * SIGKILL resumes to the latent weights (and Adam state) of an uninterrupted run, bit for bit.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { SafetensorsFile } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { runCli } from "../../testing/cli.js";
import {
  assertAdapterChangesOutputs,
  assertSafetensorsClose,
  kindOfTrainArgs,
  MODEL,
  tempDir,
  trainWith,
  writeKindOfData,
} from "../../testing/train-cli.js";
import { maxAbsDiff } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const tmp = tempDir("peftkit-lowbit-cli-");
const data = writeKindOfData(tmp);
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "6",
  "--lr",
  "1e-2",
  "--method",
  "lowbit",
  "--target",
  "q_proj,v_proj",
  "--seed",
  "3",
];
const train = trainWith(ARGS);
// The common flags alone (for a method or config given otherwise).
const trainKindOf = trainWith(kindOfTrainArgs(data));

describe("peftkit train --method lowbit", () => {
  test("flags → config; U8 codes + μ, σ that load back; the dequantised LoRA export; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(
      ["--lowbit-bits", "2", "--lowbit-scale", "10", "--r", "4", "--save-steps", "3", "--lowbit-export-dequantized"],
      straight,
    );
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.bits, cfg.scale, cfg.r, cfg.codebook, cfg.packed], ["LOWBIT", 2, 10, 4, "lloyd-max", true]);
    const f = SafetensorsFile.open(join(straight, "adapter_model.safetensors"));
    const entries = f.entries.map((e) => [e.name, e.dtype, e.shape.join("x")]);
    f.close();
    // wordnet-llama: 4 layers × q, v × A, B; A [4, 256] → 1024 codes → 256 bytes at 2 bits; q's B the
    // same, v's B [128, 4] (two key/value heads) 128 bytes.
    assert.equal(entries.length, 4 * 2 * 2 * 3);
    for (const [name, dtype, shape] of entries) {
      if (name.endsWith(".qcodes")) assert.deepEqual([dtype, shape], ["U8", name.endsWith("v_proj.lora_B.qcodes") ? "128" : "256"], name);
      else assert.deepEqual([dtype, shape], ["F32", "1"], name);
    }
    await assertAdapterChangesOutputs(MODEL, straight, { message: "the low-bit adapter changes the outputs" });

    // The export is a plain LoRA with the same outputs.
    const lora = join(straight, "dequantized_lora");
    assert.equal(JSON.parse(readFileSync(join(lora, "adapter_config.json"), "utf8")).peft_type, "LORA");
    assert.ok(statSync(join(lora, "adapter_model.safetensors")).size > 4 * statSync(join(straight, "adapter_model.safetensors")).size);
    const ids = [[5, 17, 99, 300, 42, 7]];
    const logits = async (dir: string) => {
      const m = await AutoModelForCausalLM.fromPretrained(MODEL);
      const out = (await PeftModel.fromPretrained(m, dir).forward({ inputIds: ids })).logits?.data as Float32Array;
      await m.release();
      return out;
    };
    assert.ok(maxAbsDiff(await logits(lora), await logits(straight)) < 1e-5, "the exported LoRA computes what the low-bit adapter does");

    const ev = runCli(["eval", "--model", MODEL, "--adapter", straight, "--data", data]);
    assert.equal(ev.code, 0, ev.stderr);

    const killed = join(tmp, "killed");
    const flags = ["--lowbit-bits", "2", "--lowbit-scale", "10", "--r", "4", "--save-steps", "3"];
    const k = train(flags, killed, { PEFTKIT_FAULT_AT: "train:step#5" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-3")) && !existsSync(join(killed, "adapter_config.json")));
    const again = train([...flags, "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    for (const file of [
      "adapter_model.safetensors",
      join("checkpoint-6", "adapter_state.safetensors"),
      join("checkpoint-6", "optimizer.safetensors"),
    ])
      assertSafetensorsClose(join(straight, file), join(killed, file), () => 0, `${file}: `);
  });

  test("bad settings are one line each", () => {
    const bits = train(["--lowbit-bits", "3"], join(tmp, "bad"));
    assert.equal(bits.code, 2);
    assert.equal(bits.stderr.trim(), 'peftkit: peftkit train: --lowbit-bits must be one of 1, 2, 4, 8, got "3"');
    const yaml = join(tmp, "bad.yaml");
    writeFileSync(yaml, "method: lowbit\nlowbit_bits: 3\nlowbit_codebook: authors\n");
    const fromYaml = trainKindOf(["--config", yaml], join(tmp, "bad3"));
    assert.equal(fromYaml.code, 2);
    assert.equal(fromYaml.stderr.trim(), `peftkit: --config ${yaml}: --lowbit-bits must be one of 1, 2, 4, 8, got "3"`);
    const other = trainKindOf(["--method", "lora", "--lowbit-export-dequantized"], join(tmp, "bad2"));
    assert.equal(other.code, 2);
    assert.equal(other.stderr.trim(), "peftkit: --lowbit-export-dequantized is for --method lowbit, not lora");
  });
});
