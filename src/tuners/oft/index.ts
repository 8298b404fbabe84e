/**
 * OFT (Qiu et al. 2023, "Controlling Text-to-Image Diffusion by Orthogonal Finetuning") in HF
 * PEFT 0.20.0's parameterisation: each targeted linear layer's input is multiplied by a
 * block-diagonal orthogonal matrix R before the frozen layer, y = W·(x·R) + b, i.e. W' = W·Rᵀ.
 * Each block is the Cayley transform of a skew-symmetric Q stored as its packed upper triangle
 * (`<module>.oft_R.weight` [r or 1, b(b−1)/2]); by default the transform is PEFT's truncated
 * Neumann series. Zero Q gives R = I, so a fresh adapter is the base model.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import {
  type Blocks,
  cayleyExact,
  cayleyNeumann,
  coftProject,
  hostCayleyExact,
  hostCayleyNeumann,
  hostCoftProject,
  hostSkewFromPacked,
  rotateBlocks,
  skewFromPacked,
} from "./cayley.js";
import { type OftConfig, oftConfigJson, parseOftConfig } from "./config.js";
import { type OftLayer, oftLayers } from "./layers.js";

/** The stored blocks of R for one layer, float64 on the host (what PEFT's get_weight builds). */
export function oftBlocks(l: OftLayer, c: OftConfig, vec: ArrayLike<number>): Blocks {
  const v = c.coft ? hostCoftProject(vec, l.stored, l.nElements, c.eps) : vec;
  return hostSkewFromPacked(v, l.stored, l.blockSize).map((q) =>
    c.useCayleyNeumann ? hostCayleyNeumann(q, l.blockSize, c.numCayleyNeumannTerms) : hostCayleyExact(q, l.blockSize),
  );
}

export function flatBlocks(blocks: readonly Float64Array[]): Float32Array {
  const n = blocks[0]?.length ?? 0;
  const out = new Float32Array(blocks.length * n);
  blocks.forEach((b, i) => {
    out.set(b, i * n);
  });
  return out;
}

/** R's blocks in the graph, from the packed parameters [stored, b(b−1)/2]. */
export function oftRotation(c: OftConfig, l: OftLayer, vec: Tensor): Tensor {
  const v = c.coft ? coftProject(vec, c.eps) : vec;
  const q = skewFromPacked(v, l.blockSize);
  return c.useCayleyNeumann ? cayleyNeumann(q, c.numCayleyNeumannTerms) : cayleyExact(q);
}

function create(info: ModelInfo, c: OftConfig, rng: Rng): CreatedAdapter {
  if (c.bias !== "none")
    throw new PeftConfigError(
      `OFT config: bias "${c.bias}" is not supported (PEFT 0.20.0 trains those biases but does not save them with an OFT adapter, so it would not round-trip); use bias "none"`,
    );
  const tensors = new Map<string, HostTensor>();
  for (const l of oftLayers(info, c)) {
    const n = l.stored * l.nElements;
    // reset_oft_parameters: zeros (R = I), or N(0, 0.1) with init_weights=False.
    tensors.set(l.key, hostTensor("f32", [l.stored, l.nElements], c.initWeights ? new Float32Array(n) : fillNormal(n, 0.1, rng)));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: OftConfig): Map<string, number[]> {
  return new Map(oftLayers(info, c).map((l) => [l.key, [l.stored, l.nElements]]));
}

class OftContext extends DelegatingContext {
  private readonly layers: Map<string, OftLayer>;
  constructor(
    inner: ForwardContext,
    layers: OftLayer[],
    private readonly c: OftConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  /**
   * R's blocks: at inference computed once on the host (float64, rounded to f32) and fed as an
   * input, so a forward (or a decoding step) does not rebuild them; in training, in the graph.
   */
  private rotation(l: OftLayer): Tensor {
    const c = this.c;
    const id = `oft:${l.key}:${c.useCayleyNeumann ? `neumann${c.numCayleyNeumannTerms}` : "exact"}:${c.coft ? c.eps : "-"}`;
    const pre = this.opts.prepared?.(id, [l.key], (v) =>
      v.dtype === "f32"
        ? hostTensor("f32", [l.stored, l.blockSize, l.blockSize], flatBlocks(oftBlocks(l, c, v.data as Float32Array)))
        : null,
    );
    return pre ?? oftRotation(c, l, this.opts.tensor(l.key));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const l = this.layers.get(path);
    if (!l) return this.inner.linear(path, x, lin);
    const rotated = rotateBlocks(x, this.rotation(l), l.r);
    const xin = this.opts.rowMask ? x.add(maskRows(rotated.sub(x), this.opts.rowMask)) : rotated;
    return this.inner.linear(path, xin, lin);
  }
}

/** W' = W·Rᵀ (PEFT's merge: (R·Wᵀ)ᵀ), block by block: W'[o, p·b + a] = Σ_c W[o, p·b + c]·R_p[a, c]. */
function merge(info: ModelInfo, c: OftConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of oftLayers(info, c)) {
    const blocks = oftBlocks(l, c, tensors.get(l.key)?.data as Float32Array);
    const w = info.weight(`${l.path}.weight`);
    const wd = w.data as Float32Array;
    const b = l.blockSize;
    const data = new Float32Array(wd.length);
    for (let o = 0; o < l.outFeatures; o++) {
      const row = o * l.inFeatures;
      for (let p = 0; p < l.r; p++) {
        const rp = blocks[c.blockShare ? 0 : p];
        for (let a = 0; a < b; a++) {
          let s = 0;
          for (let k = 0; k < b; k++) s += wd[row + p * b + k] * rp[a * b + k];
          data[row + p * b + a] = s;
        }
      }
    }
    out.set(`${l.path}.weight`, hostTensor("f32", w.shape, data));
  }
  return out;
}

/** "0.17.1" < "0.18.0"; pre-releases (rc, dev, a, b) of a version sort before it, as packaging.version does. */
export function versionBefore(v: string, than: readonly [number, number, number]): boolean {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?(.*)$/.exec(v.split("@")[0].trim());
  if (!m) return true;
  const got = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  for (let i = 0; i < 3; i++) if (got[i] !== than[i]) return got[i] < than[i];
  const rest = m[4].replace(/^[.\-_]/, "");
  return rest !== "" && !/^(post|\+)/.test(rest) && !rest.startsWith("+");
}

/**
 * Folders of earlier OFT formats. PEFT ≤ 0.15 stored full blocks (`oft_r` [r, b, b], plus `oft_s`)
 * and PEFT 0.20.0 refuses them; PEFT ≤ 0.13 configs lack oft_block_size; PEFT 0.16–0.17 used the
 * packed form but a Neumann series whose last power had weight 2 (PEFT 0.20.0 only warns, then
 * computes something else than the adapter was trained with).
 */
function checkFolder(raw: RawPeftConfig, shapes: ReadonlyMap<string, readonly number[]>, where: string): undefined {
  const old = [...shapes].find(([k]) => /(^|\.)oft_[rs](\.weight)?$/.test(k));
  if (old)
    throw new PeftConfigError(
      `${where}: an OFT adapter from PEFT ≤ 0.15 (full-block tensor ${old[0]} [${old[1].join(", ")}]); PEFT ≥ 0.16 stores packed oft_R.weight [r, b(b−1)/2] and cannot load it either: retrain the adapter`,
    );
  if (!("oft_block_size" in raw))
    throw new PeftConfigError(
      `${where}: an OFT config from PEFT ≤ 0.13 (no "oft_block_size"); its OFT format is no longer supported: retrain the adapter`,
    );
  const version = typeof raw.peft_version === "string" ? raw.peft_version : null;
  if (raw.use_cayley_neumann === true && (version === null || versionBefore(version, [0, 18, 0])))
    throw new PeftConfigError(
      `${where}: an OFT adapter trained with use_cayley_neumann by PEFT < 0.18 (peft_version ${version ?? "absent"}); PEFT 0.18 changed the Neumann series (last power weighted 1, was 2), so it would compute something else: retrain the adapter`,
    );
  return undefined;
}

export const OFT: Tuner<OftConfig> = {
  peftType: "OFT",
  parseConfig: parseOftConfig,
  toJson: oftConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new OftContext(base, oftLayers(info, c), c, opts),
  merge,
  checkFolder,
  supportsMixedBatch: true,
};
