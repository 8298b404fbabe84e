/**
 * `peftkit delta` on models/wordnet-llama with hand-made deltas: compose(A, B) applied equals A
 * applied then B applied; apply then --subtract restores the model (f32 rounding); bad files and
 * mismatched bases are one line naming the file and tensor, exit 1.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import type { SparseDelta } from "../../sparse/delta.js";
import { loadSparseDeltas, saveSparseDeltas } from "../../sparse/file.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { weightsFingerprint } from "../../util/fingerprint.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-delta-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const Q = "model.layers.0.self_attn.q_proj.weight"; // [256, 256]
const V = "model.layers.1.self_attn.v_proj.weight"; // [128, 256]
const D = "model.layers.0.mlp.down_proj.weight"; // [256, 688]

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, "delta", ...args, "--threads", "1"], {
    encoding: "utf8",
    env: { ...process.env, FORCE_COLOR: "0" },
  });
  return { status: r.status, stderr: r.stderr.trim(), stdout: r.stdout };
}
const ok = (args: string[]) => {
  const r = cli(args);
  assert.equal(r.status, 0, r.stderr);
};
const weights = (dir: string): Record<string, HostTensor> => readSafetensors(join(dir, "model.safetensors")).tensors;
const delta = (shape: number[], indices: number[], values: number[]): SparseDelta => ({
  shape,
  indices: Int32Array.from(indices),
  values: Float32Array.from(values),
});

/** Largest |a − b| over every weight, and whether any weight differs outside `touched`. */
function maxDiff(a: Record<string, HostTensor>, b: Record<string, HostTensor>, touched: string[]): number {
  let worst = 0;
  for (const [name, t] of Object.entries(a)) {
    const x = t.data as Float32Array;
    const y = b[name].data as Float32Array;
    for (let i = 0; i < x.length; i++) {
      const d = Math.abs(x[i] - y[i]);
      if (d > 0 && !touched.includes(name)) assert.fail(`${name}[${i}] changed though no delta touches it`);
      worst = Math.max(worst, d);
    }
  }
  return worst;
}

let fingerprint = "";
const file = (name: string) => join(tmp, name);

before(async () => {
  const m = await AutoModelForCausalLM.fromPretrained(MODEL);
  fingerprint = weightsFingerprint(m.weights);
  await m.release();
  // A and B overlap on Q (positions 5 and 70000); B alone touches V.
  const a = new Map([
    [Q, delta([256, 256], [0, 5, 65000], [0.25, -0.5, 0.125])],
    [D, delta([256, 688], [3, 176127], [1, -2])],
  ]);
  const b = new Map([
    [Q, delta([256, 256], [5, 9, 65000], [0.75, 0.03125, -0.375])],
    [V, delta([128, 256], [100], [0.5])],
  ]);
  saveSparseDeltas(file("a.safetensors"), { deltas: a, baseModel: fingerprint });
  saveSparseDeltas(file("b.safetensors"), { deltas: b, baseModel: fingerprint });
  // The same B, declared for no particular base: it may go onto a model A was merged into.
  saveSparseDeltas(file("b-any.safetensors"), { deltas: b, baseModel: null });
  saveSparseDeltas(file("other-base.safetensors"), { deltas: b, baseModel: "0123456789abcdef" });
  saveSparseDeltas(file("no-such-weight.safetensors"), {
    deltas: new Map([["model.layers.9.self_attn.q_proj.weight", delta([256, 256], [1], [1])]]),
    baseModel: null,
  });
  const meta = { format: "peftkit.sparse_delta", format_version: "1", shapes: JSON.stringify({ [Q]: [256, 256] }) };
  const raw = (name: string, idx: number[]) =>
    writeSafetensors(
      file(name),
      {
        [`${Q}.sparse_indices`]: hostTensor("i32", [idx.length], Int32Array.from(idx)),
        [`${Q}.sparse_values`]: hostTensor("f32", [idx.length], new Float32Array(idx.length)),
      },
      meta,
    );
  raw("duplicated.safetensors", [3, 7, 7]);
  raw("out-of-range.safetensors", [3, 65536]);
  writeFileSync(file("truncated.safetensors"), readFileSync(file("a.safetensors")).subarray(0, 120));
});

describe("peftkit delta", () => {
  test("compose(A, B) applied = A applied, then B applied", () => {
    ok(["compose", "--input", `${file("a.safetensors")},${file("b.safetensors")}`, "--output", file("ab.safetensors")]);
    ok(["apply", "--model", MODEL, "--input", file("ab.safetensors"), "--output-dir", file("m-ab")]);
    ok(["apply", "--model", MODEL, "--input", `${file("a.safetensors")},${file("b.safetensors")}`, "--output-dir", file("m-a+b")]);
    ok(["apply", "--model", MODEL, "--input", file("a.safetensors"), "--output-dir", file("m-a")]);
    ok(["apply", "--model", file("m-a"), "--input", file("b-any.safetensors"), "--output-dir", file("m-a-then-b")]);
    const base = weights(MODEL);
    const composed = weights(file("m-ab"));
    const sequential = weights(file("m-a-then-b"));
    // (w + a) + b against w + (a + b): f32 rounding only (the weights are below 1 in size here).
    assert.ok(maxDiff(composed, sequential, [Q, V, D]) <= 2e-7);
    assert.deepEqual(weights(file("m-a+b")), composed);
    // The composed entries moved by a + b (2^-k values: a + b is exact).
    const q0 = base[Q].data as Float32Array;
    const q1 = composed[Q].data as Float32Array;
    assert.ok(Math.abs(q1[5] - q0[5] - 0.25) < 1e-6 && Math.abs(q1[9] - q0[9] - 0.03125) < 1e-6 && q1[1] === q0[1]);
    assert.ok(Math.abs(q1[65000] - q0[65000] + 0.25) < 1e-6);
  });

  test("apply, then --subtract: the model back within f32 rounding", () => {
    ok(["apply", "--model", MODEL, "--input", file("ab.safetensors"), "--output-dir", file("m-ab2")]);
    ok(["apply", "--model", file("m-ab2"), "--input", file("ab.safetensors"), "--subtract", "--output-dir", file("m-back")]);
    const back = weights(file("m-back"));
    assert.ok(maxDiff(back, weights(MODEL), [Q, V, D]) <= 2e-7);
    assert.ok(maxDiff(weights(file("m-ab2")), weights(MODEL), [Q, V, D]) >= 1, "the delta was applied in between");
  });

  test("bad files and mismatched bases: one line naming the file and tensor, exit 1", () => {
    const cases: [string[], RegExp][] = [
      [["info", "--input", file("truncated.safetensors")], /truncated\.safetensors: .*past the end of the file/],
      [
        ["info", "--input", file("duplicated.safetensors")],
        /duplicated\.safetensors: "model\.layers\.0\.self_attn\.q_proj\.weight\.sparse_indices": index 7 is duplicated/,
      ],
      [
        ["info", "--input", file("out-of-range.safetensors")],
        /out-of-range\.safetensors: "model\.layers\.0\.self_attn\.q_proj\.weight\.sparse_indices": index 65536 \(entry 1\) is out of range/,
      ],
      [
        ["compose", "--input", `${file("a.safetensors")},${file("other-base.safetensors")}`, "--output", file("x.safetensors")],
        /other-base\.safetensors: made for a different base model .* than .*a\.safetensors/,
      ],
      [
        ["apply", "--model", file("m-a"), "--input", file("b.safetensors"), "--output-dir", file("x")],
        /b\.safetensors: made for a different base model/,
      ],
      [
        ["apply", "--model", MODEL, "--input", file("no-such-weight.safetensors"), "--output-dir", file("x")],
        /no-such-weight\.safetensors: the model has no weight "model\.layers\.9\.self_attn\.q_proj\.weight"/,
      ],
    ];
    for (const [args, pattern] of cases) {
      const r = cli(args);
      assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    }
    const usage = cli(["compose", "--input", file("a.safetensors"), "--output", file("x.safetensors")]);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--input needs at least 2/);
  });
});

describe("peftkit delta merge (weighted sums, negation)", () => {
  test("Σ w_i·Δ_i: the union of the positions, values summed with their weights, in one file", () => {
    ok(["merge", "--input", `${file("a.safetensors")},${file("b.safetensors")}`, "--weights", "2,-0.5", "--output", file("w.safetensors")]);
    const got = loadSparseDeltas(file("w.safetensors"));
    assert.equal(got.baseModel, fingerprint);
    const q = got.deltas.get(Q) as SparseDelta;
    assert.deepEqual(Array.from(q.indices), [0, 5, 9, 65000]);
    // a: 0 → 0.25, 5 → −0.5, 65000 → 0.125; b: 5 → 0.75, 9 → 0.03125, 65000 → −0.375.
    assert.deepEqual(Array.from(q.values), [2 * 0.25, 2 * -0.5 - 0.5 * 0.75, -0.5 * 0.03125, 2 * 0.125 - 0.5 * -0.375]);
    assert.deepEqual(Array.from((got.deltas.get(V) as SparseDelta).values), [-0.25]);
    assert.deepEqual(Array.from((got.deltas.get(D) as SparseDelta).values), [2, -4]);
  });

  test("negation with λ = 1 cancels: θ + Δ + (−Δ) = θ exactly; θ + (−Δ) = θ − Δ", () => {
    ok(["merge", "--input", file("ab.safetensors"), "--negate", "--output", file("neg.safetensors")]);
    const neg = loadSparseDeltas(file("neg.safetensors"));
    const ab = loadSparseDeltas(file("ab.safetensors"));
    for (const [name, d] of ab.deltas)
      assert.deepEqual(
        Array.from((neg.deltas.get(name) as SparseDelta).values),
        Array.from(d.values, (v) => -v),
      );
    // Δ + (−Δ) as one merged delta is exactly zero; applied one after the other, θ comes back.
    ok(["merge", "--input", `${file("ab.safetensors")},${file("neg.safetensors")}`, "--output", file("zero.safetensors")]);
    for (const d of loadSparseDeltas(file("zero.safetensors")).deltas.values()) assert.ok(d.values.every((v) => v === 0));
    ok([
      "apply",
      "--model",
      MODEL,
      "--input",
      `${file("ab.safetensors")},${file("neg.safetensors")}`,
      "--output-dir",
      file("m-plus-minus"),
    ]);
    assert.deepEqual(weights(file("m-plus-minus")), weights(MODEL));
    // θ − Δ on the base (task-vector negation) is what --subtract computes.
    ok(["apply", "--model", MODEL, "--input", file("neg.safetensors"), "--output-dir", file("m-neg")]);
    ok(["apply", "--model", MODEL, "--input", file("ab.safetensors"), "--subtract", "--output-dir", file("m-sub")]);
    assert.deepEqual(weights(file("m-neg")), weights(file("m-sub")));
    assert.ok(maxDiff(weights(file("m-neg")), weights(MODEL), [Q, V, D]) >= 1, "the negated delta moved the weights");
    // apply --weights: w·Δ in one step.
    ok(["apply", "--model", MODEL, "--input", file("ab.safetensors"), "--weights", "0.5", "--output-dir", file("m-half")]);
    const half = weights(file("m-half"))[Q].data as Float32Array;
    const q0 = weights(MODEL)[Q].data as Float32Array;
    assert.ok(Math.abs(half[5] - q0[5] - 0.125) < 1e-6);
  });

  test("bad input: different bases exit 1, a weight count that does not match exits 2", () => {
    const base = cli(["merge", "--input", `${file("a.safetensors")},${file("other-base.safetensors")}`, "--output", file("x.safetensors")]);
    assert.equal(base.status, 1, base.stderr);
    assert.match(base.stderr, /other-base\.safetensors: made for a different base model/);
    const count = cli([
      "merge",
      "--input",
      `${file("a.safetensors")},${file("b.safetensors")}`,
      "--weights",
      "1",
      "--output",
      file("x.safetensors"),
    ]);
    assert.equal(count.status, 2, count.stderr);
    assert.match(count.stderr, /--weights: 1 weight for 2 --input files/);
  });
});
