/**
 * Train/eval split and batching. Everything here is a pure function of (examples, options,
 * seed, epoch): the batches of an epoch are recomputed, never carried over, so a run resumed at
 * (epoch, index) sees exactly the batches an uninterrupted run would have.
 */
import { Rng } from "../../util/rng.js";
import { DatasetError } from "./errors.js";
import { type Example, IGNORE_INDEX } from "./tokenize.js";

/** A TrainBatch (see src/tuners/train.ts) plus bookkeeping. Rows are right-padded. */
export interface Batch {
  inputIds: number[][];
  /** 1 on real tokens, 0 on padding. */
  attentionMask: number[][];
  /** Token type ids (0 on padding), when some example of the batch has them (text pairs); else absent = all 0. */
  tokenTypeIds?: number[][];
  /** Language modelling: token ids, -100 on padding and where no loss is taken. Classification: [[c0], [c1], ...]. */
  labels: number[][];
  /** Real (unpadded) tokens in the batch. */
  tokens: number;
  /** Positions that carry a loss: labels other than -100 (language modelling) or the number of rows (classification). */
  lossTokens: number;
  /** Indices (into the examples given) of the examples in the batch; with packing, every example that has tokens in it. */
  examples: number[];
  /** Each row's task id (Example.taskId), when the examples have them. */
  taskIds?: number[];
}

export interface BatchOptions {
  batchSize: number;
  /** Seeds the shuffles; with the epoch it fixes every batch. */
  seed: number;
  /** Id written into padded positions (their mask is 0 and their label -100). */
  padId: number;
  /** Concatenate examples into rows of exactly `seqLen` tokens instead of padding each (language modelling only). */
  pack?: boolean;
  seqLen?: number;
  /** Packing: separator put after an example that does not already end with it (normally the EOS id). */
  eosId?: number | null;
  /** Default true. False keeps the examples in order (no shuffling, no length grouping): for evaluation. */
  shuffle?: boolean;
  /** Length grouping sorts within windows of `bucketWindow × batchSize` shuffled examples. Default 50. */
  bucketWindow?: number;
  /** Leave out a final batch smaller than batchSize (or the last packed row's padding is kept either way). Default false. */
  dropLast?: boolean;
}

export interface StreamPosition {
  epoch: number;
  /** Index of the batch within the epoch. */
  index: number;
}

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit seed from several integers (seeds above 2^32 keep their high bits). */
export function deriveSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    if (!Number.isSafeInteger(p)) throw new DatasetError(`seed values must be integers, got ${p}`);
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = mix32(h ^ mix32(lo ^ 0x27d4eb2f));
    h = mix32(h ^ mix32(hi ^ 0x165667b1));
  }
  return h;
}

function shuffleInPlace<T>(a: T[], rng: Rng): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

function checkPositiveInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new DatasetError(`${what} must be a positive integer, got ${v}`);
  return v;
}

/**
 * Splits examples into train and eval parts: a seeded permutation puts round(n × evalFraction)
 * of them (at least one when the fraction is positive) in eval. Each part keeps the original order.
 */
export function splitDataset<T>(examples: readonly T[], evalFraction: number, seed: number): { train: T[]; eval: T[] } {
  if (!(evalFraction >= 0 && evalFraction < 1)) throw new DatasetError(`evalFraction must be in [0, 1), got ${evalFraction}`);
  const n = examples.length;
  if (evalFraction === 0) return { train: [...examples], eval: [] };
  if (n < 2) throw new DatasetError(`cannot split ${n} example${n === 1 ? "" : "s"} into train and eval parts`);
  const nEval = Math.min(n - 1, Math.max(1, Math.round(n * evalFraction)));
  const perm = shuffleInPlace(
    Array.from({ length: n }, (_, i) => i),
    new Rng(deriveSeed(seed, 0x5eed5)),
  );
  const inEval = new Uint8Array(n);
  for (let k = 0; k < nEval; k++) inEval[perm[k]] = 1;
  const train: T[] = [];
  const evalPart: T[] = [];
  examples.forEach((e, i) => {
    (inEval[i] ? evalPart : train).push(e);
  });
  return { train, eval: evalPart };
}

interface PackedEpoch {
  ids: Int32Array;
  labels: Int32Array;
  /** Example index at each position of the epoch's order, and where its tokens start in the stream. */
  order: number[];
  starts: number[];
}

/**
 * The batches of every epoch, addressable by (epoch, index). The number of batches per epoch is
 * the same for every epoch, so a global step maps to a position with `position(step)`.
 */
export class BatchStream {
  readonly batchesPerEpoch: number;
  private readonly classification: boolean;
  private readonly opts: Required<Omit<BatchOptions, "seqLen" | "eosId">> & { seqLen: number; eosId: number | null };
  private readonly totalPacked: number;
  private cached: { epoch: number; plan: number[][] | PackedEpoch } | null = null;

  constructor(
    private readonly examples: readonly Example[],
    options: BatchOptions,
  ) {
    const batchSize = checkPositiveInt(options.batchSize, "batchSize");
    if (!Number.isInteger(options.padId) || options.padId < 0) throw new DatasetError(`padId must be a token id, got ${options.padId}`);
    deriveSeed(options.seed);
    const pack = options.pack ?? false;
    const seqLen = pack ? checkPositiveInt(options.seqLen, "seqLen (needed for packing)") : 0;
    if (examples.length === 0) throw new DatasetError("cannot batch an empty dataset");
    const withLabel = examples.filter((e) => e.label !== undefined).length;
    if (withLabel !== 0 && withLabel !== examples.length)
      throw new DatasetError("cannot batch classification and language-modelling examples together");
    this.classification = withLabel > 0;
    const withTask = examples.filter((e) => e.taskId !== undefined).length;
    if (withTask !== 0 && withTask !== examples.length) {
      const missing = examples.find((e) => e.taskId === undefined) as Example;
      throw new DatasetError(`${missing.source}: this example has no task, but others do; give every example a "task" field`);
    }
    if (pack && withTask)
      throw new DatasetError("packing puts several examples in one row, but task ids are per row: turn packing off for multi-task data");
    if (pack && this.classification)
      throw new DatasetError("packing concatenates token streams; it needs language-modelling examples, not classification");
    this.opts = {
      batchSize,
      seed: options.seed,
      padId: options.padId,
      pack,
      seqLen,
      eosId: options.eosId ?? null,
      shuffle: options.shuffle ?? true,
      bucketWindow: checkPositiveInt(options.bucketWindow ?? 50, "bucketWindow"),
      dropLast: options.dropLast ?? false,
    };
    const count = (units: number) => (this.opts.dropLast ? Math.floor(units / batchSize) : Math.ceil(units / batchSize));
    if (pack) {
      let total = 0;
      for (const e of examples) total += e.inputIds.length + (this.needsSeparator(e) ? 1 : 0);
      this.totalPacked = total;
      this.batchesPerEpoch = count(Math.ceil(total / seqLen));
    } else {
      this.totalPacked = 0;
      this.batchesPerEpoch = count(examples.length);
    }
    if (this.batchesPerEpoch === 0) {
      throw new DatasetError(`dropLast with batchSize ${batchSize} leaves no batch (the dataset makes fewer than one full batch)`);
    }
  }

  private needsSeparator(e: Example): boolean {
    const sep = this.opts.eosId;
    return sep !== null && e.inputIds[e.inputIds.length - 1] !== sep;
  }

  /** The epoch's order: a seeded shuffle unless shuffle is off. */
  private order(rng: Rng): number[] {
    const idx = Array.from({ length: this.examples.length }, (_, i) => i);
    return this.opts.shuffle ? shuffleInPlace(idx, rng) : idx;
  }

  private plan(epoch: number): number[][] | PackedEpoch {
    if (!Number.isInteger(epoch) || epoch < 0) throw new DatasetError(`epoch must be a non-negative integer, got ${epoch}`);
    if (this.cached?.epoch === epoch) return this.cached.plan;
    const rng = new Rng(deriveSeed(this.opts.seed, epoch, 0xba7c4));
    const order = this.order(rng);
    let plan: number[][] | PackedEpoch;
    if (this.opts.pack) plan = this.packEpoch(order);
    else {
      const { batchSize, bucketWindow, shuffle } = this.opts;
      const batches: number[][] = [];
      const window = batchSize * bucketWindow;
      for (let w = 0; w < order.length; w += window) {
        const part = order.slice(w, w + window);
        // Stable sort: equal lengths keep their shuffled order.
        if (shuffle) part.sort((a, b) => this.examples[a].inputIds.length - this.examples[b].inputIds.length);
        for (let k = 0; k < part.length; k += batchSize) batches.push(part.slice(k, k + batchSize));
      }
      if (this.opts.dropLast && batches.length > 0 && batches[batches.length - 1].length < batchSize) batches.pop();
      plan = shuffle ? shuffleInPlace(batches, rng) : batches;
    }
    this.cached = { epoch, plan };
    return plan;
  }

  private packEpoch(order: number[]): PackedEpoch {
    const ids = new Int32Array(this.totalPacked);
    const labels = new Int32Array(this.totalPacked);
    const starts: number[] = [];
    let at = 0;
    for (const i of order) {
      const e = this.examples[i];
      starts.push(at);
      ids.set(e.inputIds, at);
      labels.set(e.labels!, at);
      at += e.inputIds.length;
      if (this.needsSeparator(e)) {
        ids[at] = this.opts.eosId!;
        labels[at] = this.opts.eosId!;
        at++;
      }
    }
    return { ids, labels, order, starts };
  }

  /** Every batch of one epoch. */
  epochBatches(epoch: number): Batch[] {
    return Array.from({ length: this.batchesPerEpoch }, (_, i) => this.batch(epoch, i));
  }

  /** The batch at (epoch, index). */
  batch(epoch: number, index: number): Batch {
    if (!Number.isInteger(index) || index < 0 || index >= this.batchesPerEpoch) {
      throw new DatasetError(`batch index ${index} is outside the epoch's ${this.batchesPerEpoch} batches`);
    }
    const plan = this.plan(epoch);
    return Array.isArray(plan) ? this.padded(plan[index]) : this.packed(plan, index);
  }

  /** The position of a global step counted from (0, 0). */
  position(step: number): StreamPosition {
    if (!Number.isInteger(step) || step < 0) throw new DatasetError(`step must be a non-negative integer, got ${step}`);
    return { epoch: Math.floor(step / this.batchesPerEpoch), index: step % this.batchesPerEpoch };
  }

  /** Batches from `start` on, through the end of epoch `endEpoch - 1` (default: without end). */
  *iterate(
    start: StreamPosition = { epoch: 0, index: 0 },
    endEpoch = Number.POSITIVE_INFINITY,
  ): Generator<StreamPosition & { batch: Batch }> {
    let { epoch, index } = start;
    if (!Number.isInteger(index) || index < 0 || index > this.batchesPerEpoch) {
      throw new DatasetError(`batch index ${index} is outside the epoch's ${this.batchesPerEpoch} batches`);
    }
    for (; epoch < endEpoch; epoch++, index = 0) {
      for (; index < this.batchesPerEpoch; index++) yield { epoch, index, batch: this.batch(epoch, index) };
    }
  }

  private padded(members: number[]): Batch {
    const { padId } = this.opts;
    const width = Math.max(...members.map((i) => this.examples[i].inputIds.length));
    const batch: Batch = { inputIds: [], attentionMask: [], labels: [], tokens: 0, lossTokens: 0, examples: [...members] };
    const typed = members.some((i) => this.examples[i].tokenTypeIds !== undefined);
    if (this.examples[members[0]].taskId !== undefined) batch.taskIds = members.map((i) => this.examples[i].taskId as number);
    if (typed) batch.tokenTypeIds = [];
    for (const i of members) {
      const e = this.examples[i];
      const n = e.inputIds.length;
      const pad = width - n;
      batch.inputIds.push([...e.inputIds, ...new Array<number>(pad).fill(padId)]);
      batch.attentionMask.push([...new Array<number>(n).fill(1), ...new Array<number>(pad).fill(0)]);
      if (typed) batch.tokenTypeIds!.push([...(e.tokenTypeIds ?? new Array<number>(n).fill(0)), ...new Array<number>(pad).fill(0)]);
      batch.tokens += n;
      if (this.classification) {
        batch.labels.push([e.label!]);
        batch.lossTokens++;
      } else {
        batch.labels.push([...e.labels!, ...new Array<number>(pad).fill(IGNORE_INDEX)]);
        for (const l of e.labels!) if (l !== IGNORE_INDEX) batch.lossTokens++;
      }
    }
    return batch;
  }

  private packed(p: PackedEpoch, index: number): Batch {
    const { seqLen, batchSize, padId } = this.opts;
    const rows = Math.ceil(this.totalPacked / seqLen);
    const batch: Batch = { inputIds: [], attentionMask: [], labels: [], tokens: 0, lossTokens: 0, examples: [] };
    const members = new Set<number>();
    for (let r = index * batchSize; r < Math.min(rows, (index + 1) * batchSize); r++) {
      const from = r * seqLen;
      const to = Math.min(from + seqLen, this.totalPacked);
      const pad = seqLen - (to - from);
      batch.inputIds.push([...p.ids.subarray(from, to), ...new Array<number>(pad).fill(padId)]);
      const lab = [...p.labels.subarray(from, to)];
      batch.labels.push([...lab, ...new Array<number>(pad).fill(IGNORE_INDEX)]);
      batch.attentionMask.push([...new Array<number>(to - from).fill(1), ...new Array<number>(pad).fill(0)]);
      batch.tokens += to - from;
      for (const l of lab) if (l !== IGNORE_INDEX) batch.lossTokens++;
      // Examples overlapping [from, to): from the one holding `from` to the one holding `to - 1`.
      for (let k = lastAtOrBefore(p.starts, from); k < p.starts.length && p.starts[k] < to; k++) members.add(p.order[k]);
    }
    batch.examples = [...members];
    return batch;
  }
}

function lastAtOrBefore(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (sorted[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** All batches of one epoch (see BatchStream). */
export function makeBatches(examples: readonly Example[], options: BatchOptions & { epoch: number }): Batch[] {
  return new BatchStream(examples, options).epochBatches(options.epoch);
}
