/**
 * Which slices an S²FT config trains on a model: per decoder layer, the output rows of v_proj
 * (whole KV groups) and up_proj (channels), the input columns of o_proj (the query heads of whole
 * KV groups) and down_proj (channels).
 */
import { PeftConfigError } from "../config.js";
import type { ModelInfo } from "../tuner.js";
import type { S2ftConfig } from "./config.js";
import { expandUnits, type LayerChoice, selectUnits } from "./selection.js";

export type SliceSide = "rows" | "cols";

/** One trained slice. */
export interface S2ftSlice {
  readonly path: string;
  /** PEFT module name (adapter keys start with it). */
  readonly key: string;
  readonly weight: string;
  readonly side: SliceSide;
  /** The base weight's [out, in]. */
  readonly shape: readonly [number, number];
  /** Rows (side "rows") or columns (side "cols") of the weight the slice covers, increasing. */
  readonly indices: Int32Array;
}

export const indicesKey = (s: { key: string }): string => `${s.key}.s2ft.indices`;
export const sliceKey = (s: { key: string }): string => `${s.key}.s2ft.weight`;

/** The slice tensor's shape: [n, in] for rows, [out, n] for columns. */
export const sliceShape = (s: S2ftSlice): [number, number] =>
  s.side === "rows" ? [s.indices.length, s.shape[1]] : [s.shape[0], s.indices.length];

export interface S2ftLayout {
  /** Per layer: the canonical paths of its projections. */
  readonly layers: readonly Record<"q" | "k" | "v" | "o" | "gate" | "up" | "down", string>[];
  readonly headDim: number;
  /** Query heads per KV group. */
  readonly queriesPerGroup: number;
  readonly groups: number;
  readonly channels: number;
}

const PROJ = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
} as const;

/** The model's layers, or a one-line refusal for a model without LLaMA-style projections. */
export function s2ftLayout(info: ModelInfo): S2ftLayout {
  const byLayer = new Map<number, Record<string, string>>();
  for (const p of info.linearLayers) {
    for (const [k, suffix] of Object.entries(PROJ)) {
      const m = new RegExp(`\\.(\\d+)\\.${suffix.replace(".", "\\.")}$`).exec(p);
      if (!m) continue;
      const i = Number(m[1]);
      const rec = byLayer.get(i) ?? {};
      rec[k] = p;
      byLayer.set(i, rec);
    }
  }
  const layers = [...byLayer.keys()].sort((a, b) => a - b).map((i) => byLayer.get(i) as Record<string, string>);
  const missing = Object.keys(PROJ).filter((k) => layers.length === 0 || layers.some((l) => !l[k]));
  if (missing.length || info.fanInFanOut)
    throw new PeftConfigError(
      `S2FT config: ${info.modelType} is not supported: S2FT needs decoder layers with ${Object.values(PROJ).join(", ")} (LLaMA-style)`,
    );
  const channels = info.weight(`${layers[0].up}.weight`).shape[0];
  return {
    layers: layers as S2ftLayout["layers"],
    headDim: info.headDim,
    queriesPerGroup: info.heads / info.kvHeads,
    groups: info.kvHeads,
    channels,
  };
}

export function s2ftChoice(info: ModelInfo, c: S2ftConfig): LayerChoice[] {
  const l = s2ftLayout(info);
  return selectUnits({ layers: l.layers.length, groups: l.groups, channels: l.channels }, c);
}

/** The trained slices, layer by layer (v, o, up, down); layers with nothing chosen have none. */
export function s2ftSlices(info: ModelInfo, c: S2ftConfig): S2ftSlice[] {
  const l = s2ftLayout(info);
  const choice = s2ftChoice(info, c);
  const out: S2ftSlice[] = [];
  const add = (path: string, side: SliceSide, indices: Int32Array) => {
    if (indices.length === 0) return;
    const weight = `${path}.weight`;
    const [d0, d1] = info.weight(weight).shape;
    out.push({ path, key: info.peftName(path), weight, side, shape: [d0, d1], indices });
  };
  l.layers.forEach((p, i) => {
    add(p.v, "rows", expandUnits(choice[i].attn.rows, l.headDim));
    add(p.o, "cols", expandUnits(choice[i].attn.cols, l.headDim * l.queriesPerGroup));
    add(p.up, "rows", expandUnits(choice[i].ffn.rows, 1));
    add(p.down, "cols", expandUnits(choice[i].ffn.cols, 1));
  });
  if (out.length === 0)
    throw new PeftConfigError(
      `S2FT config: the ratios (v ${c.vRatio}, o ${c.oRatio}, u ${c.uRatio}, d ${c.dRatio}) choose no unit of this model's ${l.layers.length} layers`,
    );
  return out;
}
