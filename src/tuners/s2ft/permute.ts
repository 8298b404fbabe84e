/**
 * S²FT's co-permutation (s2_utils.py: convert_mha_layer_to_s2 / convert_ffn_layer_to_s2): each
 * layer's attention units and FFN channels are reordered so the chosen ones are contiguous, the
 * producing and consuming weights together, which leaves the function unchanged (a sum over
 * heads or channels does not depend on their order). peftkit's forward does not need it (it
 * gathers and scatters by index), but the authors' merged checkpoint is this permuted model with
 * the slices added into contiguous blocks (fuse_s2_weight); `permutedMerge` builds that.
 *
 * With grouped-query attention the unit is a KV group: k and v rows move by KV head, q rows and
 * o columns by the group's query heads, so every query head keeps its KV head.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { ModelInfo } from "../tuner.js";
import type { S2ftConfig } from "./config.js";
import { s2ftChoice, s2ftLayout, sliceKey } from "./layers.js";
import { type UnitOrder, unitOrder } from "./selection.js";

const f32 = (t: HostTensor) => Float32Array.from(t.data as ArrayLike<number>);

/** Rows of a [rows, cols] (or [rows]) tensor regrouped: block j of the result is block order[j]. */
export function permuteRows(t: HostTensor, order: readonly number[], block: number): HostTensor {
  const cols = t.shape.length === 2 ? t.shape[1] : 1;
  const src = f32(t);
  const out = new Float32Array(src.length);
  order.forEach((u, j) => {
    out.set(src.subarray(u * block * cols, (u + 1) * block * cols), j * block * cols);
  });
  return hostTensor("f32", [...t.shape], out);
}

/** Columns of a [rows, cols] tensor regrouped: column block j of the result is block order[j]. */
export function permuteCols(t: HostTensor, order: readonly number[], block: number): HostTensor {
  const [rows, cols] = t.shape;
  const src = f32(t);
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++)
    order.forEach((u, j) => {
      for (let b = 0; b < block; b++) out[r * cols + j * block + b] = src[r * cols + u * block + b];
    });
  return hostTensor("f32", [rows, cols], out);
}

export interface LayerOrders {
  readonly attn: UnitOrder;
  readonly ffn: UnitOrder;
}

export function layerOrders(info: ModelInfo, c: S2ftConfig): LayerOrders[] {
  const l = s2ftLayout(info);
  return s2ftChoice(info, c).map((ch) => ({ attn: unitOrder(l.groups, ch.attn), ffn: unitOrder(l.channels, ch.ffn) }));
}

/** Every projection of every layer permuted by its layer's orders (biases of q/k/v too). */
export function permutedWeights(info: ModelInfo, c: S2ftConfig): Map<string, HostTensor> {
  const l = s2ftLayout(info);
  const dh = l.headDim;
  const gq = dh * l.queriesPerGroup;
  const out = new Map<string, HostTensor>();
  const rows = (path: string, order: readonly number[], block: number) => {
    for (const n of [`${path}.weight`, `${path}.bias`]) if (info.hasWeight(n)) out.set(n, permuteRows(info.weight(n), order, block));
  };
  layerOrders(info, c).forEach((o, i) => {
    const p = l.layers[i];
    rows(p.q, o.attn.order, gq);
    rows(p.k, o.attn.order, dh);
    rows(p.v, o.attn.order, dh);
    out.set(`${p.o}.weight`, permuteCols(info.weight(`${p.o}.weight`), o.attn.order, gq));
    rows(p.gate, o.ffn.order, 1);
    rows(p.up, o.ffn.order, 1);
    out.set(`${p.down}.weight`, permuteCols(info.weight(`${p.down}.weight`), o.ffn.order, 1));
  });
  return out;
}

/**
 * The authors' merged model: the permuted weights with each slice added into its contiguous
 * block (rows [0, rowsEnd) of v/up, columns [colsStart, colsEnd) of o/down, in units). The
 * slice's own rows/columns follow the increasing unit order, so block j takes the slice part of
 * unit order[j].
 */
export function permutedMerge(info: ModelInfo, c: S2ftConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const l = s2ftLayout(info);
  const out = permutedWeights(info, c);
  const choice = s2ftChoice(info, c);
  const slice = (path: string) => {
    const t = tensors.get(sliceKey({ key: info.peftName(path) }));
    if (!t) throw new PeftConfigError(`S2FT merge: the adapter has no tensor "${sliceKey({ key: info.peftName(path) })}"`);
    return f32(t);
  };
  const addRows = (path: string, units: readonly number[], o: UnitOrder, block: number) => {
    if (o.rowsEnd === 0) return;
    const w = out.get(`${path}.weight`) as HostTensor;
    const data = w.data as Float32Array;
    const cols = w.shape[1];
    const s = slice(path);
    for (let j = 0; j < o.rowsEnd; j++) {
      const rank = units.indexOf(o.order[j]);
      for (let i = 0; i < block * cols; i++) data[j * block * cols + i] += s[rank * block * cols + i];
    }
  };
  const addCols = (path: string, units: readonly number[], o: UnitOrder, block: number) => {
    if (o.colsEnd === o.colsStart) return;
    const w = out.get(`${path}.weight`) as HostTensor;
    const data = w.data as Float32Array;
    const [rows, cols] = w.shape;
    const s = slice(path);
    const n = units.length * block;
    for (let j = o.colsStart; j < o.colsEnd; j++) {
      const rank = units.indexOf(o.order[j]);
      for (let r = 0; r < rows; r++) for (let b = 0; b < block; b++) data[r * cols + j * block + b] += s[r * n + rank * block + b];
    }
  };
  layerOrders(info, c).forEach((o, i) => {
    const p = l.layers[i];
    addRows(p.v, choice[i].attn.rows, o.attn, l.headDim);
    addCols(p.o, choice[i].attn.cols, o.attn, l.headDim * l.queriesPerGroup);
    addRows(p.up, choice[i].ffn.rows, o.ffn, 1);
    addCols(p.down, choice[i].ffn.cols, o.ffn, 1);
  });
  return out;
}
