/**
 * FourierFT (Gao et al. 2024, "Parameter-Efficient Fine-Tuning with Discrete Fourier Transform",
 * arXiv 2405.03003), in HF PEFT 0.20's format (peft_type "FOURIERFT"). Each adapted layer trains
 * n spectral coefficients s [n] ("<module>.fourierft_spectrum"); their positions in the [out, in]
 * spectrum come from torch.randperm seeded with random_loc_seed and are not saved: loading
 * regenerates them bit for bit. y = W·x + b + ΔW·x with ΔW = Re(ifft2(S))·scaling, S zero but for
 * the n chosen entries.
 *
 * In the graph ΔW is a real product of DFT factors. With few frequencies (n ≤ out + in) only the
 * chosen ones enter: ΔW = scaling/(out·in)·[cos θ ⊙ s, −sin θ ⊙ s]·[cos φ; sin φ] with θ [out, n] =
 * 2π·(p·row_k mod out)/out and φ [n, in] = 2π·(col_k·q mod in)/in, inner size 2n, no dense
 * spectrum. With more, the spectrum is scattered and multiplied by the full DFT matrices,
 * ΔW = scaling/(out·in)·(C_out·S·C_in − S_out·S·S_in). Both are cheaper than ONNX's DFT op in
 * onnxruntime (docs/methods/fourierft.md has the measurement).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { concat, constant, iota, type Tensor, zeros } from "../../engine/trace/tensor.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { addInto, type LoraLayer, logicalWeight, storedWeight } from "../lora/layers.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type FourierFTConfig, fourierFTConfigJson, parseFourierFTConfig } from "./config.js";
import { type FourierLayer, fourierDelta, fourierLayers, spectrumKey } from "./layers.js";

function create(info: ModelInfo, c: FourierFTConfig, rng: Rng): CreatedAdapter {
  // PEFT 0.20 marks the biases trainable but saves only keys containing "fourierft_"
  // (get_peft_model_state_dict's generic branch), so trained biases would be lost; loading such a
  // folder is fine (its biases are the base ones).
  if (c.bias !== "none")
    throw new PeftConfigError(
      `FourierFT config: bias "${c.bias}" is not supported for new adapters: PEFT trains those biases but does not save them with a FourierFT adapter; use bias "none"`,
    );
  const tensors = new Map<string, HostTensor>();
  // update_layer: spectrum = randn(n); reset_fourier_parameters (init_weights) zeros it.
  for (const l of fourierLayers(info, c))
    tensors.set(spectrumKey(l), hostTensor("f32", [l.n], c.initWeights ? new Float32Array(l.n) : fillNormal(l.n, 1, rng)));
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: FourierFTConfig): Map<string, number[]> {
  return new Map(fourierLayers(info, c).map((l) => [spectrumKey(l), [l.n]]));
}

/** (a mod m) for non-negative i64 tensors (the IR's integer division truncates). */
function mod(a: Tensor, m: number): Tensor {
  return a.sub(a.div(m).mul(m));
}

/** 2π·((a·b) mod period)/period for i64 a, b (broadcast): exact before the f32 rounding of the angle. */
function angle(a: Tensor, b: Tensor, period: number): Tensor {
  return mod(a.mul(b), period)
    .cast("f32")
    .mul((2 * Math.PI) / period);
}

/**
 * How the graph forms ΔW. Both are matmuls with DFT factors; "factored" costs 2n·out·in
 * multiply-adds, "dense" 2·out·in·(out + in), so each layer takes the cheaper one (dense only when
 * n > out + in). bench/fourierft-transform.ts measures the two and ONNX's DFT op.
 */
export type FourierRoute = "factored" | "dense";
export const fourierRouteOf = (l: FourierLayer): FourierRoute => (l.n > l.outFeatures + l.inFeatures ? "dense" : "factored");
/** For benchmarks only: every layer takes this route instead of the cheaper one. */
export const FOURIER_ROUTE_OVERRIDE: { route: FourierRoute | null } = { route: null };

/** ΔW [out, in] as a graph tensor from the spectrum s [n] (see the file comment). */
export function fourierDeltaGraph(l: FourierLayer, s: Tensor, scaling: number): Tensor {
  const M = l.outFeatures;
  const N = l.inFeatures;
  const ss = s.mul(scaling / (M * N));
  if ((FOURIER_ROUTE_OVERRIDE.route ?? fourierRouteOf(l)) === "dense") {
    // S [out, in] scattered, then C_M·S·C_N − S_M·S·S_N with the full DFT matrices.
    const flat = constant(
      hostTensor(
        "i64",
        [l.n],
        Array.from(l.rows, (r, k) => r * N + l.cols[k]),
      ),
    );
    const dense = zeros([M * N])
      .scatterAdd(flat, ss, 0)
      .reshape([M, N]);
    const pm = iota([M, 1], 0);
    const pn = iota([N, 1], 0);
    const am = angle(pm, pm.transpose(), M);
    const an = angle(pn, pn.transpose(), N);
    return am.cos().matmul(dense).matmul(an.cos()).sub(am.sin().matmul(dense).matmul(an.sin()));
  }
  const rows = constant(hostTensor("i64", [1, l.n], Array.from(l.rows)));
  const cols = constant(hostTensor("i64", [l.n, 1], Array.from(l.cols)));
  const theta = angle(iota([M, 1], 0), rows, M);
  const phi = angle(cols, iota([1, N], 1), N);
  const left = concat([theta.cos().mul(ss), theta.sin().mul(ss).neg()], 1);
  const right = concat([phi.cos(), phi.sin()], 0);
  return left.matmul(right);
}

/** ΔWᵀ [in, out] in f32, computed on the host (inference inputs). */
function deltaT(l: FourierLayer, spectrum: HostTensor, scaling: number): HostTensor {
  const d = fourierDelta(l, spectrum.data as Float32Array, scaling);
  const out = new Float32Array(l.inFeatures * l.outFeatures);
  for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < l.inFeatures; i++) out[i * l.outFeatures + o] = d.data[o * l.inFeatures + i];
  return hostTensor("f32", [l.inFeatures, l.outFeatures], out);
}

/** FourierFTLinear.forward: result + F.linear(x, ΔW) (no dropout, no bias change). */
function fourierChange(opts: WrapOptions, c: FourierFTConfig, l: FourierLayer, x: Tensor): Tensor {
  const key = spectrumKey(l);
  // Without gradients ΔWᵀ is a host-computed input, recomputed when the spectrum changes.
  const prepared = opts.prepared?.(
    `fourierft:${l.key}:${l.outFeatures}x${l.inFeatures}:${l.n}:${c.randomLocSeed}:${c.scaling}`,
    [key],
    (s) => deltaT(l, s, c.scaling),
  );
  if (prepared) return x.matmul(prepared);
  return x.matmul(fourierDeltaGraph(l, opts.tensor(key), c.scaling).transpose());
}

function need(tensors: ReadonlyMap<string, HostTensor>, key: string): HostTensor {
  const t = tensors.get(key);
  if (!t) throw new PeftConfigError(`FourierFT merge: the adapter has no tensor "${key}"`);
  return t;
}

const asLinear = (l: FourierLayer): LoraLayer => ({ ...l, kind: "linear", r: 0, scaling: 1 });

/** FourierFTLinear.merge: W += transpose(ΔW, fan_in_fan_out), ΔW in float64. */
function merge(info: ModelInfo, c: FourierFTConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of fourierLayers(info, c)) {
    const d = fourierDelta(l, need(tensors, spectrumKey(l)).data as Float32Array, c.scaling);
    out.set(`${l.path}.weight`, storedWeight(info, asLinear(l), addInto(logicalWeight(info, asLinear(l)), d)));
  }
  return out;
}

export const FOURIERFT: Tuner<FourierFTConfig> = {
  peftType: "FOURIERFT",
  parseConfig: parseFourierFTConfig,
  toJson: fourierFTConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, fourierLayers(info, c), opts.rowMask, (l, x) => fourierChange(opts, c, l, x)),
  merge,
  supportsMixedBatch: true,
};
