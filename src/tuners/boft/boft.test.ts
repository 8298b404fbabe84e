import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { scalar, type Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { writeSafetensors } from "../../io/safetensors.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { hostMatmul } from "../oft/cayley.js";
import { PeftModel } from "../peft-model.js";
import { blockButterflyPerm, butterflyLayout, permMatrix } from "./butterfly.js";
import { parseBoftConfig } from "./config.js";
import { type BoftLayer, boftBlocks, boftLayers, boftRotate } from "./index.js";

const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/** PEFT's dense M = B_{m−1}···B_0, B_i = P_i·blockdiag(blocks_i)·P_iᵀ, built with perm2mat matrices. */
function denseM(l: BoftLayer, blocks: Float64Array[][]): Float64Array {
  const n = l.inFeatures;
  const b = l.blockSize;
  let m: Float64Array | null = null;
  for (let f = 0; f < l.factors; f++) {
    const bd = new Float64Array(n * n);
    blocks[f].forEach((r, p) => {
      for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) bd[(p * b + i) * n + p * b + j] = r[i * b + j];
    });
    const p = permMatrix(l.perms[f]);
    const pt = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) pt[i * n + j] = p[j * n + i];
    const bf = hostMatmul(hostMatmul(p, bd, n), pt, n);
    m = m ? hostMatmul(bf, m, n) : bf;
  }
  return m as Float64Array;
}

describe("BOFT", () => {
  runConformance({
    name: "BOFT on llama (block size 4, 2 butterfly factors, every linear layer)",
    model: "llama_basic",
    identityConfig: { peftType: "BOFT", boftBlockSize: 4, boftNButterflyFactor: 2, targetModules: ALL },
    config: { peftType: "BOFT", boftBlockSize: 4, boftNButterflyFactor: 2, targetModules: ALL, initWeights: false },
  });
  runConformance({
    name: "BOFT on BERT classification (biases; 8 blocks, 3 factors)",
    model: "bert_seq_cls",
    identityConfig: {
      peftType: "BOFT",
      taskType: "SEQ_CLS",
      boftBlockSize: 0,
      boftBlockNum: 8,
      boftNButterflyFactor: 3,
      targetModules: ["query", "dense"],
    },
    config: {
      peftType: "BOFT",
      taskType: "SEQ_CLS",
      boftBlockSize: 0,
      boftBlockNum: 8,
      boftNButterflyFactor: 3,
      targetModules: ["query", "dense"],
      initWeights: false,
    },
  });

  runConformance({
    name: "BOFT on BERT with bias=all (every bias trained and saved)",
    model: "bert_seq_cls",
    config: {
      peftType: "BOFT",
      taskType: "SEQ_CLS",
      boftBlockSize: 8,
      bias: "all",
      initWeights: false,
      targetModules: ["value", "output.dense"],
    },
  });

  test("bias=all: keys as PEFT saves them (<module>.base_layer.bias inside BOFT layers), copies of the base at init", async () => {
    const model = await loadTestModel("bert_seq_cls");
    const peft = PeftModel.create(model, {
      peftType: "BOFT",
      taskType: "SEQ_CLS",
      bias: "all",
      targetModules: ["value"],
      modulesToSave: ["classifier"],
    });
    const t = peft.adapter("default").tensors;
    const bert = "bert.encoder.layer.0";
    assert.deepEqual(
      f32(t.get(`${bert}.attention.self.value.base_layer.bias`)),
      f32(model.weights.get(`${bert}.attention.self.value.bias`)),
    );
    assert.ok(t.has(`${bert}.attention.self.query.bias`));
    assert.ok(t.has("bert.embeddings.LayerNorm.bias"));
    assert.ok(![...t.keys()].some((k) => k.includes("classifier") && k.endsWith("base_layer.bias")));
    assert.throws(
      () => peft.addAdapter("x", { peftType: "BOFT", bias: "boft_only" }),
      /bias "boft_only" is not supported \(PEFT 0\.20\.0 trains those biases but/,
    );
    await model.release();
  });

  test("butterfly permutations: factor 1 is the identity; 2 factors on 16 features in blocks of 4 interleave half-blocks", () => {
    assert.deepEqual(Array.from(blockButterflyPerm(16, 4, 2, 0)), [...Array(16).keys()]);
    const lay = butterflyLayout(16, { boftBlockSize: 4, boftBlockNum: 0, boftNButterflyFactor: 2 }, "m");
    assert.deepEqual(Array.from(lay.perms[0]), [...Array(16).keys()]);
    // Within each half (8 indices, runs of 2): runs 0, 2, 1, 3.
    assert.deepEqual(Array.from(lay.perms[1]), [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]);
  });

  test("M = Π P_i·blockdiag(Cayley)·P_iᵀ is orthogonal (MᵀM = I to 1e-12) and the graph computes x·M", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(
      model,
      { peftType: "BOFT", boftBlockSize: 2, boftNButterflyFactor: 4, initWeights: false, targetModules: ["down_proj"] },
      { seed: 5 },
    );
    const a = peft.adapter("default");
    const [l] = boftLayers(peft.info, a.config as never);
    assert.equal(l.factors, 4);
    const m = denseM(l, boftBlocks(l, f32(a.tensors.get(l.keyR))));
    const n = l.inFeatures;
    const mtm = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) mtm[i * n + j] += m[k * n + i] * m[k * n + j];
    let err = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) err = Math.max(err, Math.abs(mtm[i * n + j] - (i === j ? 1 : 0)));
    assert.ok(err < 1e-12, `${err}`);
    // Not block-diagonal: the butterflies mix features across blocks (here within spans of 2·2³ = 16).
    let across = 0;
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) if (Math.floor(i / 2) !== Math.floor(j / 2) && Math.abs(m[i * n + j]) > 1e-9) across++;
    assert.ok(across > n, `${across}`);
    for (let j = 16; j < n; j++) assert.equal(m[j], 0);
    const x = randomTensor([2, n]);
    const rT = hostTensor("f64", a.tensors.get(l.keyR)?.shape as number[], Float64Array.from(f32(a.tensors.get(l.keyR))));
    const xT = hostTensor("f64", [2, n], Float64Array.from(x.data as Float32Array));
    const g = trace(
      (xt: Tensor, rt: Tensor) => boftRotate(xt, l, rt, null),
      [xT, rT].map((t) => ({ dtype: t.dtype, shape: t.shape })),
    );
    const got = interpret(g, [xT, rT])[0].data as Float64Array;
    const want = new Float64Array(2 * n);
    for (let r = 0; r < 2; r++)
      for (let j = 0; j < n; j++) for (let i = 0; i < n; i++) want[r * n + j] += (xT.data as Float64Array)[r * n + i] * m[i * n + j];
    assert.ok(maxDiff(got, want) < 1e-12);
    await model.release();
  });

  test("a biased layer computes (W·(x·M))⊙s + b, merges to diag(s)·W·Mᵀ with the bias unchanged, and mixed batches keep base rows", async () => {
    const model = await loadTestModel("bert_seq_cls");
    const peft = PeftModel.create(
      model,
      {
        peftType: "BOFT",
        taskType: "SEQ_CLS",
        boftBlockSize: 4,
        boftNButterflyFactor: 2,
        initWeights: false,
        targetModules: ["intermediate.dense"],
      },
      { seed: 6 },
    );
    const a = peft.adapter("default");
    const l = boftLayers(peft.info, a.config as never)[0];
    const m = denseM(l, boftBlocks(l, f32(a.tensors.get(l.keyR))));
    const s = f32(a.tensors.get(l.keyS));
    const w = model.weights.get(`${l.path}.weight`) as HostTensor;
    const bias = model.weights.get(`${l.path}.bias`) as HostTensor;
    const n = l.inFeatures;
    const x = randomTensor([2, n]);
    const xd = x.data as Float32Array;
    const xm = new Float32Array(2 * n);
    for (let r = 0; r < 2; r++)
      for (let j = 0; j < n; j++) {
        let v = 0;
        for (let i = 0; i < n; i++) v += xd[r * n + i] * m[i * n + j];
        xm[r * n + j] = v;
      }
    const noBias = linearJs(xm, 2, w, null, false);
    const want = noBias.map((v, k) => v * s[k % l.outFeatures] + f32(bias)[k % l.outFeatures]);
    const got = probe(peft, "default", (ctx, xt) => ctx.linear(l.path, xt), x);
    assert.ok(maxDiff(got, want) < 1e-5, `${maxDiff(got, want)}`);
    const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(l.path, xt), x, [1, 0]);
    const base = linearJs(xd, 2, w, bias, false);
    assert.ok(maxDiff(mixed.subarray(0, l.outFeatures), want.subarray(0, l.outFeatures)) < 1e-5);
    assert.ok(maxDiff(mixed.subarray(l.outFeatures), base.subarray(l.outFeatures)) < 1e-5);
    const merged = a.tuner.merge?.(peft.info, a.config, a.tensors) as Map<string, HostTensor>;
    assert.equal(merged.get(`${l.path}.bias`), undefined);
    const wm = f32(merged.get(`${l.path}.weight`));
    const wd = w.data as Float32Array;
    for (let o = 0; o < l.outFeatures; o += 7)
      for (let i = 0; i < n; i++) {
        let v = 0;
        for (let k = 0; k < n; k++) v += wd[o * n + k] * m[i * n + k];
        assert.ok(Math.abs(wm[o * n + i] - v * s[o]) < 1e-5);
      }
    await model.release();
  });

  test("boft_dropout in training: one factor drawn at random gets exactly int(p·D) identity blocks", () => {
    const l: BoftLayer = {
      ...butterflyLayout(16, { boftBlockSize: 2, boftBlockNum: 0, boftNButterflyFactor: 3 }, "m"),
      path: "p",
      name: "p",
      inFeatures: 16,
      outFeatures: 4,
      keyR: "r",
      keyS: "s",
    };
    // With x = I the output is M itself; compare it with M rebuilt from the blocks that stayed.
    const eye = hostTensor(
      "f64",
      [16, 16],
      Float64Array.from({ length: 256 }, (_, i) => (i % 17 === 0 ? 1 : 0)),
    );
    const r = hostTensor(
      "f64",
      [3, 8, 2, 2],
      Float64Array.from({ length: 96 }, (_, i) => Math.sin(i + 1)),
    );
    const seen = new Set<number>();
    for (let seed = 1; seed <= 12; seed++) {
      const g = trace(
        (x: Tensor, rt: Tensor) => boftRotate(x, l, rt, { p: 0.5, seed: scalar(seed, "i64") }),
        [eye, r].map((t) => ({ dtype: t.dtype, shape: t.shape })),
      );
      const got = interpret(g, [eye, r])[0].data as Float64Array;
      const blocks = boftBlocks(l, r.data as Float64Array);
      // Find the factor and blocks that were replaced: exactly one factor, exactly 4 of 8 blocks.
      let match = 0;
      for (let f = 0; f < 3; f++)
        for (let mask = 0; mask < 256; mask++) {
          if (popcount(mask) !== 4) continue;
          const dropped = blocks.map((row, ff) => row.map((blk, d) => (ff === f && mask & (1 << d) ? Float64Array.of(1, 0, 0, 1) : blk)));
          if (maxDiff(denseM(l, dropped), got) < 1e-12) {
            match++;
            seen.add(f);
          }
        }
      assert.equal(match, 1, `seed ${seed}`);
    }
    assert.ok(seen.size >= 2, "the factor is drawn at random");
  });

  test("config errors name the option and module: both or neither size/num, block grid vs in_features, factors", async () => {
    assert.throws(
      () => parseBoftConfig({ peft_type: "BOFT", boft_block_num: 4 }, "cfg"),
      /give either "boft_block_size" \(4\) or "boft_block_num" \(4\)/,
    );
    assert.throws(
      () => parseBoftConfig({ peft_type: "BOFT", boft_block_size: 0 }, "cfg"),
      /either "boft_block_size" or "boft_block_num" must be non-zero/,
    );
    assert.throws(() => parseBoftConfig({ peft_type: "BOFT", boft_n_butterfly_factor: 0 }, "cfg"), /boft_n_butterfly_factor/);
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "BOFT" });
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ boftBlockSize: 5 }, /module model\.layers\.0\.self_attn\.q_proj: in_features \(32\) must be divisible by boft_block_size \(5\)/],
      [{ boftBlockSize: 0, boftBlockNum: 3 }, /in_features \(32\) must be divisible by boft_block_num \(3\)/],
      [{ boftBlockSize: 8, boftNButterflyFactor: 4 }, /in_features \(32\), boft_n_butterfly_factor \(4\) and boft_block_size \(8\)/],
      [{ boftBlockSize: 0, boftBlockNum: 4, boftNButterflyFactor: 4 }, /boft_n_butterfly_factor \(4\) and boft_block_num \(4\)/],
    ];
    for (const [cfg, want] of bad)
      assert.throws(
        () => peft.addAdapter("bad", { peftType: "BOFT", ...cfg }),
        (e: Error) => e instanceof PeftConfigError && want.test(e.message) && !e.message.includes("\n"),
        JSON.stringify(cfg),
      );
    await model.release();
  });

  test("folders: PEFT < 0.13's saved boft_P is ignored; one factor under a config asking for more is refused in one line", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-boft-"));
    try {
      const model = await loadTestModel("llama_basic");
      const cfg = { peft_type: "BOFT", boft_block_size: 4, boft_n_butterfly_factor: 2, target_modules: ["q_proj"] };
      const t = (factors: number): Record<string, HostTensor> => {
        const out: Record<string, HostTensor> = {};
        for (const i of [0, 1]) {
          const p = `base_model.model.model.layers.${i}.self_attn.q_proj`;
          out[`${p}.boft_R`] = hostTensor("f32", [factors, 8, 4, 4]);
          out[`${p}.boft_s`] = hostTensor("f32", [32, 1], new Float32Array(32).fill(1));
          out[`${p}.boft_P`] = hostTensor("f32", [factors, 32, 32]);
        }
        return out;
      };
      writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(cfg));
      writeSafetensors(join(dir, "adapter_model.safetensors"), t(2), { format: "pt" });
      const peft = PeftModel.fromPretrained(model, dir);
      assert.deepEqual(
        [...peft.adapter("default").tensors.keys()].filter((k) => k.endsWith("boft_P")),
        [],
      );
      await model.release();
      writeSafetensors(join(dir, "adapter_model.safetensors"), t(1), { format: "pt" });
      const fresh = await loadTestModel("llama_basic");
      assert.throws(
        () => PeftModel.fromPretrained(fresh, dir),
        (e: Error) =>
          e instanceof PeftConfigError &&
          /q_proj\.boft_R \[1, 8, 4, 4\] holds 1 butterfly factor but boft_n_butterfly_factor is 2/.test(e.message) &&
          !e.message.includes("\n"),
      );
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function popcount(v: number): number {
  let c = 0;
  for (let x = v; x; x &= x - 1) c++;
  return c;
}
