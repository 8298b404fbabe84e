import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { gradCheck } from "../../engine/autodiff/gradcheck.js";
import { compileGraph } from "../../engine/exec/backend.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { adapterDiffs, stopThenResume } from "../../testing/resume.js";
import { Progress } from "../../train/progress.js";
import { type BatchSource, Trainer } from "../../train/trainer.js";
import { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { allocate, budgetAt, meanScore, newImportance, type Schedule, updateImportance } from "./allocator.js";
import type { SnellaConfig } from "./config.js";
import { snellaController } from "./controller.js";
import { coefficients, keptCount, kernelMatrix, quantileHost, snellaTransform, sparsifyDynamic, sparsifyStatic } from "./kernel.js";
import { snellKeys, snellLayers } from "./layers.js";

const f64 = (shape: number[], rng: Rng, scale = 1) =>
  hostTensor(
    "f64",
    shape,
    Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rng.next() * 2 - 1) * scale),
  );

function run(f: (...xs: Tensor[]) => Tensor, inputs: HostTensor[]): Float64Array {
  const g = trace(
    f,
    inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })),
  );
  return interpret(g, inputs, { precision: "f64" })[0].data as Float64Array;
}

/** D[i, j] = Σ_h c_h ‖P[h, i] − Q[h, j]‖ by a plain loop, independent of kernel.ts. */
function naiveD(p: HostTensor, q: HostTensor, c: number[]): Float64Array {
  const [h, n, k] = p.shape;
  const m = q.shape[1];
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < m; j++)
      for (let hh = 0; hh < h; hh++) {
        let s = 0;
        const P = p.data as Float64Array;
        const Q = q.data as Float64Array;
        for (let x = 0; x < k; x++) s += (P[(hh * n + i) * k + x] - Q[(hh * m + j) * k + x]) ** 2;
        out[i * m + j] += c[hh] * Math.sqrt(s);
      }
  return out;
}

describe("SNELL's kernel (model/vision_transformer_timm.py, pathIntegrals)", () => {
  test("D in the graph equals a host double loop over Σ_h c_h‖P_h,i − Q_h,j‖, c_h = 0.1·(−1)^h", () => {
    const rng = new Rng(3);
    const p = f64([2, 5, 3], rng);
    const q = f64([2, 7, 3], rng);
    const c = coefficients(2, 0.1);
    assert.deepEqual(c, [0.1, -0.1]);
    const got = run((a, b) => kernelMatrix(a, b, c), [p, q]);
    const want = naiveD(p, q, c);
    assert.ok(Math.max(...got.map((v, i) => Math.abs(v - want[i]))) < 1e-12);
  });

  test("gradients of D (and of SNELLA's α, γ, β) match f64 finite differences", () => {
    const rng = new Rng(4);
    const ins = [
      f64([2, 4, 3], rng),
      f64([2, 6, 3], rng),
      hostTensor("f64", [1], [0.7]),
      hostTensor("f64", [1], [1.3]),
      hostTensor("f64", [1], [0.2]),
    ];
    const c = coefficients(2, 0.1);
    const res = gradCheck((p, q, a, g, b) => snellaTransform(kernelMatrix(p, q, c), a, g, b), ins, { h: 1e-6 });
    assert.ok(res.maxRelError < 1e-6, `${res.relErrors}`);
  });

  test("coincident points: the distance's gradient is 0 there, not NaN (torch.cdist's backward)", () => {
    const p = hostTensor("f64", [1, 2, 2], [1, 2, 0.5, 0.5]);
    const q = hostTensor("f64", [1, 1, 2], [1, 2]);
    const res = gradCheck((a, b) => kernelMatrix(a, b, [1]).select(0, 1), [p, q], { wrt: [0] });
    // Row 1 is away from Q: its derivative is exact; row 0 sits on Q and gets 0 (finite).
    assert.ok(res.analytic[0].every(Number.isFinite));
    assert.equal(res.analytic[0][0], 0);
    assert.equal(res.analytic[0][1], 0);
  });
});

describe("SNELL's sparsification (sparsify: torch.quantile + F.threshold)", () => {
  const cases: [number, number, number][] = [
    [0.5, 6, 7],
    [0.9, 8, 8],
    [0.3, 5, 9],
    [0.99, 10, 10],
    [0.01, 4, 4],
  ];
  test("keeps the chosen fraction: n − 1 − ⌊s·(n−1)⌋ = ⌈(1−s)(n−1)⌉ entries, the largest |D|", () => {
    for (const [s, r, c] of cases) {
      const d = f64([r, c], new Rng(r * c));
      const n = r * c;
      const want = Math.ceil((1 - s) * (n - 1) - 1e-9);
      assert.equal(keptCount(s, n), want, `s=${s} n=${n}`);
      for (const dyn of [false, true]) {
        const ratio = hostTensor("f64", [1], [s]);
        const out = run((x, t) => (dyn ? sparsifyDynamic(x, t, "mask") : sparsifyStatic(x, s, "mask")), [d, ratio]);
        const kept = out.filter((v) => v !== 0).length;
        assert.equal(kept, want, `s=${s} n=${n} dynamic=${dyn}`);
        // The kept ones are the largest |D|, unchanged ("mask") …
        const t = quantileHost(d.data as Float64Array, s);
        out.forEach((v, i) => {
          const x = d.data[i] as number;
          assert.ok(v === (Math.abs(x) > t ? x : 0), `${v} at ${i}`);
        });
        // … or times their magnitude ("magnitude", the authors' code).
        const mag = run((x, t2) => (dyn ? sparsifyDynamic(x, t2, "magnitude") : sparsifyStatic(x, s, "magnitude")), [d, ratio]);
        mag.forEach((v, i) => {
          const x = d.data[i] as number;
          assert.ok(Math.abs(v - (Math.abs(x) > t ? x * Math.abs(x) : 0)) < 1e-15);
        });
      }
    }
  });

  test("on ORT in f32 (the bisection's 40 halvings) the count is exact too, down to ratio 1e−3", async () => {
    for (const [s, r, c] of [
      [0.5, 256, 688],
      [0.9, 64, 96],
      [0.01, 128, 128],
      [0.001, 200, 300],
      [0.97, 33, 7],
    ] as const) {
      const rng = new Rng(r + c);
      const n = r * c;
      // D-like values: differences of distances, dense near 0.
      const x = hostTensor(
        "f32",
        [r, c],
        Float32Array.from({ length: n }, () => 0.01 * (rng.next() - rng.next())),
      );
      const ratio = hostTensor("f32", [1], [s]);
      for (const dyn of [false, true]) {
        const g = trace(
          (d, t) => (dyn ? sparsifyDynamic(d, t, "mask") : sparsifyStatic(d, s, "mask")),
          [
            { dtype: "f32", shape: [r, c] },
            { dtype: "f32", shape: [1] },
          ],
        );
        const ex = await compileGraph(g);
        const out = (await ex.run([x, ratio]))[0].data as Float32Array;
        await ex.release();
        const pos = dyn ? Math.fround(Math.fround(s) * (n - 1)) : s * (n - 1);
        const want = n - 1 - Math.floor(pos);
        assert.equal(out.filter((v) => v !== 0).length, want, `s=${s} n=${n} dynamic=${dyn}`);
      }
    }
  });

  test("the threshold interpolates like torch.quantile (closed form on 0..n−1)", () => {
    const d = Float64Array.from({ length: 11 }, (_, i) => (i % 2 ? -i : i));
    assert.equal(quantileHost(d, 0.35), 3.5);
    assert.equal(quantileHost(d, 0), 0);
  });

  test("magnitude mode: the factor sg(|D|)·1[|D| > t] is not differentiated (the authors detach it)", () => {
    const rng = new Rng(9);
    const d = f64([4, 5], rng);
    const t = quantileHost(d.data as Float64Array, 0.5);
    const factor = hostTensor(
      "f64",
      [4, 5],
      Float64Array.from(d.data as Float64Array, (v) => (Math.abs(v) > t ? Math.abs(v) : 0)),
    );
    const res = gradCheck((x) => sparsifyStatic(x, 0.5, "magnitude"), [d], {
      h: 1e-7,
      reference: (x) => x.mul(constant(factor)),
    });
    assert.ok(res.maxRelError < 1e-6, `${res.relErrors}`);
  });
});

describe("SNELLA's allocator (sparse_allocator.py)", () => {
  const sched: Schedule = { initVolume: 1000, targetVolume: 200, initWarmup: 2, finalWarmup: 3, maskInterval: 2, totalStep: 13 };
  test("the budget: initial through init_warmup, cubic decrease every mask_interval, target in the final steps", () => {
    const got = Array.from({ length: 14 }, (_, k) => budgetAt(sched, k));
    // Steps 3..10 decrease: 200 + 800·(1 − (k − 2)/8)³, truncated.
    const cubic = (k: number) => Math.trunc(200 + 800 * (1 - (k - 2) / 8) ** 3);
    assert.deepEqual(
      got.map((b) => b.volume),
      [1000, 1000, 1000, cubic(3), cubic(4), cubic(5), cubic(6), cubic(7), cubic(8), cubic(9), cubic(10), 200, 200, 200],
    );
    assert.deepEqual([cubic(3), cubic(4), cubic(6), cubic(10)], [735, 537, 300, 200]);
    assert.deepEqual(
      got.map((b) => b.allocate),
      [false, false, false, false, true, false, true, false, true, false, true, true, true, true],
    );
  });

  test("allocation: proportional to scores, capped at each layer's size, the rest spread; the sum is the budget up to truncation", () => {
    // Layer 0 would get 0.7·500 = 350 > its 100 entries: capped, the 250 over go to 1 and 2 by score.
    const a = allocate([0.7, 0.2, 0.1], 500, [100, 1000, 1000]);
    assert.equal(a[0], 100);
    assert.ok(Math.abs(a[1] - (100 + 250 * (2 / 3))) <= 1 && Math.abs(a[2] - (50 + 250 / 3)) <= 1, `${a}`);
    const sum = a.reduce((x, y) => x + y, 0);
    assert.ok(sum <= 500 && sum > 500 - 3, `${sum}`);
    // Scores all zero: equal shares.
    assert.deepEqual(allocate([0, 0], 10, [100, 100]), [5, 5]);
    // A budget above the room: everything kept.
    assert.deepEqual(allocate([1, 1], 50, [10, 20]), [10, 20]);
    for (let seed = 1; seed < 20; seed++) {
      const rng = new Rng(seed);
      const sizes = Array.from({ length: 6 }, () => 10 + Math.floor(rng.next() * 200));
      const scores = sizes.map(() => rng.next() ** 3);
      const v = Math.floor(rng.next() * sizes.reduce((x, y) => x + y, 0));
      const got = allocate(scores, v, sizes);
      const s = got.reduce((x, y) => x + y, 0);
      assert.ok(got.every((n, i) => Number.isInteger(n) && n >= 0 && n <= sizes[i]));
      assert.ok(s <= v && s > v - sizes.length, `seed ${seed}: ${s} vs ${v}`);
    }
  });

  test("importance: EMA of |p·∇p| and of its deviation, score = mean(ipt·unc)", () => {
    const m = newImportance(2);
    updateImportance(m, [2, -1], [0.5, Number.NaN], 0.85, 0.85);
    // |p·g| = [1, NaN → 0]: ipt = 0.15·[1, 0]; unc = 0.15·|[1, 0] − ipt| = [0.1275, 0].
    assert.ok(Math.abs(m.ipt[0] - 0.15) < 1e-15 && m.ipt[1] === 0);
    assert.ok(Math.abs(m.unc[0] - 0.1275) < 1e-15 && m.unc[1] === 0);
    assert.ok(Math.abs(meanScore(m) - (0.15 * 0.1275) / 2) < 1e-15);
  });
});

const SNELLA_CONFIG = {
  peft_type: "SNELLA",
  r: 4,
  init_ratio: 0.1,
  target_ratio: 0.6,
  init_warmup: 1,
  final_warmup: 2,
  mask_interval: 2,
  target_modules: ["q_proj", "v_proj"],
};

describe("SNELLA's controller", () => {
  test("re-allocates at the schedule's steps; each layer's fed ratio keeps the allocated entries", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, SNELLA_CONFIG, { seed: 1 });
    const a = peft.adapter("default");
    const c = a.config as SnellaConfig;
    const layers = snellLayers(peft.info, c);
    const ctl = snellaController(peft.info, c, { totalSteps: 8 });
    assert.ok(ctl);
    const tensors = new Map(a.tensors);
    const begun = ctl.begin?.(tensors);
    assert.deepEqual(
      [...(begun?.tensors?.values() ?? [])].map((t) => t.data[0]),
      layers.map(() => Math.fround(0.1)),
    );
    const sizes = layers.map((l) => l.inFeatures * l.outFeatures);
    const total = sizes.reduce((x, y) => x + y, 0);
    // Made-up gradients: layer i's gradient is (i + 1)·p, so later layers score higher.
    const grads = (step: number) =>
      new Map(
        layers.flatMap((l, i) => {
          const k = snellKeys(l.key, "SNELLA");
          return [k.p, k.q].map((key) => {
            const t = tensors.get(key) as HostTensor;
            return [
              key,
              hostTensor(
                "f32",
                t.shape,
                Float32Array.from(t.data as Float32Array, (v) => v * (i + 1) * step),
              ),
            ] as const;
          });
        }),
      );
    const ratios: (number[] | null)[] = [];
    for (let step = 1; step <= 8; step++) {
      const act = ctl.afterStep({ step, totalSteps: 8, tensors, gradients: grads(step), statistics: new Map() });
      ratios.push(act ? layers.map((l) => act.tensors?.get(snellKeys(l.key, "SNELLA").ratio)?.data[0] as number) : null);
    }
    // Schedule (total 8, warm-up 1, final 2, interval 2): allocations after steps 2, 4, 6 (cubic), 7, 8 (final).
    assert.deepEqual(
      ratios.map((r) => r !== null),
      [false, true, false, true, false, true, true, true],
    );
    const last = ratios[7] as number[];
    const kept = last.reduce((x, r, i) => x + Math.round((1 - r) * sizes[i]), 0);
    const target = total * (1 - 0.6);
    assert.ok(kept <= target + 1e-6 && kept > target - layers.length - 1, `${kept} vs ${target}`);
    // Higher scores, denser layers.
    assert.ok(last[layers.length - 1] < last[0], `${last}`);
    assert.deepEqual(Object.keys(ctl.metrics()).sort(), ["budget", "sparsity"]);
    assert.ok(Math.abs(ctl.metrics().sparsity - 0.6) < 0.01);
    await model.release();
  });

  test("an impossible schedule is refused: init_warmup + final_warmup ≥ total steps", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, SNELLA_CONFIG, { seed: 1 });
    const c = peft.adapter("default").config as SnellaConfig;
    assert.throws(
      () => snellaController(peft.info, c, { totalSteps: 3 }),
      (e: Error) =>
        e instanceof PeftConfigError && /init_warmup \(1\) \+ final_warmup \(2\) must be less than the total steps \(3\)/.test(e.message),
    );
    await model.release();
  });

  test("bad config fields are named", async () => {
    const model = await loadTestModel("llama_basic");
    for (const [bad, msg] of [
      [{ r: 5 }, /"r" \(5\) must be a multiple of "num_heads" \(2\)/],
      [{ norm_p: 1 }, /"norm_p" must be 2/],
      [{ sparsify_mode: "soft" }, /"sparsify_mode" must be one of magnitude, mask/],
      [{ target_ratio: 1 }, /"target_ratio" must be in \[0, 1\)/],
    ] as const)
      assert.throws(
        () => PeftModel.create(model, { ...SNELLA_CONFIG, ...bad }),
        (e: Error) => e instanceof PeftConfigError && msg.test(e.message),
      );
    await model.release();
  });
});

runConformance({
  name: "SNELL (plain masking, s = 0.5)",
  model: "llama_basic",
  config: { peft_type: "SNELL", r: 4, sparsity_ratio: 0.5, sparsify_mode: "mask", snell_dropout: 0, target_modules: ["q_proj", "v_proj"] },
});
runConformance({
  name: "SNELLA (plain masking)",
  model: "llama_basic",
  config: { ...SNELLA_CONFIG, init_ratio: 0.3, sparsify_mode: "mask", snell_dropout: 0 },
  // γ is one scalar dividing every kernel entry before the softmax: its finite-difference
  // gradient sums thousands of terms and measured 1.1–1.3e-6 relative error on some random inputs.
  gradTolerance: 5e-6,
});

test("SNELL: merge() materialises the magnitude-mode ΔW the forward uses", async () => {
  const model = await loadTestModel("gpt2");
  const peft = PeftModel.create(model, { peft_type: "SNELL", r: 8, sparsity_ratio: 0.8, target_modules: ["c_attn"] }, { seed: 2 });
  const ids = [[5, 9, 13, 2, 7]];
  const base = await peft.disableAdapter(async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array);
  const un = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  assert.ok(maxAbsDiff(un, base) > 1e-6);
  peft.mergeAdapter();
  const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  assert.ok(maxAbsDiff(merged, un) < 1e-5, `${maxAbsDiff(merged, un)}`);
  await model.release();
});

describe("SNELLA through the Trainer", () => {
  const root = mkdtempSync(join(tmpdir(), "peftkit-snella-"));
  after(() => rmSync(root, { recursive: true, force: true }));
  const source: BatchSource = {
    batchesPerEpoch: 4,
    batch: (epoch, index) => {
      const ids = [0, 1].map((r) => Array.from({ length: 6 }, (_, t) => 2 + ((epoch * 31 + index * 17 + r * 7 + t * 5) % 90)));
      return { inputIds: ids, labels: ids, tokens: 12 };
    },
  };
  const quiet = () => new Progress({ write: () => true, isTTY: false }, 1000);
  const target = async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, SNELLA_CONFIG, { seed: 2 });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 8 });
    return { trainer, peft, causal: true, classification: false, model };
  };
  const args = (dir: string) => ({ outputDir: dir, maxSteps: 8, lr: 0.05, seed: 3, saveSteps: 2 });

  test("a run stopped after step 5 and resumed ends where an uninterrupted one does", async () => {
    const a = await target();
    await new Trainer(a, source, null, args(join(root, "full")), quiet()).run();
    const ratios = (x: Awaited<ReturnType<typeof target>>) =>
      [...x.peft.adapter("default").tensors].filter(([k]) => k.endsWith(".snella_ratio")).map(([, t]) => Number(t.data[0]));
    // The allocator moved the ratios away from init_ratio.
    assert.ok(
      ratios(a).some((r) => Math.abs(r - 0.1) > 1e-3),
      `${ratios(a)}`,
    );
    const { cut: b, resumed: c } = await stopThenResume(target, source, args(join(root, "cut")), 5);
    for (const [k, d] of adapterDiffs(a, c)) assert.ok(d <= 1e-6, `${k}: ${d}`);
    for (const x of [a, b, c]) {
      await x.trainer.release();
      await x.model.release();
    }
  });
});

test("inference (D prepared on the host) and the training step (D and its threshold in the graph) give the same loss", async () => {
  for (const config of [
    { peft_type: "SNELL", r: 4, sparsity_ratio: 0.7, snell_dropout: 0, target_modules: ["q_proj", "v_proj", "down_proj"] },
    { ...SNELLA_CONFIG, init_ratio: 0.4, snell_dropout: 0 },
  ]) {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, config, { seed: 4 });
    const ids = [[5, 9, 13, 2, 7, 11]];
    const logits = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const vocab = logits.length / ids[0].length;
    let want = 0;
    for (let t = 0; t + 1 < ids[0].length; t++) {
      const row = logits.subarray(t * vocab, (t + 1) * vocab);
      const m = Math.max(...row);
      const z = row.reduce((a, v) => a + Math.exp(v - m), 0);
      want -= row[ids[0][t + 1]] - m - Math.log(z);
    }
    want /= ids[0].length - 1;
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "sgd" } });
    const r = await trainer.train({ inputIds: ids, labels: ids }, { lr: 0 });
    assert.ok(Math.abs(r.loss - want) < 1e-5, `${config.peft_type}: ${r.loss} vs ${want}`);
    await trainer.release();
    await model.release();
  }
});
