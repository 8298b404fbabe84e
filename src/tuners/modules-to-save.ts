/**
 * modules_to_save: full trainable copies of chosen modules (typically a classification head).
 * Stored as PEFT does, under "<module>.modules_to_save.<param>".
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { Tensor } from "../engine/trace/tensor.js";
import type { ForwardContext } from "../nn/context.js";
import { PeftConfigError } from "./config.js";
import { matchesModules } from "./targets.js";
import { DelegatingContext, type ModelInfo } from "./tuner.js";

/**
 * Canonical weight name → adapter key for every parameter of the selected modules. A module is
 * selected when its path or any enclosing path matches (["classifier"] selects RoBERTa's
 * classifier.dense and classifier.out_proj). The key is the parameter's own path: PEFT saves
 * modules_to_save copies as "base_model.model.<module>.<param>".
 */
export function modulesToSaveKeys(info: ModelInfo, modules: string[] | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!modules || modules.length === 0) return out;
  for (const name of info.weightNames()) {
    const peftPath = info.peftName(name);
    const parts = peftPath.split(".").slice(0, -1);
    let hit = false;
    for (let i = parts.length; i > 0 && !hit; i--) hit = matchesModules(modules, parts.slice(0, i).join("."));
    if (hit) out.set(name, peftPath);
  }
  if (out.size === 0) throw new PeftConfigError(`modules_to_save ${JSON.stringify(modules)} matched no module of this model`);
  return out;
}

export function createModulesToSave(info: ModelInfo, modules: string[] | null): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, key] of modulesToSaveKeys(info, modules)) {
    const w = info.weight(name);
    out.set(key, hostTensor(w.dtype, w.shape, (w.data as Float32Array).slice()));
  }
  return out;
}

export class ModulesToSaveContext extends DelegatingContext {
  constructor(
    inner: ForwardContext,
    private readonly keys: Map<string, string>,
    private readonly tensor: (key: string) => Tensor,
  ) {
    super(inner);
  }
  override weight(name: string): Tensor {
    const key = this.keys.get(name);
    return key ? this.tensor(key) : this.inner.weight(name);
  }
  override linear(path: string, x: Tensor, opts?: import("../nn/context.js").LinearOptions): Tensor {
    if (!this.keys.has(`${path}.weight`)) return this.inner.linear(path, x, opts);
    const w = this.weight(`${path}.weight`);
    let y = x.matmul(opts?.fanInFanOut ? w : w.transpose());
    if (this.hasWeight(`${path}.bias`)) y = y.add(this.weight(`${path}.bias`));
    return y;
  }
  override embedding(path: string, ids: Tensor): Tensor {
    if (!this.keys.has(`${path}.weight`)) return this.inner.embedding(path, ids);
    return this.weight(`${path}.weight`).gather(ids, 0);
  }
}
