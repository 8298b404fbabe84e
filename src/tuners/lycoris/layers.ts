/**
 * Which linear layers a LoHa/LoKr config adapts, with their rank, alpha and scale (PEFT's
 * LycorisTuner rules), and host-side helpers both methods use to create and merge.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { matchesModules, patternValue, targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { LycorisConfig } from "./config.js";

export interface LycorisLayer {
  /** Canonical path (the weight is `${path}.weight`, stored [out, in]). */
  path: string;
  /** PEFT module name: the key prefix of the adapter tensors. */
  key: string;
  inFeatures: number;
  outFeatures: number;
  r: number;
  alpha: number;
  /** alpha / r, for every layer kind and factor shape (LycorisLayer.update_layer). */
  scaling: number;
}

/**
 * The layers a config targets. PEFT's LoHa/LoKr wrap nn.Linear, nn.Conv1d and nn.Conv2d only
 * (TRANSFORMERS_MODELS_TO_LOHA/LOKR_TARGET_MODULES_MAPPING copy LoRA's defaults); peftkit
 * implements the linear case, so a GPT-2 Conv1D (which PEFT refuses too) or a convolution
 * matched by target_modules is refused in one line rather than skipped.
 */
export function lycorisLayers(info: ModelInfo, c: LycorisConfig, method: string): LycorisLayer[] {
  const where = `${method} config`;
  const chosen = targetedLinears(info, c, where);
  if (info.fanInFanOut)
    throw new PeftConfigError(
      `${where}: "${chosen[0].key}" is a GPT-2 Conv1D layer (weight stored [in, out]); PEFT's ${method} adapts only nn.Linear, nn.Conv1d and nn.Conv2d and refuses it too`,
    );
  const targets = c.targetModules;
  if (targets !== null && !(typeof targets === "string" && targets.toLowerCase() === "all-linear")) {
    for (const name of info.weightNames()) {
      if (!name.endsWith(".weight") || info.weight(name).shape.length < 3) continue;
      const mod = info.peftName(name.slice(0, -".weight".length));
      if (matchesModules(targets, mod, where))
        throw new PeftConfigError(
          `${where}: target_modules matches the convolution "${mod}"; peftkit's ${method} adapts linear layers only (use_effective_conv2d and the t1/t2 tensors are not implemented)`,
        );
    }
  }
  return chosen.map(({ path, key: name, inFeatures, outFeatures }) => {
    const r = patternValue(c.rankPattern, name, c.r);
    const alpha = patternValue(c.alphaPattern, name, c.alpha);
    return { path, key: name, inFeatures, outFeatures, r, alpha, scaling: alpha / r };
  });
}

/** nn.init.kaiming_uniform_(a=√5) of a [rows, cols] tensor: U(±1/√cols), fan_in being size(1). */
export function kaimingUniform(rows: number, cols: number, rng: Rng): HostTensor {
  const bound = 1 / Math.sqrt(cols);
  return hostTensor("f32", [rows, cols], fillUniform(rows * cols, -bound, bound, rng));
}

export function zerosTensor(rows: number, cols: number): HostTensor {
  return hostTensor("f32", [rows, cols], new Float32Array(rows * cols));
}

/** An adapter tensor by key, or an error naming it. */
export function need(tensors: ReadonlyMap<string, HostTensor>, key: string, what: string): HostTensor {
  const t = tensors.get(key);
  if (!t) throw new PeftConfigError(`${what}: the adapter has no tensor "${key}"`);
  return t;
}

/** a·b in float64 from row-major f32/f64 tensors a [m, k] and b [k, n]. */
export function hostMatmul(a: HostTensor, b: HostTensor, what: string): Float64Array {
  const [m, k] = a.shape;
  const [k2, n] = b.shape;
  if (k !== k2) throw new PeftConfigError(`${what}: [${a.shape}] · [${b.shape}] do not fit`);
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < k; j++) {
      const v = ad[i * k + j];
      if (v === 0) continue;
      for (let c = 0; c < n; c++) out[i * n + c] += v * bd[j * n + c];
    }
  return out;
}

/** The layer's current weight plus a float64 [out, in] delta, as f32. */
export function addDelta(info: ModelInfo, l: LycorisLayer, delta: Float64Array): HostTensor {
  const w = info.weight(`${l.path}.weight`);
  const src = w.data as Float32Array;
  return hostTensor(
    "f32",
    w.shape,
    Float32Array.from(src, (v, i) => v + delta[i]),
  );
}
