/**
 * BOFT's butterfly permutations, as PEFT 0.20.0's BOFTLayer.block_butterfly_perm and perm2mat
 * build them (tuners/boft/layer.py), and the per-layer block layout update_layer derives.
 */
import { PeftConfigError } from "../config.js";

/**
 * PEFT's block_butterfly_perm(n, b, r, n_butterfly_factor): within each of the b chunks of n/b
 * indices, the runs of r indices are reordered evens first, then odds. Identity when the factor is 0.
 */
export function blockButterflyPerm(n: number, b: number, r: number, nButterflyFactor: number): Int32Array {
  const indices = Int32Array.from({ length: n }, (_, i) => i);
  if (nButterflyFactor === 0) return indices;
  if (b * r * 2 > n) throw new PeftConfigError(`BOFT: invalid number of blocks (${b} blocks of runs of ${r} over ${n} features)`);
  const blockSize = Math.floor(n / b);
  const step = blockSize / r;
  const seq: number[] = [];
  for (let v = 0; v < step; v += 2) seq.push(v);
  for (let v = 1; v < step; v += 2) seq.push(v);
  const sorted = new Int32Array(blockSize).fill(-1);
  seq.forEach((pos, i) => {
    for (let t = 0; t < r; t++) {
      const to = i * r + t;
      const from = pos * r + t;
      if (to < blockSize && from < blockSize) sorted[to] = from;
    }
  });
  // torch.empty leaves unfilled slots undefined; no valid layout reaches this.
  if (sorted.includes(-1) || n % blockSize !== 0)
    throw new PeftConfigError(`BOFT: the butterfly permutation of ${n} features in ${b} blocks of runs of ${r} is undefined`);
  const out = new Int32Array(n);
  for (let s = 0; s < n; s += blockSize) for (let j = 0; j < blockSize; j++) out[s + j] = indices[s + sorted[j]];
  return out;
}

/** PEFT's perm2mat: P[i, idx[i]] = 1 (row-major n×n). */
export function permMatrix(idx: Int32Array): Float64Array {
  const n = idx.length;
  const p = new Float64Array(n * n);
  idx.forEach((j, i) => {
    p[i * n + j] = 1;
  });
  return p;
}

export interface ButterflyLayout {
  /** Stored butterfly factors: boft_n_butterfly_factor (PEFT's N in boft_R [N, D, b, b]). */
  factors: number;
  blockNum: number;
  blockSize: number;
  /** One permutation per factor (PEFT's boft_P[i] = perm2mat(perms[i])). */
  perms: Int32Array[];
}

/** update_layer's checks and derivations for a layer with `inFeatures` inputs (errors name the module). */
export function butterflyLayout(
  inFeatures: number,
  c: { boftBlockSize: number; boftBlockNum: number; boftNButterflyFactor: number },
  module: string,
): ButterflyLayout {
  const n = inFeatures;
  const k = c.boftNButterflyFactor - 1;
  const fail = (msg: string): never => {
    throw new PeftConfigError(`BOFT config, module ${module}: ${msg}`);
  };
  let blockNum = c.boftBlockNum;
  let blockSize = c.boftBlockSize;
  if (blockSize === 0) {
    if (n % blockNum !== 0) fail(`in_features (${n}) must be divisible by boft_block_num (${blockNum})`);
    if (k !== 0) {
      if (k > Math.floor(Math.log2(blockNum)))
        fail(`invalid combination of boft_n_butterfly_factor (${k + 1}) and boft_block_num (${blockNum}): needs boft_block_num ≥ 2^${k}`);
      if (blockNum % 2 ** k !== 0) fail(`boft_block_num (${blockNum}) must be a multiple of 2^${k} (boft_n_butterfly_factor ${k + 1})`);
    }
    blockSize = n / blockNum;
  } else {
    if (n % blockSize !== 0) fail(`in_features (${n}) must be divisible by boft_block_size (${blockSize})`);
    if (k !== 0 && (n < blockSize * 2 ** k || n % (blockSize * 2 ** k) !== 0))
      fail(
        `invalid combination of in_features (${n}), boft_n_butterfly_factor (${k + 1}) and boft_block_size (${blockSize}): in_features must be a multiple of boft_block_size·2^${k}`,
      );
    blockNum = n / blockSize;
  }
  if (k !== 0) {
    if (blockNum % 2 !== 0) fail(`boft_block_num (${blockNum}) must be even when boft_n_butterfly_factor > 1`);
    if (blockSize % 2 !== 0) fail(`boft_block_size (${blockSize}) must be even when boft_n_butterfly_factor > 1`);
  }
  const perms: Int32Array[] = [];
  for (let i = 0; i <= k; i++) perms.push(blockButterflyPerm(n, Math.trunc(blockNum / 2 ** i), Math.trunc(blockSize / 2), k));
  return { factors: k + 1, blockNum, blockSize, perms };
}

/** The inverse permutation: inv[idx[i]] = i. */
export function inversePerm(idx: Int32Array): Int32Array {
  const inv = new Int32Array(idx.length);
  idx.forEach((j, i) => {
    inv[j] = i;
  });
  return inv;
}
