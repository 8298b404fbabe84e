/**
 * Which whole base tensors train, chosen layer by layer (LISA) or matrix by matrix (HFT). Pure host
 * logic: a selection is a function of (seed, draw index) only, so a resumed run redraws exactly
 * the set it had without saving generator state.
 */
import { layerIndex } from "../tuners/targets.js";
import { Rng } from "../util/rng.js";
import { TrainingArgsError } from "./schedule.js";

export class LayerSelectionError extends TrainingArgsError {}

/** The generator of draw `index` (LISA: interval, HFT: stage) of a run seeded `seed`. */
export function drawRng(seed: number, index: number): Rng {
  // splitmix-style mix, so neighbouring (seed, index) pairs give unrelated streams
  let x = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b) >>> 0;
  return new Rng((x ^ (x >>> 16)) >>> 0);
}

/** `k` of 0..n-1, uniformly without replacement (partial Fisher–Yates), ascending. */
export function sampleWithoutReplacement(n: number, k: number, rng: Rng): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rng.next() * (n - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, k).sort((x, y) => x - y);
}

/** The base model's distinct trainable tensors, split into transformer blocks and the rest. */
export interface TensorLayout {
  /** Tensors of block ℓ (weights, biases, the block's norms). */
  blocks: string[][];
  /** Everything outside the blocks: embeddings, final norm, LM head / classifier. */
  outside: string[];
}

export function tensorLayout(names: readonly string[], numLayers: number): TensorLayout {
  const blocks: string[][] = Array.from({ length: numLayers }, () => []);
  const outside: string[] = [];
  for (const n of names) {
    const l = layerIndex(n, null);
    if (l === null) outside.push(n);
    else if (l < numLayers) blocks[l].push(n);
    else throw new LayerSelectionError(`weight "${n}" names layer ${l}, but the model has ${numLayers} layers`);
  }
  return { blocks, outside };
}

export interface LisaOptions {
  /** γ: blocks trained at a time (default 2). */
  layers: number;
  /** K: steps between re-draws (default 20). */
  interval: number;
}

export const LISA_DEFAULTS: LisaOptions = { layers: 2, interval: 20 };

export function checkLisa(o: LisaOptions, numLayers: number): void {
  if (!Number.isInteger(o.layers) || o.layers < 1 || o.layers > numLayers)
    throw new LayerSelectionError(`--lisa-layers: ${o.layers} is not a layer count in 1..${numLayers} (the model has ${numLayers} layers)`);
  if (!Number.isInteger(o.interval) || o.interval < 1)
    throw new LayerSelectionError(`--lisa-interval: ${o.interval} is not a step count >= 1`);
}

/** LISA's sampled blocks for the interval holding 0-based step `step`. */
export function lisaLayers(seed: number, step: number, o: LisaOptions, numLayers: number): number[] {
  return sampleWithoutReplacement(numLayers, o.layers, drawRng(seed, Math.floor(step / o.interval)));
}

/** LISA's trained tensors: everything outside the blocks, plus every tensor of the sampled blocks. */
export function lisaTensors(layout: TensorLayout, layers: readonly number[]): string[] {
  return [...layout.outside, ...layers.flatMap((l) => layout.blocks[l])];
}

export interface HftOptions {
  /** Steps per stage (a new half is drawn at each stage); 0 = the whole run is one stage (default). */
  stageSteps: number;
}

export const HFT_DEFAULTS: HftOptions = { stageSteps: 0 };

const ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"];
const FFN = ["gate_proj", "up_proj", "down_proj"];

/** The matrix of category `proj` in a block's tensor list (llama-style names), or an error naming the block. */
function matrix(block: readonly string[], proj: string, layer: number): string {
  const hit = block.find((n) => n.endsWith(`.${proj}.weight`));
  if (!hit)
    throw new LayerSelectionError(
      `hft: layer ${layer} has no ${proj}.weight; HFT needs llama-style q/k/v/o_proj and gate/up/down_proj matrices`,
    );
  return hit;
}

export function hftStage(step: number, o: HftOptions): number {
  return o.stageSteps > 0 ? Math.floor(step / o.stageSteps) : 0;
}

/**
 * HFT's trained matrices for a stage: 2 of the 4 attention projections of every block; the FFN
 * trains 1 of 3 projections in a random half of the blocks (⌈L/2⌉) and 2 of 3 in the others, so
 * with an even L exactly half of all block matrices train. Biases and norms stay frozen.
 */
export function hftTensors(layout: TensorLayout, seed: number, stage: number): string[] {
  const rng = drawRng(seed, stage);
  const L = layout.blocks.length;
  const oneFfn = new Set(sampleWithoutReplacement(L, Math.ceil(L / 2), rng));
  const out: string[] = [];
  layout.blocks.forEach((block, l) => {
    for (const i of sampleWithoutReplacement(4, 2, rng)) out.push(matrix(block, ATTENTION[i], l));
    for (const i of sampleWithoutReplacement(3, oneFfn.has(l) ? 1 : 2, rng)) out.push(matrix(block, FFN[i], l));
  });
  return out;
}
