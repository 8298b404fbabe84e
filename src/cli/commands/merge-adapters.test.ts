/**
 * `peftkit merge-adapters` end to end on test/golden/models/llama_basic with seeded LoRA folders:
 * cat writes ΔW = Σ w_i·s_i·B_i·A_i (float64 reference from the input files); negation with λ = 1
 * cancels the adapter in the merged model weights (W + ΔW + ΔW' = W); bad input is one line naming
 * the field, tensor or flag (exit 1 for adapters that do not merge, 2 for usage).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { PeftModel } from "../../tuners/peft-model.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "test/golden/models/llama_basic");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-merge-adapters-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const dir = (n: string) => join(tmp, n);

function cli(cmd: string, args: string[]) {
  const r = spawnSync(process.execPath, [CLI, cmd, ...args, "--threads", "1"], {
    encoding: "utf8",
    env: { ...process.env, FORCE_COLOR: "0" },
  });
  return { status: r.status, stderr: r.stderr.trim(), stdout: r.stdout };
}
const ok = (cmd: string, args: string[]) => {
  const r = cli(cmd, args);
  assert.equal(r.status, 0, r.stderr);
  return r;
};
const tensors = (d: string, file = "adapter_model.safetensors"): Record<string, HostTensor> => readSafetensors(join(d, file)).tensors;
const config = (d: string) => JSON.parse(readFileSync(join(d, "adapter_config.json"), "utf8")) as Record<string, unknown>;
const f64 = (t: HostTensor) => Float64Array.from(t.data as Float32Array);

/** B·A (float64) of one layer's saved factors. */
function product(t: Record<string, HostTensor>, layer: string): { d: Float64Array; out: number; inF: number } {
  const A = t[`base_model.model.${layer}.lora_A.weight`];
  const B = t[`base_model.model.${layer}.lora_B.weight`];
  const [r, inF] = A.shape;
  const out = B.shape[0];
  const a = f64(A);
  const b = f64(B);
  const d = new Float64Array(out * inF);
  for (let o = 0; o < out; o++) for (let k = 0; k < r; k++) for (let i = 0; i < inF; i++) d[o * inF + i] += b[o * r + k] * a[k * inF + i];
  return { d, out, inF };
}
const LAYERS = [0, 1].flatMap((l) => ["q_proj", "v_proj"].map((m) => `model.layers.${l}.self_attn.${m}`));
const maxAbs = (x: ArrayLike<number>) => Array.from(x).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

before(async () => {
  const m = await AutoModelForCausalLM.fromPretrained(MODEL);
  const peft = PeftModel.create(m, { peftType: "LORA", r: 4, loraAlpha: 8, initLoraWeights: false }, { seed: 1 });
  peft.addAdapter("b", { peftType: "LORA", r: 4, loraAlpha: 2, initLoraWeights: false }, { seed: 2 });
  peft.addAdapter("c", { peftType: "LORA", r: 2, loraAlpha: 6, initLoraWeights: false }, { seed: 3 });
  peft.savePretrained(dir("a")); // "default" in a/, b in a/b, c in a/c
  await m.release();
  cpSync(dir("a/b"), dir("b"), { recursive: true });
  cpSync(dir("a/c"), dir("c"), { recursive: true });
  rmSync(dir("a/b"), { recursive: true });
  rmSync(dir("a/c"), { recursive: true });
  // Bad folders: another method, another base model, another shape.
  const edit = (name: string, from: string, change: (c: Record<string, unknown>) => void) => {
    cpSync(dir(from), dir(name), { recursive: true });
    const c = config(dir(name));
    change(c);
    writeFileSync(join(dir(name), "adapter_config.json"), JSON.stringify(c));
  };
  edit("loha", "b", (c) => {
    c.peft_type = "LOHA";
  });
  edit("other-base", "b", (c) => {
    c.base_model_name_or_path = "models/another-model";
  });
  edit("wide", "b", () => {});
  const t = tensors(dir("b"));
  const key = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight";
  t[key] = hostTensor("f32", [4, 48], new Float32Array(4 * 48));
  writeSafetensors(join(dir("wide"), "adapter_model.safetensors"), t, { format: "pt" });
});

describe("peftkit merge-adapters", () => {
  test("cat: the new folder's ΔW = Σ w_i·s_i·B_i·A_i on every layer, r = α = Σ r_i, use_rslora off", () => {
    const r = ok("merge-adapters", [dir("a"), dir("c"), "--method", "cat", "--weights", "0.7,-1.3", "--output-dir", dir("cat")]);
    assert.match(r.stdout, /cat of 2 adapters \(weights 0\.7, -1\.3\), r = 6/);
    const c = config(dir("cat"));
    assert.equal(c.r, 6);
    assert.equal(c.lora_alpha, 6);
    assert.equal(c.use_rslora, false);
    assert.equal(c.peft_type, "LORA");
    const got = tensors(dir("cat"));
    for (const layer of LAYERS) {
      const pa = product(tensors(dir("a")), layer);
      const pc = product(tensors(dir("c")), layer);
      const want = pa.d.map((v, i) => 0.7 * 2 * v - 1.3 * 3 * pc.d[i]);
      const d = product(got, layer).d;
      const err = maxAbs(d.map((v, i) => v - want[i]));
      assert.ok(err < 1e-6 * maxAbs(want), `${layer}: max diff ${err}`);
    }
    const args = JSON.parse(readFileSync(join(dir("cat"), "merge_args.json"), "utf8")) as Record<string, unknown>;
    assert.deepEqual(args.weights, [0.7, -1.3]);
  });

  test("negation, λ = 1: W + ΔW + ΔW' = W in the merged model weights; λ = 0.5 gives −0.5·s·B·A", () => {
    ok("merge-adapters", [dir("a"), "--negate", "--output-dir", dir("neg")]);
    ok("merge-adapters", [dir("a"), "--weights", "0.5", "--negate", "--output-dir", dir("neg-half")]);
    // Float64 reference from the files: s·B·A + B'·A' (scaling 1) is 0 up to the f32 storage of the factors.
    for (const layer of LAYERS) {
      const d = product(tensors(dir("a")), layer).d;
      const n = product(tensors(dir("neg")), layer).d;
      const h = product(tensors(dir("neg-half")), layer).d;
      const scale = maxAbs(d) * 2;
      assert.ok(
        maxAbs(d.map((v, i) => 2 * v + n[i])) < 1e-6 * scale,
        `${layer}: W + ΔW + ΔW' − W = ${maxAbs(d.map((v, i) => 2 * v + n[i]))}`,
      );
      assert.ok(maxAbs(d.map((v, i) => 0.5 * 2 * v + h[i])) < 1e-6 * scale, `${layer}: λ = 0.5`);
    }
    // Through the CLI: merge A into W, then the negation into that: W again (f32 rounding).
    ok("merge", ["--model", MODEL, "--adapter", dir("a"), "--output-dir", dir("w-plus")]);
    ok("merge", ["--model", dir("w-plus"), "--adapter", dir("neg"), "--output-dir", dir("w-plus-minus")]);
    const w = tensors(MODEL, "model.safetensors");
    const plus = tensors(dir("w-plus"), "model.safetensors");
    const back = tensors(dir("w-plus-minus"), "model.safetensors");
    let moved = 0;
    let err = 0;
    for (const [name, t] of Object.entries(w)) {
      const x = t.data as Float32Array;
      moved = Math.max(moved, maxAbs((plus[name].data as Float32Array).map((v, i) => v - x[i])));
      err = Math.max(err, maxAbs((back[name].data as Float32Array).map((v, i) => v - x[i])));
    }
    assert.ok(moved > 1e-2, `the adapter moved the weights (${moved})`);
    assert.ok(err < 1e-6, `W + ΔW + ΔW' differs from W by ${err}`);
  });

  test("adapters that do not merge: one line naming the field or tensor, exit 1; --force for another base", () => {
    const cases: [string[], RegExp][] = [
      [[dir("a"), dir("loha")], /^peftkit: peft_type: LORA in .*\/a, LOHA in .*\/loha; only adapters of one method merge/],
      [
        [dir("a"), dir("other-base")],
        /^peftkit: base_model_name_or_path: ".*llama_basic" in .*\/a, "models\/another-model" in .*\/other-base; .*--force/,
      ],
      [
        [dir("a"), dir("wide")],
        /^peftkit: base_model\.model\.model\.layers\.1\.self_attn\.v_proj\.lora_A\.weight: 4×32 in .*\/a, 4×48 in .*\/wide$/,
      ],
      [[dir("a"), dir("c"), "--method", "linear"], /^peftkit: r: 4 in .*\/a, 2 in .*\/c .*--method linear needs equal ranks/],
      [[dir("a"), dir("c"), "--method", "ties", "--density", "0.5"], /r: 4 in .*--method ties needs equal ranks/],
    ];
    for (const [args, pattern] of cases) {
      const r = cli("merge-adapters", [...args, "--output-dir", dir("x")]);
      assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
      assert.ok(!existsSync(dir("x")), "nothing written");
    }
    // The same weights under another path (a copy of the model folder) are the same base.
    cpSync(MODEL, dir("model-copy"), { recursive: true });
    const c = config(dir("b"));
    c.base_model_name_or_path = dir("model-copy");
    cpSync(dir("b"), dir("b-copy-base"), { recursive: true });
    writeFileSync(join(dir("b-copy-base"), "adapter_config.json"), JSON.stringify(c));
    ok("merge-adapters", [dir("a"), dir("b-copy-base"), "--method", "linear", "--output-dir", dir("same-weights")]);
    const forced = ok("merge-adapters", [dir("a"), dir("other-base"), "--method", "linear", "--force", "--output-dir", dir("forced")]);
    assert.match(forced.stderr, /warning: base_model_name_or_path: .* merging anyway \(--force\)/);
    // cat and svd take unequal ranks.
    ok("merge-adapters", [dir("a"), dir("c"), "--method", "svd", "--svd-rank", "3", "--svd-clamp", "0.99", "--output-dir", dir("svd")]);
    assert.equal(config(dir("svd")).r, 3);
  });

  test("usage errors: one line naming the flag, exit 2", () => {
    const cases: [string[], RegExp][] = [
      [[dir("a"), dir("b"), "--method", "ties"], /--method ties needs --density/],
      [[dir("a"), dir("b"), "--method", "ties", "--density", "0"], /--density must be in \(0, 1\], got 0/],
      [[dir("a"), dir("b"), "--method", "dare_linear", "--density", "1.5"], /--density must be in \(0, 1\], got 1\.5/],
      [[dir("a"), dir("b"), "--weights", "1,2,3"], /--weights: 3 weights for 2 adapters/],
      [[dir("a"), dir("b"), "--weights", "1,x"], /--weights: "x" is not a number/],
      [[dir("a"), dir("b"), "--method", "mean"], /--method must be one of linear, cat, svd, ties/],
      [[dir("a"), dir("b"), "--svd-clamp", "2"], /--svd-clamp must be in \[0, 1\], got 2/],
      [[dir("a"), dir("nowhere")], /nowhere: no such adapter folder/],
      [[dir("a"), dir("b"), "--output-dir", dir("cat")], /--output-dir .*cat already holds an adapter/],
    ];
    for (const [args, pattern] of cases) {
      const r = cli("merge-adapters", args.includes("--output-dir") ? args : [...args, "--output-dir", dir("x")]);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    }
  });
});
