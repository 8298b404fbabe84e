/**
 * Bad input to LoHa/LoKr gets one clear line: layers PEFT's LyCORIS tuners cannot adapt (GPT-2
 * Conv1D, convolutions), bad option values, conflicting options, and PEFT folders with a missing
 * or mis-shaped tensor (named). Also: the training-only dropouts do what PEFT's do.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { run } from "../../engine/exec/reference/testing.js";
import { hostTensor } from "../../engine/ir/host.js";
import { spec } from "../../engine/trace/trace.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { AutoModelForImageClassification } from "../../models/auto.js";
import { GOLDEN_MODELS } from "../../testing/paths.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel } from "../conformance.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../format.js";
import { PeftModel } from "../peft-model.js";
import { lycorisDropout } from "./dropout.js";

function refuses(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof PeftConfigError && re.test(e.message) && !e.message.includes("\n"));
}

describe("LoHa/LoKr bad input", () => {
  test("GPT-2's Conv1D layers are refused, as PEFT refuses them", async () => {
    const m = await loadTestModel("gpt2");
    const peft = new PeftModel(m);
    for (const t of ["LOHA", "LOKR"])
      refuses(() => peft.addAdapter(t, { peftType: t }), /"transformer\.h\.0\.attn\.c_attn" is a GPT-2 Conv1D layer.*refuses it too/);
    await m.release();
  });

  test("a convolution matched by target_modules is refused, not skipped", async () => {
    const m = await AutoModelForImageClassification.fromPretrained(join(GOLDEN_MODELS, "vit_cls"));
    const peft = new PeftModel(m);
    refuses(
      () => peft.addAdapter("x", { peftType: "LOHA", targetModules: ["query", "projection"], useEffectiveConv2d: true }),
      /matches the convolution "vit\.embeddings\.patch_embeddings\.projection"; peftkit's LoHa adapts linear layers only/,
    );
    // use_effective_conv2d has no effect on linear layers: accepted and written back.
    const p = peft.addAdapter("y", { peftType: "LOKR", targetModules: ["query"], useEffectiveConv2d: true });
    assert.equal((p.config as unknown as { useEffectiveConv2d: boolean }).useEffectiveConv2d, true);
    await m.release();
  });

  test("option values and conflicts", async () => {
    const m = await loadTestModel("llama_basic");
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ peftType: "LOKR", initWeights: "gaussian" }, /field "init_weights" must be true, false or "lycoris", got "gaussian"/],
      [{ peftType: "LOHA", initWeights: "lycoris" }, /field "init_weights" must be true or false/],
      [{ peftType: "LOHA", rankDropout: 1 }, /field "rank_dropout" must be in \[0, 1\), got 1/],
      [{ peftType: "LOKR", moduleDropout: -0.1 }, /field "module_dropout" must be in \[0, 1\]/],
      [{ peftType: "LOKR", decomposeFactor: 2.5 }, /field "decompose_factor" must be an integer/],
      [{ peftType: "LOHA", r: 0 }, /field "r" must be an integer >= 1/],
      [{ peftType: "LOHA", rankPattern: { q_proj: 0 } }, /rank_pattern "q_proj" must be an integer >= 1, got 0/],
      [{ peftType: "LOKR", layersPattern: "layers" }, /"layers_pattern" is given, so "layers_to_transform" must be too/],
      [{ peftType: "LOHA", targetModules: ["nope"] }, /LoHa config: target_modules \["nope"\] matched no module/],
    ];
    const peft = new PeftModel(m);
    for (const [cfg, re] of cases) refuses(() => peft.addAdapter("x", cfg), re);
    await m.release();
  });

  test("a PEFT folder with a missing or mis-shaped tensor names it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-lycoris-bad-"));
    try {
      for (const [type, victim, other] of [
        ["LOHA", "hada_w2_a", "hada_w1_b"],
        ["LOKR", "lokr_w2", "lokr_w1"],
      ] as const) {
        const m = await loadTestModel("llama_basic");
        const peft = PeftModel.create(m, { peftType: type, r: 4 }, { seed: 1 });
        peft.savePretrained(dir);
        const path = join(dir, ADAPTER_WEIGHTS);
        const st = readSafetensors(path).tensors;
        const gone = `base_model.model.model.layers.1.self_attn.v_proj.${victim}`;
        const bent = `base_model.model.model.layers.0.self_attn.q_proj.${other}`;
        delete st[gone];
        st[bent] = hostTensor("f32", [st[bent].shape[0] + 1, st[bent].shape[1]]);
        writeSafetensors(path, st, { format: "pt" });
        const fresh = await loadTestModel("llama_basic");
        const loader = new PeftModel(fresh);
        assert.throws(
          () => loader.loadAdapter(dir, "bad"),
          (e: unknown) =>
            e instanceof PeftConfigError &&
            e.message.includes(`missing tensors:\n  ${gone}`) &&
            e.message.includes(`${bent}: file [${st[bent].shape.join(", ")}], expected`),
        );
        // A config whose r does not fit the tensors (LoKr: r decides full vs decomposed factors).
        if (type === "LOKR") {
          peft.savePretrained(dir);
          const cfg = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8"));
          writeFileSync(join(dir, ADAPTER_CONFIG), JSON.stringify({ ...cfg, r: 1 }));
          assert.throws(
            () => loader.loadAdapter(dir, "bad"),
            (e: unknown) =>
              e instanceof PeftConfigError && /missing tensors:\n {2}.*lokr_w2_a/.test(e.message) && /lokr_w2 \[/.test(e.message),
          );
        }
        await m.release();
        await fresh.release();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("LyCORIS training dropouts", () => {
  const dd = Float64Array.from({ length: 2400 }, (_, i) => 1 + (i % 7));
  const delta = hostTensor("f64", [2, 3, 400], dd);
  const seed = hostTensor("i64", [], [12345]);
  const runDrop = (rank: number, mod: number, rescale: boolean, s = seed) =>
    run(
      (d, sd) => lycorisDropout(d, "layer.x", { rankDropout: rank, moduleDropout: mod, rescale }, sd),
      [spec("f64", [2, 3, 400]), spec("i64", [])],
      [delta, s],
    )[0].data as Float64Array;

  test("rank dropout drops whole output features (rows of ΔW), rescaled by the kept fraction when asked", () => {
    for (const rescale of [true, false]) {
      const got = runDrop(0.3, 0, rescale);
      const ratio = Array.from({ length: 400 }, (_, o) => got[o] / dd[o]);
      const kept = ratio.filter((v) => v !== 0);
      // The same factor for a feature at every token, 0 or one constant.
      for (let n = 0; n < 6; n++) for (let o = 0; o < 400; o++) assert.ok(Math.abs(got[n * 400 + o] - dd[n * 400 + o] * ratio[o]) < 1e-12);
      assert.ok(Math.abs(kept.length / 400 - 0.7) < 0.08, `kept ${kept.length}`);
      const want = rescale ? 400 / kept.length : 1;
      for (const v of kept) assert.ok(Math.abs(v - want) < 1e-12, `${v} vs ${want}`);
    }
  });

  test("module dropout keeps or drops the whole update; no seed (not training) leaves it alone", () => {
    const outcomes = new Set<string>();
    for (let s = 0; s < 40; s++) {
      const got = runDrop(0, 0.5, true, hostTensor("i64", [], [s]));
      const all = got.every((v, i) => v === dd[i]);
      const none = got.every((v) => v === 0);
      assert.ok(all || none);
      outcomes.add(all ? "kept" : "dropped");
    }
    assert.deepEqual([...outcomes].sort(), ["dropped", "kept"]);
    const [same] = run(
      (d) => lycorisDropout(d, "layer.x", { rankDropout: 0.5, moduleDropout: 0.5, rescale: true }, null),
      [spec("f64", [2, 3, 400])],
      [delta],
    );
    assert.deepEqual(same.data, delta.data);
  });
});
