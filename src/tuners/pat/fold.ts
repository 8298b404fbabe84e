/**
 * Folding the HSMs into the weights at full size (PAT's merge): with T' = diag(s ⊙ m)·(I + U·D)
 * and m the rounded mask 1[μ ≥ 0], the embedding table becomes E·T'ᵀ and o_proj / down_proj
 * (weight and bias) become T'·W, T'·b. The merged model computes what the adapter computes at
 * inference, and its residual stream is exactly 0 on the dropped channels, which is what
 * src/prune/hidden-size.ts then removes. (The authors' merge_dimdown.py drops s; see docs/methods/pat.md.)
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { ModelInfo } from "../tuner.js";
import type { PatConfig } from "./config.js";
import { hsmKeys, hsmRankOf, hsmSites, maskKey } from "./hsm.js";

interface Hsm {
  down: Float32Array;
  up: Float32Array;
  /** s ⊙ m. */
  sm: Float64Array;
  rank: number;
}

/** x [n, d] (row-major) → rows of x·T'ᵀ = sm ⊙ (x + (x·Dᵀ)·Uᵀ). */
function foldRows(x: Float32Array, n: number, d: number, h: Hsm): Float32Array {
  const out = new Float32Array(n * d);
  const low = new Float64Array(h.rank);
  for (let i = 0; i < n; i++) {
    const row = i * d;
    for (let k = 0; k < h.rank; k++) {
      let acc = 0;
      const dk = k * d;
      for (let j = 0; j < d; j++) acc += x[row + j] * h.down[dk + j];
      low[k] = acc;
    }
    for (let j = 0; j < d; j++) {
      let acc = x[row + j];
      const uj = j * h.rank;
      for (let k = 0; k < h.rank; k++) acc += h.up[uj + k] * low[k];
      out[row + j] = h.sm[j] * acc;
    }
  }
  return out;
}

/** W [d, n] → T'·W = sm ⊙ (W + U·(D·W)) (columns of W are vectors of the residual stream). */
function foldCols(w: Float32Array, d: number, n: number, h: Hsm): Float32Array {
  const dw = new Float64Array(h.rank * n);
  for (let k = 0; k < h.rank; k++)
    for (let j = 0; j < d; j++) {
      const c = h.down[k * d + j];
      if (c === 0) continue;
      for (let i = 0; i < n; i++) dw[k * n + i] += c * w[j * n + i];
    }
  const out = new Float32Array(d * n);
  for (let j = 0; j < d; j++) {
    const row = new Float64Array(n);
    for (let i = 0; i < n; i++) row[i] = w[j * n + i];
    for (let k = 0; k < h.rank; k++) {
      const u = h.up[j * h.rank + k];
      if (u === 0) continue;
      for (let i = 0; i < n; i++) row[i] += u * dw[k * n + i];
    }
    for (let i = 0; i < n; i++) out[j * n + i] = h.sm[j] * row[i];
  }
  return out;
}

/**
 * The weights the HSMs change, folded, starting from `current` (LoRA already merged into them, or
 * the base): the embedding table and each layer's o_proj / down_proj weight and bias.
 */
export function foldHsms(
  info: ModelInfo,
  c: PatConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  current: (name: string) => HostTensor,
): Map<string, HostTensor> {
  const d = info.hidden;
  const rank = hsmRankOf(info, c);
  const mu = tensors.get(maskKey(info))?.data as Float32Array;
  const out = new Map<string, HostTensor>();
  for (const site of hsmSites(info)) {
    const k = hsmKeys(site);
    const scale = c.identityLoss ? (tensors.get(k.scale)?.data as Float32Array) : null;
    const sm = Float64Array.from(mu, (m, j) => (m >= 0 ? (scale ? scale[j] : 1) : 0));
    const h: Hsm = { down: tensors.get(k.down)?.data as Float32Array, up: tensors.get(k.up)?.data as Float32Array, sm, rank };
    const wName = `${site.path}.weight`;
    const w = current(wName);
    if (site.kind === "embeddings") {
      const v = w.shape[0];
      out.set(wName, hostTensor("f32", [v, d], foldRows(w.data as Float32Array, v, d, h)));
      continue;
    }
    const n = w.shape[1];
    out.set(wName, hostTensor("f32", [d, n], foldCols(w.data as Float32Array, d, n, h)));
    const bName = `${site.path}.bias`;
    if (info.hasWeight(bName)) out.set(bName, hostTensor("f32", [d], foldCols(current(bName).data as Float32Array, d, 1, h)));
  }
  return out;
}
