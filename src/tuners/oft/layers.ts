/**
 * Which linear layers an OFT config attaches to, and each layer's block count and size as PEFT
 * 0.20.0's OFTLayer.update_layer resolves them (adjusting an r or block size that does not divide
 * in_features to the nearest divisor, as PEFT does with a warning, so saved shapes match).
 */
import { PeftConfigError } from "../config.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { embeddingLayers } from "../lora/layers.js";
import { matchesModules, selectTargets } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { OftConfig } from "./config.js";

export interface OftLayer {
  /** Canonical path; the weight is `${path}.weight`. */
  path: string;
  /** Adapter key of the packed skew-symmetric parameters. */
  key: string;
  inFeatures: number;
  outFeatures: number;
  /** Blocks on the diagonal (PEFT's r). */
  r: number;
  blockSize: number;
  /** Rows of oft_R: r, or 1 with block_share. */
  stored: number;
  /** b(b−1)/2: the upper triangle of one block. */
  nElements: number;
  /** The r or oft_block_size PEFT would have adjusted (and warned about), or null. */
  adjusted: string | null;
}

/** PEFT's OFTLayer.adjust_oft_parameters: the divisor of in_features nearest to `params` (ties go down). */
export function adjustOftParameter(inFeatures: number, params: number): number {
  if (params >= inFeatures) return inFeatures;
  let higher = params;
  while (higher <= inFeatures && inFeatures % higher !== 0) higher++;
  let lower = params;
  while (lower > 1 && inFeatures % lower !== 0) lower--;
  return params - lower <= higher - params ? lower : higher;
}

/** (r, block size) for one layer, as update_layer computes them. */
export function resolveBlocks(
  inFeatures: number,
  c: Pick<OftConfig, "r" | "oftBlockSize">,
): { r: number; blockSize: number; adjusted: string | null } {
  if (c.r === 0) {
    let b = c.oftBlockSize;
    let adjusted: string | null = null;
    if (inFeatures % b !== 0 || b > inFeatures) {
      b = adjustOftParameter(inFeatures, b);
      adjusted = `oft_block_size ${c.oftBlockSize} → ${b}`;
    }
    return { r: inFeatures / b, blockSize: b, adjusted };
  }
  let r = c.r;
  let adjusted: string | null = null;
  if (inFeatures % r !== 0 || r > inFeatures) {
    r = adjustOftParameter(inFeatures, r);
    adjusted = `r ${c.r} → ${r}`;
  }
  return { r, blockSize: inFeatures / r, adjusted };
}

export function oftLayers(info: ModelInfo, c: OftConfig): OftLayer[] {
  // PEFT ≥ 0.19 also rotates embedding outputs (oft_embedding_R); refuse rather than skip them.
  const t = c.targetModules;
  if (t !== null && !(typeof t === "string" && t.toLowerCase() === "all-linear")) {
    const emb = embeddingLayers(info)
      .map((p) => info.peftName(p))
      .find((n) => matchesModules(t, n, "OFT config"));
    if (emb)
      throw new PeftConfigError(
        `OFT config: target_modules matches the embedding ${emb}; OFT on embeddings (PEFT's oft_embedding_R) is not supported yet`,
      );
  }
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const chosen = selectTargets(c, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: LORA_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "OFT config",
  });
  if (info.fanInFanOut)
    throw new PeftConfigError(
      `OFT config: this model's linear layers are GPT-2 Conv1D ([in, out]); PEFT 0.20.0's OFT supports nn.Linear layers only (it raises "Target module ... is not supported")`,
    );
  return chosen.map((name) => {
    const path = byPeft.get(name) as string;
    const [outFeatures, inFeatures] = info.weight(`${path}.weight`).shape;
    const { r, blockSize, adjusted } = resolveBlocks(inFeatures, c);
    return {
      path,
      key: `${name}.oft_R.weight`,
      inFeatures,
      outFeatures,
      r,
      blockSize,
      stored: c.blockShare ? 1 : r,
      nElements: (blockSize * (blockSize - 1)) / 2,
      adjusted,
    };
  });
}
