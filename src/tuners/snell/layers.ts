/** SNELL's and SNELLA's targeted layers and tensor keys. */
import { type FamilyLayer, familyLayers } from "../svfit/family.js";
import type { ModelInfo } from "../tuner.js";
import type { SnellaConfig, SnellConfig } from "./config.js";

export interface SnellKeys {
  p: string;
  q: string;
  alpha: string;
  gamma: string;
  beta: string;
  /** SNELLA: the layer's current sparsity ratio (fixed: the allocator writes it). */
  ratio: string;
}

export function snellKeys(key: string, peftType: "SNELL" | "SNELLA"): SnellKeys {
  const pre = `${key}.${peftType === "SNELL" ? "snell" : "snella"}_`;
  return { p: `${pre}P`, q: `${pre}Q`, alpha: `${pre}alpha`, gamma: `${pre}gamma`, beta: `${pre}beta`, ratio: `${pre}ratio` };
}

export function snellLayers(info: ModelInfo, c: SnellConfig | SnellaConfig): FamilyLayer[] {
  return familyLayers(info, c, c.peftType);
}
