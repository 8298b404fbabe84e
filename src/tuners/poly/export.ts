/**
 * POLY adapters as ordinary LoRA adapters (peftkit extensions; PEFT's POLY has no merge):
 * - a task's eval-mode mixture: w = the normalised sigmoid of its routing row, A_t = Σ_s w·A,
 *   B_t = Σ_s w·B per split, which is exactly one LoRA of rank r with lora_alpha = 1 (scaling 1/r);
 * - MHR-μ (Caccia et al. 2023; mttl's AverageSelector): the same with w = 1/n_skills, the
 *   "averaged single-adapter initialisation" a new task starts from.
 * LoRA's lora_A.weight is [r, in] = A_tᵀ (A_t's rows are the input, split-major) and
 * lora_B.weight is [out, r] = B_tᵀ (B_t's columns are the output, split k in block k).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { ModelInfo } from "../tuner.js";
import type { PolyConfig } from "./config.js";
import { POLY_EPS, polyKeys, polyLayers } from "./index.js";

/** Mixing weights [q][s] of task `task` in eval mode, or the average 1/s ("mean"). */
export function polyTaskWeights(logits: HostTensor, c: PolyConfig, task: number | "mean"): number[][] {
  const q = c.nSplits;
  const s = c.nSkills;
  if (task === "mean") return Array.from({ length: q }, () => new Array<number>(s).fill(1 / s));
  if (!Number.isInteger(task) || task < 0 || task >= c.nTasks)
    throw new PeftConfigError(`task id ${task} is absent from the routing table (${c.nTasks} tasks)`);
  const row = logits.data as Float32Array;
  return Array.from({ length: q }, (_, k) => {
    const p = Array.from({ length: s }, (_, j) => 1 / (1 + Math.exp(-row[task * q * s + k * s + j])));
    const sum = p.reduce((a, b) => a + b, 0) + POLY_EPS;
    return p.map((v) => v / sum);
  });
}

/** The LoRA config (PEFT fields) of an exported POLY adapter: rank r, alpha 1, the same targets. */
export function loraConfigOfPoly(c: PolyConfig): Record<string, unknown> {
  return {
    peft_type: "LORA",
    task_type: c.taskType,
    base_model_name_or_path: c.baseModelNameOrPath,
    r: c.r,
    lora_alpha: 1,
    lora_dropout: 0,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
  };
}

/** LoRA tensors (keys `<module>.lora_A.weight` / `.lora_B.weight`) of a task's mixture or of the average. */
export function polyToLoraTensors(
  info: ModelInfo,
  c: PolyConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  task: number | "mean",
): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const q = c.nSplits;
  const s = c.nSkills;
  const r = c.r;
  for (const l of polyLayers(info, c)) {
    const k = polyKeys(l.key);
    const get = (key: string) => {
      const t = tensors.get(key);
      if (!t) throw new PeftConfigError(`POLY adapter has no tensor "${key}"`);
      return t.data as Float32Array;
    };
    const a = get(k.a);
    const b = get(k.b);
    const w = polyTaskWeights(tensors.get(k.logits) as HostTensor, c, task);
    const din = l.inFeatures / q;
    const dout = l.outFeatures / q;
    // lora_A [r, in]: column (k·din + i) holds A_t[k-th block row i] = Σ_j w[k][j]·A[k, j, i, :].
    const la = new Float32Array(r * l.inFeatures);
    const lb = new Float32Array(l.outFeatures * r);
    for (let kk = 0; kk < q; kk++)
      for (let j = 0; j < s; j++) {
        const wj = w[kk][j];
        for (let i = 0; i < din; i++)
          for (let t = 0; t < r; t++) la[t * l.inFeatures + kk * din + i] += wj * a[((kk * s + j) * din + i) * r + t];
        for (let t = 0; t < r; t++) for (let o = 0; o < dout; o++) lb[(kk * dout + o) * r + t] += wj * b[((kk * s + j) * r + t) * dout + o];
      }
    out.set(`${l.key}.lora_A.weight`, hostTensor("f32", [r, l.inFeatures], la));
    out.set(`${l.key}.lora_B.weight`, hostTensor("f32", [l.outFeatures, r], lb));
  }
  return out;
}
