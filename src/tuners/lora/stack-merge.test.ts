/**
 * Merging several active adapters at once (a stack) must give the stack's unmerged outputs, also
 * when DoRA adapters share layers with other adapters: every DoRA adapter normalises against the
 * base weight before any merge, both unmerged and merged (docs/methods/dora.md).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { Rng } from "../../util/rng.js";
import { loadTestModel, maxAbsDiff } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const TARGETS = ["embed_tokens", "q_proj", "v_proj", "down_proj"];
const CONFIGS: Record<string, Record<string, unknown>> = {
  lora: { peftType: "LORA", r: 4, loraAlpha: 8, initLoraWeights: false, targetModules: TARGETS },
  dora: { peftType: "LORA", r: 4, loraAlpha: 8, useDora: true, initLoraWeights: false, targetModules: TARGETS },
  dora2: { peftType: "LORA", r: 2, loraAlpha: 6, useDora: true, initLoraWeights: false, targetModules: TARGETS },
  // llama's IA3 defaults: k_proj, v_proj (output scaling) and down_proj (input scaling).
  ia3: { peftType: "IA3" },
};

/** Every tensor times a factor in [lo, hi): DoRA magnitudes away from their initial row norms, IA3 vectors away from one. */
function jitter(peft: PeftModel, name: string, lo: number, hi: number, rng: Rng): void {
  const a = peft.adapter(name);
  const keep = (k: string) => (a.config.peftType === "IA3" ? true : k.endsWith("lora_magnitude_vector"));
  const scaled = new Map<string, HostTensor>();
  for (const [k, t] of a.tensors)
    if (keep(k))
      scaled.set(
        k,
        hostTensor(
          "f32",
          t.shape,
          Float32Array.from(t.data as Float32Array, (v) => v * (lo + (hi - lo) * rng.next())),
        ),
      );
  peft.setAdapterTensors(name, scaled);
}

async function stack(names: readonly string[]): Promise<{ peft: PeftModel; ids: number[][] }> {
  const model = await loadTestModel("llama_basic");
  const peft = new PeftModel(model);
  const rng = new Rng(7);
  names.forEach((n, i) => {
    peft.addAdapter(n, CONFIGS[n], { seed: 10 + i });
    jitter(peft, n, 0.7, 1.4, rng);
  });
  peft.setAdapter([...names]);
  const ids = Array.from({ length: 2 }, () => Array.from({ length: 6 }, () => 2 + Math.floor(rng.next() * 250)));
  return { peft, ids };
}

const logits = async (m: { forward: PeftModel["forward"] }, ids: number[][]) =>
  (await m.forward({ inputIds: ids })).logits?.data as Float32Array;

describe("merging adapter stacks with DoRA", () => {
  for (const names of [
    ["lora", "dora"],
    ["dora", "lora"],
    ["dora", "dora2"],
    ["lora", "ia3", "dora"],
  ]) {
    test(`[${names.join(", ")}]: mergeAndUnload gives the unmerged stack's logits`, async () => {
      const { peft, ids } = await stack(names);
      const base = peft.base;
      const plain = await peft.disableAdapter(() => logits(peft, ids));
      const unmerged = await logits(peft, ids);
      assert.ok(maxAbsDiff(unmerged, plain) > 0.1, "the stack changes nothing");
      const merged = await logits(peft.mergeAndUnload(), ids);
      const d = maxAbsDiff(merged, unmerged);
      assert.ok(d < 1e-5, `merged vs unmerged: max |Δlogit| ${d}`);
      await base.release();
    });
  }

  test("[lora, ia3, dora] merged as adapterNames [dora, ia3, lora]: merged in the stack's order, outputs kept", async () => {
    const { peft, ids } = await stack(["lora", "ia3", "dora"]);
    const base = peft.base;
    const unmerged = await logits(peft, ids);
    const d = maxAbsDiff(await logits(peft.mergeAndUnload({ adapterNames: ["dora", "ia3", "lora"] }), ids), unmerged);
    assert.ok(d < 1e-5, `merged vs unmerged: max |Δlogit| ${d}`);
    await base.release();
  });

  // Merging one adapter at a time keeps the outputs when it follows the stack's order (IA3 scales
  // what the adapters before it produce) or the adapters are additive (LoRA, DoRA in any order).
  for (const [names, order] of [
    [
      ["lora", "ia3", "dora"],
      ["lora", "ia3", "dora"],
    ],
    [
      ["lora", "dora"],
      ["dora", "lora"],
    ],
  ]) {
    test(`[${names.join(", ")}] merged one at a time (${order.join(", ")}): outputs kept at every step; unmerge restores them`, async () => {
      const { peft, ids } = await stack(names);
      const unmerged = await logits(peft, ids);
      for (const n of order) {
        peft.mergeAdapter([n]);
        const d = maxAbsDiff(await logits(peft, ids), unmerged);
        assert.ok(d < 1e-5, `after merging ${n}: max |Δlogit| ${d}`);
      }
      peft.unmergeAdapter();
      assert.ok(maxAbsDiff(await logits(peft, ids), unmerged) < 1e-6);
      await peft.base.release();
    });
  }
});
