/**
 * SSF (Lian et al. 2022, "Scaling & Shifting Your Features: A New Baseline for Efficient Model
 * Tuning"): after each targeted linear layer the features are scaled and shifted per channel,
 * y' = y ⊙ γ + β. γ starts at one and β at zero, so training starts from the base model; the
 * pair folds into the layer (W' = diag(γ)·W, b' = γ ⊙ b + β).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { selectTargets } from "../targets.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { parseSsfConfig, type SsfConfig, ssfConfigJson } from "./config.js";

/** Spread of the random init (init_ssf_weights: false), the paper's N(1, 0.02²) and N(0, 0.02²). */
const RANDOM_STD = 0.02;

export interface SsfLayer {
  /** Canonical path of the linear layer. */
  path: string;
  /** Adapter key prefix (PEFT-style module name). */
  key: string;
  outFeatures: number;
}

/** The targeted layers; target_modules null means every linear layer but the output heads ("all-linear"). */
export function ssfLayers(info: ModelInfo, c: SsfConfig): SsfLayer[] {
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const spec = c.targetModules === null ? { ...c, targetModules: "all-linear" } : c;
  const chosen = selectTargets(spec, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: null,
    where: "SSF config",
  });
  return chosen.map((name) => {
    const path = byPeft.get(name) as string;
    const [d0, d1] = info.weight(`${path}.weight`).shape;
    return { path, key: name, outFeatures: info.fanInFanOut ? d1 : d0 };
  });
}

function create(info: ModelInfo, c: SsfConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of ssfLayers(info, c)) {
    const n = l.outFeatures;
    const scale = c.initSsfWeights ? new Float32Array(n).fill(1) : fillNormal(n, RANDOM_STD, rng).map((v) => v + 1);
    const shift = c.initSsfWeights ? new Float32Array(n) : fillNormal(n, RANDOM_STD, rng);
    tensors.set(`${l.key}.ssf_scale`, hostTensor("f32", [n], scale));
    tensors.set(`${l.key}.ssf_shift`, hostTensor("f32", [n], shift));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: SsfConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of ssfLayers(info, c)) {
    out.set(`${l.key}.ssf_scale`, [l.outFeatures]);
    out.set(`${l.key}.ssf_shift`, [l.outFeatures]);
  }
  return out;
}

class SsfContext extends DelegatingContext {
  private readonly layers: Map<string, SsfLayer>;
  constructor(
    inner: ForwardContext,
    layers: SsfLayer[],
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    const y = this.inner.linear(path, x, lin);
    const l = this.layers.get(path);
    if (!l) return y;
    const scale = this.opts.tensor(`${l.key}.ssf_scale`);
    const shift = this.opts.tensor(`${l.key}.ssf_shift`);
    if (!this.opts.rowMask) return y.mul(scale).add(shift);
    return y.add(maskRows(y.mul(scale.sub(1)).add(shift), this.opts.rowMask));
  }
}

/**
 * W' = diag(γ)·W and b' = γ ⊙ b + β; a layer without a bias gets b' = β (PeftModel adds the new
 * weight on merge and removes it again on unmerge).
 */
function merge(info: ModelInfo, c: SsfConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of ssfLayers(info, c)) {
    const scale = tensors.get(`${l.key}.ssf_scale`)?.data as Float32Array;
    const shift = tensors.get(`${l.key}.ssf_shift`)?.data as Float32Array;
    const w = info.weight(`${l.path}.weight`);
    const n = l.outFeatures;
    const inF = w.data.length / n;
    // Output channel o is row o of [out, in], column o of GPT-2's [in, out].
    const channel = (k: number) => (info.fanInFanOut ? k % n : Math.floor(k / inF));
    out.set(
      `${l.path}.weight`,
      hostTensor(
        "f32",
        w.shape,
        Float32Array.from(w.data as Float32Array, (v, k) => v * scale[channel(k)]),
      ),
    );
    const hasBias = info.hasWeight(`${l.path}.bias`);
    if (!hasBias && shift.every((v) => v === 0)) continue;
    const b = hasBias ? (info.weight(`${l.path}.bias`).data as Float32Array) : new Float32Array(n);
    out.set(
      `${l.path}.bias`,
      hostTensor(
        "f32",
        [n],
        Float32Array.from(b, (v, o) => v * scale[o] + shift[o]),
      ),
    );
  }
  return out;
}

export const SSF: Tuner<SsfConfig> = {
  peftType: "SSF",
  parseConfig: parseSsfConfig,
  toJson: ssfConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new SsfContext(base, ssfLayers(info, c), opts),
  merge,
  supportsMixedBatch: true,
};
