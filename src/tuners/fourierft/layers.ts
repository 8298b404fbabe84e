/**
 * Which layers a FourierFT config adapts, how many frequencies each gets, where they sit in the
 * spectrum (regenerated from random_loc_seed exactly as PEFT's FourierFTLayer.update_layer does),
 * and the host-side float64 ΔW of get_delta_weight.
 */
import { type Matrix, matrix } from "../../util/linalg.js";
import { TorchGenerator } from "../../util/torch-rng.js";
import { PeftConfigError } from "../config.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { FourierFTConfig } from "./config.js";

/** PEFT's TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING: LoRA's, with GPT-2 → mlp.c_proj. */
const FOURIERFT_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  ...LORA_DEFAULT_TARGETS,
  gpt2: ["mlp.c_proj"],
  gpt_bigcode: ["mlp.c_proj"],
};

/**
 * torch.randperm keeps the swap algorithm reproduced here below this size (aten's randperm_cpu);
 * above it torch draws 64-bit numbers instead.
 */
const RANDPERM_LIMIT = 0xffffffff / 20;

export interface FourierLayer {
  path: string;
  key: string;
  inFeatures: number;
  outFeatures: number;
  /** Frequencies this layer trains (n_frequency, or its n_frequency_pattern entry). */
  n: number;
  /** The spectrum entry of frequency k: row rows[k] ∈ [0, out), column cols[k] ∈ [0, in). */
  rows: Int32Array;
  cols: Int32Array;
}

/** The adapter key of a layer's spectrum (PEFT: "<module>.fourierft_spectrum", adapter name removed). */
export const spectrumKey = (l: { key: string }): string => `${l.key}.fourierft_spectrum`;

/**
 * The first k entries of torch.randperm(total, generator=g) on the CPU. randperm swaps position i
 * with i + (draw mod (total − i)) for i = 0 … total − 2, and a swap never touches a position below
 * i, so the first k positions are final after k draws: this makes those k draws, keeping only the
 * displaced entries (a layer of 4096×4096 needs 1000 draws, not a 16M-entry permutation).
 */
export function randpermPrefix(g: TorchGenerator, total: number, k: number): Int32Array {
  if (!Number.isInteger(total) || total < 0 || total >= RANDPERM_LIMIT) throw new RangeError(`randperm: n = ${total} is out of range`);
  if (!Number.isInteger(k) || k < 0 || k > total) throw new RangeError(`randperm prefix: k = ${k} is not in [0, ${total}]`);
  const moved = new Map<number, number>();
  const at = (i: number) => moved.get(i) ?? i;
  const out = new Int32Array(k);
  for (let i = 0; i < k; i++) {
    if (i === total - 1) {
      out[i] = at(i);
      break;
    }
    const z = i + (g.random() % (total - i));
    const vi = at(i);
    out[i] = at(z);
    moved.set(z, vi);
  }
  return out;
}

/**
 * FourierFTLayer.update_layer: indices = randperm(out·in, generator=manual_seed(seed))[:n], split
 * into rows (index // in) and columns (index % in).
 */
export function spectrumIndices(outF: number, inF: number, n: number, seed: number): { rows: Int32Array; cols: Int32Array } {
  const flat = randpermPrefix(new TorchGenerator(seed), outF * inF, n);
  const rows = new Int32Array(n);
  const cols = new Int32Array(n);
  for (let k = 0; k < n; k++) {
    rows[k] = Math.floor(flat[k] / inF);
    cols[k] = flat[k] % inF;
  }
  return { rows, cols };
}

/**
 * FourierFTModel._create_and_replace: the first n_frequency_pattern key k for which
 * re.match(rf".*\.{k}$", module name) succeeds, else the module name itself as a key, else n_frequency.
 */
export function layerFrequency(c: FourierFTConfig, key: string, where: string): { n: number; field: string } {
  for (const [p, v] of Object.entries(c.nFrequencyPattern)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:.*\\.${p}$)`);
    } catch (e) {
      throw new PeftConfigError(`${where}: n_frequency_pattern key ${JSON.stringify(p)} is not a valid regex: ${(e as Error).message}`);
    }
    if (re.test(key)) return { n: v, field: `n_frequency_pattern["${p}"]` };
  }
  if (Object.hasOwn(c.nFrequencyPattern, key)) return { n: c.nFrequencyPattern[key], field: `n_frequency_pattern["${key}"]` };
  return { n: c.nFrequency, field: "n_frequency" };
}

/** Indices by (out, in, n, seed): the same for every adapter and every graph built with them. */
const indexCache = new Map<string, { rows: Int32Array; cols: Int32Array }>();

/** The targeted layers with their frequencies and spectrum positions; refuses an n the layer cannot hold. */
export function fourierLayers(info: ModelInfo, c: FourierFTConfig): FourierLayer[] {
  const where = "FourierFT config";
  return targetedLinears(info, c, where, FOURIERFT_DEFAULT_TARGETS[info.modelType] ?? null).map((l) => {
    const { n, field } = layerFrequency(c, l.key, where);
    const size = l.outFeatures * l.inFeatures;
    if (n > size)
      throw new PeftConfigError(
        `${where}: ${field} = ${n} exceeds the ${l.outFeatures}x${l.inFeatures} = ${size} entries of "${l.key}"'s spectrum`,
      );
    if (size >= RANDPERM_LIMIT)
      throw new PeftConfigError(
        `${where}: "${l.key}" has ${size} weights; torch.randperm uses another algorithm from ${Math.ceil(RANDPERM_LIMIT)} on, which peftkit does not reproduce`,
      );
    const id = `${l.outFeatures}x${l.inFeatures}:${n}:${c.randomLocSeed}`;
    let idx = indexCache.get(id);
    if (!idx) {
      idx = spectrumIndices(l.outFeatures, l.inFeatures, n, c.randomLocSeed);
      indexCache.set(id, idx);
    }
    return { ...l, n, rows: idx.rows, cols: idx.cols };
  });
}

/**
 * get_delta_weight in float64: Re(ifft2(S))·scaling with S [out, in] zero but for S[rows[k], cols[k]]
 * = spectrum[k], i.e. ΔW[p, q] = scaling/(out·in)·Σ_k s_k·cos(2π(p·rows[k]/out + q·cols[k]/in)).
 * Computed separably: the spectrum's rows are first transformed along the columns, then the few
 * non-zero rows along the rows.
 */
export function fourierDelta(l: FourierLayer, spectrum: ArrayLike<number>, scaling: number): Matrix {
  const M = l.outFeatures;
  const N = l.inFeatures;
  const cosM = Float64Array.from({ length: M }, (_, t) => Math.cos((2 * Math.PI * t) / M));
  const sinM = Float64Array.from({ length: M }, (_, t) => Math.sin((2 * Math.PI * t) / M));
  const cosN = Float64Array.from({ length: N }, (_, t) => Math.cos((2 * Math.PI * t) / N));
  const sinN = Float64Array.from({ length: N }, (_, t) => Math.sin((2 * Math.PI * t) / N));
  // Row j of S transformed along its columns: T_j[q] = Σ_{k: rows[k] = j} s_k·e^{2πi·q·cols[k]/N}.
  const slot = new Map<number, number>();
  for (let k = 0; k < l.n; k++) if (!slot.has(l.rows[k])) slot.set(l.rows[k], slot.size);
  const tre = new Float64Array(slot.size * N);
  const tim = new Float64Array(slot.size * N);
  for (let k = 0; k < l.n; k++) {
    const s = spectrum[k];
    if (s === 0) continue;
    const base = (slot.get(l.rows[k]) as number) * N;
    const c = l.cols[k];
    for (let q = 0, t = 0; q < N; q++, t = (t + c) % N) {
      tre[base + q] += s * cosN[t];
      tim[base + q] += s * sinN[t];
    }
  }
  const d = matrix(M, N);
  const f = scaling / (M * N);
  for (const [j, r] of slot) {
    for (let p = 0, t = 0; p < M; p++, t = (t + j) % M) {
      const a = cosM[t] * f;
      const b = sinM[t] * f;
      const at = p * N;
      for (let q = 0; q < N; q++) d.data[at + q] += a * tre[r * N + q] - b * tim[r * N + q];
    }
  }
  return d;
}
