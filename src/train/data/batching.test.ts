import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Batch, BatchStream, makeBatches, splitDataset } from "./batching.js";
import type { Example } from "./tokenize.js";

const seed = Math.floor(Math.random() * 2 ** 31);
const PAD = 99999;
const EOS = 0;

/** Examples whose tokens are unique to them (example i uses 1000·(i+1) + k), so they can be traced through batches. */
function lmExamples(n: number, maxLen: number, endWithEos = false): Example[] {
  return Array.from({ length: n }, (_, i) => {
    const len = 1 + Math.floor(Math.random() * maxLen);
    const inputIds = Array.from({ length: len }, (_, k) => 1000 * (i + 1) + k);
    if (endWithEos && i % 2 === 0) inputIds.push(EOS);
    // Some positions carry no loss, like a prompt.
    const labels = inputIds.map((t, k) => (k < len / 3 ? -100 : t));
    return { inputIds, labels, source: `x:${i + 1}` };
  });
}

function checkPadded(b: Batch, ex: readonly Example[]): void {
  const width = Math.max(...b.examples.map((i) => ex[i].inputIds.length));
  let tokens = 0;
  let loss = 0;
  b.examples.forEach((i, r) => {
    const e = ex[i];
    const n = e.inputIds.length;
    assert.equal(b.inputIds[r].length, width);
    assert.deepEqual(b.inputIds[r].slice(0, n), e.inputIds);
    assert.ok(b.inputIds[r].slice(n).every((t) => t === PAD));
    assert.deepEqual(b.attentionMask[r], [...Array(n).fill(1), ...Array(width - n).fill(0)]);
    if (e.label !== undefined) assert.deepEqual(b.labels[r], [e.label]);
    else {
      assert.deepEqual(b.labels[r], [...e.labels!, ...Array(width - n).fill(-100)]);
      loss += e.labels!.filter((l) => l !== -100).length;
    }
    tokens += n;
  });
  assert.equal(b.tokens, tokens);
  if (ex[0].label === undefined) assert.equal(b.lossTokens, loss);
}

describe(`splitDataset (seed ${seed})`, () => {
  test("deterministic, disjoint, complete, order kept, sized round(n·f)", () => {
    const items = Array.from({ length: 103 }, (_, i) => i);
    const a = splitDataset(items, 0.2, seed);
    assert.deepEqual(splitDataset(items, 0.2, seed), a);
    assert.equal(a.eval.length, Math.round(103 * 0.2));
    assert.deepEqual(
      [...a.train, ...a.eval].sort((x, y) => x - y),
      items,
    );
    assert.equal(new Set([...a.train, ...a.eval]).size, 103);
    assert.deepEqual(
      a.train,
      [...a.train].sort((x, y) => x - y),
    );
    assert.deepEqual(
      a.eval,
      [...a.eval].sort((x, y) => x - y),
    );
    assert.notDeepEqual(splitDataset(items, 0.2, seed + 1).eval, a.eval);
  });

  test("edge cases", () => {
    assert.deepEqual(splitDataset([1, 2, 3], 0, seed), { train: [1, 2, 3], eval: [] });
    assert.equal(splitDataset([1, 2, 3], 0.01, seed).eval.length, 1);
    assert.equal(splitDataset([1, 2], 0.9, seed).train.length, 1);
    assert.throws(() => splitDataset([1], 0.5, seed), /cannot split 1 example/);
    assert.throws(() => splitDataset([1, 2], 1, seed), /evalFraction must be in \[0, 1\)/);
  });
});

describe(`bucketing (seed ${seed})`, () => {
  test("each epoch uses every example once, padded right with mask 0 and label -100", () => {
    const ex = lmExamples(203, 60);
    const stream = new BatchStream(ex, { batchSize: 8, seed, padId: PAD });
    assert.equal(stream.batchesPerEpoch, Math.ceil(203 / 8));
    for (const epoch of [0, 1]) {
      const batches = stream.epochBatches(epoch);
      const seen = batches.flatMap((b) => b.examples).sort((a, b) => a - b);
      assert.deepEqual(
        seen,
        ex.map((_, i) => i),
      );
      for (const b of batches) checkPadded(b, ex);
      assert.equal(batches.filter((b) => b.examples.length < 8).length, 1);
    }
  });

  test("grouping by length cuts padding well below random batching", () => {
    const ex = lmExamples(800, 100);
    const padding = (bs: Batch[]) => bs.reduce((a, b) => a + b.inputIds.length * b.inputIds[0].length - b.tokens, 0);
    const real = ex.reduce((a, e) => a + e.inputIds.length, 0);
    const bucketed = padding(makeBatches(ex, { batchSize: 8, seed, padId: PAD, epoch: 0 }));
    const random = padding(makeBatches(ex, { batchSize: 8, seed, padId: PAD, epoch: 0, bucketWindow: 1 }));
    assert.ok(bucketed / real < 0.1, `bucketed padding ${bucketed / real}`);
    assert.ok(random / real > 0.3, `random padding ${random / real}`);
  });

  test("deterministic in (seed, epoch); epochs and seeds differ", () => {
    const ex = lmExamples(100, 30);
    const o = { batchSize: 4, padId: PAD, seed };
    const order = (bs: Batch[]) => bs.map((b) => b.examples.join(",")).join("|");
    const e0 = makeBatches(ex, { ...o, epoch: 0 });
    assert.deepEqual(makeBatches(ex, { ...o, epoch: 0 }), e0);
    assert.notEqual(order(makeBatches(ex, { ...o, epoch: 1 })), order(e0));
    assert.notEqual(order(makeBatches(ex, { ...o, seed: seed + 1, epoch: 0 })), order(e0));
  });

  test("shuffle off keeps the order; dropLast drops the short batch", () => {
    const ex = lmExamples(10, 5);
    const bs = makeBatches(ex, { batchSize: 4, seed, padId: PAD, epoch: 3, shuffle: false });
    assert.deepEqual(
      bs.map((b) => b.examples),
      [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
      ],
    );
    const dropped = new BatchStream(ex, { batchSize: 4, seed, padId: PAD, dropLast: true });
    assert.equal(dropped.batchesPerEpoch, 2);
    assert.ok(dropped.epochBatches(0).every((b) => b.examples.length === 4));
  });

  test("classification batches carry [[class], ...] labels", () => {
    const ex: Example[] = Array.from({ length: 9 }, (_, i) => ({
      inputIds: [5, 6, 7].slice(0, 1 + (i % 3)),
      label: i % 4,
      source: `c:${i}`,
    }));
    const bs = makeBatches(ex, { batchSize: 4, seed, padId: PAD, epoch: 0 });
    for (const b of bs) {
      checkPadded(b, ex);
      assert.equal(b.lossTokens, b.examples.length);
    }
    assert.throws(
      () => new BatchStream([...ex, ...lmExamples(1, 3)], { batchSize: 2, seed, padId: PAD }),
      /classification and language-modelling/,
    );
    assert.throws(() => new BatchStream(ex, { batchSize: 2, seed, padId: PAD, pack: true, seqLen: 8 }), /needs language-modelling/);
  });
});

describe(`packing (seed ${seed})`, () => {
  test("rows of exactly seqLen holding every example once, EOS between them, only the last row padded", () => {
    const ex = lmExamples(57, 40, true);
    const seqLen = 32;
    const stream = new BatchStream(ex, { batchSize: 3, seed, padId: PAD, pack: true, seqLen, eosId: EOS });
    const total = ex.reduce((a, e) => a + e.inputIds.length + (e.inputIds[e.inputIds.length - 1] === EOS ? 0 : 1), 0);
    const rows = Math.ceil(total / seqLen);
    assert.equal(stream.batchesPerEpoch, Math.ceil(rows / 3));
    for (const epoch of [0, 1]) {
      const batches = stream.epochBatches(epoch);
      const ids = batches.flatMap((b) => b.inputIds);
      const masks = batches.flatMap((b) => b.attentionMask);
      const labels = batches.flatMap((b) => b.labels);
      assert.equal(ids.length, rows);
      assert.ok(ids.every((r) => r.length === seqLen));
      const real = masks.flat().filter((m) => m === 1).length;
      assert.equal(real, total);
      assert.ok(
        masks.slice(0, -1).every((m) => m.every((x) => x === 1)),
        "only the last row has padding",
      );
      assert.equal(
        batches.reduce((a, b) => a + b.tokens, 0),
        total,
      );
      const stream_ = ids.flat().slice(0, total);
      const labelStream = labels.flat().slice(0, total);
      assert.ok(
        labels
          .flat()
          .slice(total)
          .every((l) => l === -100),
      );
      // Cut the token stream at each EOS: every piece is one example's tokens, each example once.
      const pieces: number[][] = [];
      let cur: number[] = [];
      let curLabels: number[] = [];
      const pieceLabels: number[][] = [];
      stream_.forEach((t, k) => {
        cur.push(t);
        curLabels.push(labelStream[k]);
        if (t === EOS) {
          pieces.push(cur);
          pieceLabels.push(curLabels);
          cur = [];
          curLabels = [];
        }
      });
      assert.equal(cur.length, 0, "the stream ends with an EOS");
      const owner = pieces.map((p) => Math.floor(p[0] / 1000) - 1);
      assert.deepEqual(
        [...owner].sort((a, b) => a - b),
        ex.map((_, i) => i),
      );
      pieces.forEach((p, k) => {
        const e = ex[owner[k]];
        const withSep = e.inputIds[e.inputIds.length - 1] === EOS ? e.inputIds : [...e.inputIds, EOS];
        assert.deepEqual(p, withSep);
        assert.deepEqual(pieceLabels[k], withSep === e.inputIds ? e.labels : [...e.labels!, EOS]);
      });
      // Each batch lists exactly the examples with a token (their separator included) in it.
      const ownerAt = pieces.flatMap((p, k) => p.map(() => owner[k]));
      batches.forEach((b, bi) => {
        const from = bi * 3 * seqLen;
        const held = new Set(ownerAt.slice(from, Math.min(total, from + b.inputIds.length * seqLen)));
        assert.deepEqual(
          [...b.examples].sort((x, y) => x - y),
          [...held].sort((x, y) => x - y),
        );
      });
    }
    assert.notDeepEqual(stream.batch(0, 0).inputIds, stream.batch(1, 0).inputIds);
  });
});

describe(`resuming at any (epoch, index) (seed ${seed})`, () => {
  for (const pack of [false, true]) {
    test(pack ? "packing" : "bucketing", () => {
      const ex = lmExamples(61, 25, true);
      const opts = { batchSize: 4, seed, padId: PAD, pack, seqLen: 16, eosId: EOS, bucketWindow: 2 };
      const run = [...new BatchStream(ex, opts).iterate({ epoch: 0, index: 0 }, 3)];
      const per = new BatchStream(ex, opts).batchesPerEpoch;
      assert.equal(run.length, 3 * per);
      for (let trial = 0; trial < 6; trial++) {
        const step = Math.floor(Math.random() * run.length);
        const fresh = new BatchStream(ex, opts);
        const at = fresh.position(step);
        assert.deepEqual(at, { epoch: run[step].epoch, index: run[step].index });
        const resumed = [...fresh.iterate(at, 3)];
        assert.deepEqual(resumed, run.slice(step), `resume at step ${step}`);
      }
      // Random access in any order gives the same batches.
      const shuffled = new BatchStream(ex, opts);
      for (const k of [run.length - 1, 0, Math.floor(run.length / 2)])
        assert.deepEqual(shuffled.batch(run[k].epoch, run[k].index), run[k].batch);
    });
  }

  test("positions out of range are rejected", () => {
    const s = new BatchStream(lmExamples(5, 3), { batchSize: 2, seed, padId: PAD });
    assert.throws(() => s.batch(0, 3), /outside the epoch's 3 batches/);
    assert.throws(() => s.batch(-1, 0), /epoch must be a non-negative integer/);
    assert.throws(() => new BatchStream([], { batchSize: 2, seed, padId: PAD }), /empty dataset/);
  });
});

describe("token type ids", () => {
  const ex = (ids: number[], types: number[] | undefined, label: number): Example => ({
    inputIds: ids,
    label,
    source: `p:${label}`,
    ...(types ? { tokenTypeIds: types } : {}),
  });

  test("are right-padded with 0; an untyped example in a typed batch gets all 0; untyped batches have none", () => {
    const examples = [
      ex([2, 5, 3, 7, 3], [0, 0, 0, 1, 1], 0),
      ex([2, 9, 3], undefined, 1),
      ex([2, 4, 4, 3, 8, 8, 3], [0, 0, 0, 0, 1, 1, 1], 2),
    ];
    const [b] = makeBatches(examples, { batchSize: 3, seed: 1, padId: PAD, shuffle: false, epoch: 0 });
    assert.deepEqual(b.tokenTypeIds, [
      [0, 0, 0, 1, 1, 0, 0],
      [0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 1, 1, 1],
    ]);
    const [plain] = makeBatches([examples[1]], { batchSize: 3, seed: 1, padId: PAD, shuffle: false, epoch: 0 });
    assert.equal(plain.tokenTypeIds, undefined);
  });
});
