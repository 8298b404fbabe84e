/**
 * S²FT's selection and co-permutation as pure host logic (Infini-AI-Lab/S2FT,
 * experiments/utils/s2_utils.py: convert_mha_layer_to_s2, convert_ffn_layer_to_s2).
 *
 * Units are drawn uniformly over all (layer, unit) pairs, so per-layer counts vary, with
 * ⌊units·layers·ratio⌋ draws per kind (V, O, up, down; independent draws). Attention units are
 * KV groups: one key/value head and the query heads that share it (a head on MHA models, where
 * this is the authors' rule). The authors index q/k/v by attention head, which breaks on
 * grouped-query attention; permuting whole groups is what keeps each query head with its KV head.
 */
import { Rng } from "../../util/rng.js";

/** Chosen units of one layer, increasing: rows side (V, up) and columns side (O, down). */
export interface UnitChoice {
  readonly rows: readonly number[];
  readonly cols: readonly number[];
}

export interface LayerChoice {
  readonly attn: UnitChoice;
  readonly ffn: UnitChoice;
}

/** k distinct numbers of [0, n), increasing (random.sample's law). */
export function sampleUnits(n: number, k: number, rng: Rng): number[] {
  const pool = new Int32Array(n);
  for (let i = 0; i < n; i++) pool[i] = i;
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rng.next() * (n - i));
    const t = pool[i];
    pool[i] = pool[j];
    pool[j] = t;
  }
  return Array.from(pool.subarray(0, k)).sort((a, b) => a - b);
}

export interface SelectionShape {
  layers: number;
  /** Attention units per layer (KV heads). */
  groups: number;
  /** FFN channels per layer (intermediate size). */
  channels: number;
}

export interface SelectionRatios {
  vRatio: number;
  oRatio: number;
  uRatio: number;
  dRatio: number;
  seed: number;
}

/** The per-layer choice, drawn in finetune.py's order (V, O, up, down) from one stream seeded by `seed`. */
export function selectUnits(s: SelectionShape, r: SelectionRatios): LayerChoice[] {
  const rng = new Rng(r.seed);
  const draw = (perLayer: number, ratio: number) => {
    const byLayer: number[][] = Array.from({ length: s.layers }, () => []);
    const total = perLayer * s.layers;
    for (const u of sampleUnits(total, Math.floor(total * ratio), rng)) byLayer[Math.floor(u / perLayer)].push(u % perLayer);
    return byLayer;
  };
  const v = draw(s.groups, r.vRatio);
  const o = draw(s.groups, r.oRatio);
  const u = draw(s.channels, r.uRatio);
  const d = draw(s.channels, r.dRatio);
  return v.map((_, i) => ({ attn: { rows: v[i], cols: o[i] }, ffn: { rows: u[i], cols: d[i] } }));
}

/**
 * The authors' order of a layer's units: rows-only ++ both ++ columns-only ++ the rest, each
 * increasing. After permuting by it the row slice is units [0, rowsEnd) and the column slice
 * units [colsStart, colsEnd): both contiguous.
 */
export interface UnitOrder {
  readonly order: readonly number[];
  readonly rowsEnd: number;
  readonly colsStart: number;
  readonly colsEnd: number;
}

export function unitOrder(n: number, c: UnitChoice): UnitOrder {
  const rows = new Set(c.rows);
  const cols = new Set(c.cols);
  const onlyRows = c.rows.filter((x) => !cols.has(x));
  const both = c.rows.filter((x) => cols.has(x));
  const onlyCols = c.cols.filter((x) => !rows.has(x));
  const rest = Array.from({ length: n }, (_, i) => i).filter((x) => !rows.has(x) && !cols.has(x));
  return {
    order: [...onlyRows, ...both, ...onlyCols, ...rest],
    rowsEnd: onlyRows.length + both.length,
    colsStart: onlyRows.length,
    colsEnd: onlyRows.length + both.length + onlyCols.length,
  };
}

/** Units expanded to the rows (or columns) they own, `width` each, increasing. */
export function expandUnits(units: readonly number[], width: number): Int32Array {
  const out = new Int32Array(units.length * width);
  units.forEach((u, j) => {
    for (let w = 0; w < width; w++) out[j * width + w] = u * width + w;
  });
  return out;
}
