/**
 * S²FT (Structured Sparse Fine-Tuning; Infini-AI-Lab/S2FT, s2ft/s2.py): per decoder layer a few
 * output rows of v_proj and up_proj and a few input columns of o_proj and down_proj train as
 * dense slices, zero at the start (the authors' `s2` tensors):
 *   rows:    y = x·Wᵀ + b, then y[..., R] += x·Sᵀ          (S [|R|, in], S2ColumnLinear)
 *   columns: y = x·Wᵀ + b + x[..., C]·Sᵀ                   (S [out, |C|], S2RowLinear)
 * The base weights are frozen inputs, so the backward forms only the slices' gradients: gᵀ[R]·x
 * and gᵀ·x[..., C] from the gathered rows/columns ("partial backprop"); no full ∂L/∂W exists,
 * and gradients and optimizer state are slice-sized. Which rows/columns: selection.ts.
 * Adapter tensors per layer: `<module>.s2ft.indices` (i32, fixed) and `<module>.s2ft.weight`.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { parseS2ftConfig, type S2ftConfig, s2ftConfigJson } from "./config.js";
import { indicesKey, type S2ftSlice, s2ftSlices, sliceKey, sliceShape } from "./layers.js";

/** Spread of the slices init_weights: false draws. */
const RANDOM_STD = 0.02;

function create(info: ModelInfo, c: S2ftConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const s of s2ftSlices(info, c)) {
    const shape = sliceShape(s);
    const n = shape[0] * shape[1];
    tensors.set(indicesKey(s), hostTensor("i32", [s.indices.length], Int32Array.from(s.indices)));
    tensors.set(sliceKey(s), hostTensor("f32", shape, c.initWeights ? new Float32Array(n) : fillNormal(n, RANDOM_STD, rng.fork())));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: S2ftConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const s of s2ftSlices(info, c)) {
    out.set(indicesKey(s), [s.indices.length]);
    out.set(sliceKey(s), sliceShape(s));
  }
  return out;
}

class S2ftContext extends DelegatingContext {
  private readonly byPath: Map<string, S2ftSlice>;
  constructor(
    inner: ForwardContext,
    slices: readonly S2ftSlice[],
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.byPath = new Map(slices.map((s) => [s.path, s]));
  }

  override linear(path: string, x: Tensor, lopts?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lopts);
    const s = this.byPath.get(path);
    if (!s) return y;
    const idx = this.opts.tensor(indicesKey(s));
    const w = this.opts.tensor(sliceKey(s)).cast(x.dtype);
    if (s.side === "rows") return y.scatterAdd(idx, maskRows(x.matmul(w.transpose()), this.opts.rowMask), -1);
    return y.add(maskRows(x.gather(idx, -1).matmul(w.transpose()), this.opts.rowMask));
  }
}

/** The slice's indices as saved, checked against the weight they index. */
function savedIndices(s: S2ftSlice, tensors: ReadonlyMap<string, HostTensor>, where: string): Int32Array {
  const t = tensors.get(indicesKey(s));
  if (!t) throw new PeftConfigError(`${where}: the adapter has no tensor "${indicesKey(s)}"`);
  const idx = t.data as Int32Array;
  const n = s.side === "rows" ? s.shape[0] : s.shape[1];
  idx.forEach((v, i) => {
    if (!(v >= 0 && v < n) || (i > 0 && v <= idx[i - 1]))
      throw new PeftConfigError(`${where}: "${indicesKey(s)}"[${i}] = ${v}: indices must be increasing and in [0, ${n})`);
  });
  return idx;
}

/** W with each slice added into its rows/columns, in place in the original (unpermuted) layout. */
function merge(info: ModelInfo, c: S2ftConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const where = "S2FT merge";
  const out = new Map<string, HostTensor>();
  for (const s of s2ftSlices(info, c)) {
    const idx = savedIndices(s, tensors, where);
    const sl = tensors.get(sliceKey(s));
    if (!sl) throw new PeftConfigError(`${where}: the adapter has no tensor "${sliceKey(s)}"`);
    const src = sl.data as Float32Array;
    const w = Float32Array.from(info.weight(s.weight).data as ArrayLike<number>);
    const [rows, cols] = s.shape;
    if (s.side === "rows")
      idx.forEach((r, j) => {
        for (let k = 0; k < cols; k++) w[r * cols + k] += src[j * cols + k];
      });
    else
      for (let r = 0; r < rows; r++)
        idx.forEach((col, j) => {
          w[r * cols + col] += src[r * idx.length + j];
        });
    out.set(s.weight, hostTensor("f32", [rows, cols], w));
  }
  return out;
}

export const S2FT: Tuner<S2ftConfig> = {
  peftType: "S2FT",
  parseConfig: parseS2ftConfig,
  toJson: s2ftConfigJson,
  create,
  expectedTensors,
  trainable: (key) => !key.endsWith(".s2ft.indices"),
  wrap: (base, info, c, opts) => new S2ftContext(base, s2ftSlices(info, c), opts),
  merge,
  supportsMixedBatch: true,
};
