/**
 * LN tuning (Zhao et al. 2023, "Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM
 * Finetuning"), as HF PEFT's LNTuningModel: each targeted module (by default the normalisation
 * layers) gets a trainable copy of all its parameters, used in place of the original. The copy
 * starts equal to the base, and merging copies it back.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, LinearOptions } from "../../nn/context.js";
import type { Rng } from "../../util/rng.js";
import { rowsParameter } from "../bitfit/index.js";
import { selectTargets } from "../targets.js";
import {
  type CreatedAdapter,
  DelegatingContext,
  type ModelInfo,
  maskedBiasShift,
  maskRows,
  type Tuner,
  type WrapOptions,
} from "../tuner.js";
import { type LnTuningConfig, lnTuningConfigJson, parseLnTuningConfig } from "./config.js";

/** PEFT's TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING, for the model types we load. */
export const LN_TUNING_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ["input_layernorm", "post_attention_layernorm", "norm"],
  mistral: ["input_layernorm", "post_attention_layernorm", "norm"],
  qwen2: ["post_attention_layernorm"],
  gpt2: ["ln_1", "ln_2", "ln_f"],
};

/** Spread of the noise init_ln_tuning_weights: false adds to the copies. */
const RANDOM_STD = 0.02;

/** Base weight name → adapter key ("<module>.ln_tuning_layers.<param>", as PEFT saves it). */
export function lnTuningKeys(info: ModelInfo, c: LnTuningConfig): Map<string, string> {
  const names = info.weightNames();
  // Every module that owns parameters, directly or below it: PEFT matches against all modules.
  const modules = new Set<string>();
  for (const n of names) {
    const parts = n.split(".");
    for (let i = 1; i < parts.length; i++) modules.add(parts.slice(0, i).join("."));
  }
  const byPeft = new Map([...modules].map((m) => [info.peftName(m), m]));
  const chosen = selectTargets({ ...c, layersToTransform: null, layersPattern: null }, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: LN_TUNING_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "LN tuning config",
  }).map((p) => byPeft.get(p) as string);
  // A module inside another target is already copied with it.
  const outer = chosen.filter((m) => !chosen.some((o) => o !== m && m.startsWith(`${o}.`)));
  const out = new Map<string, string>();
  for (const m of outer) {
    for (const n of names) if (n.startsWith(`${m}.`)) out.set(n, `${info.peftName(m)}.ln_tuning_layers.${n.slice(m.length + 1)}`);
  }
  return out;
}

function create(info: ModelInfo, c: LnTuningConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const [name, key] of lnTuningKeys(info, c)) {
    const w = info.weight(name);
    const data = Float32Array.from(w.data as Float32Array);
    if (!c.initLnTuningWeights) for (let i = 0; i < data.length; i++) data[i] += RANDOM_STD * rng.normal();
    tensors.set(key, hostTensor("f32", w.shape, data));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: LnTuningConfig): Map<string, number[]> {
  return new Map([...lnTuningKeys(info, c)].map(([name, key]) => [key, [...info.weight(name).shape]]));
}

/**
 * Parameters read through weight() are replaced; linear layers and embeddings, which the base
 * context computes from its own weights, get the difference added, so wrappers beneath still apply.
 */
class LnTuningContext extends DelegatingContext {
  constructor(
    inner: ForwardContext,
    private readonly keys: Map<string, string>,
    /** Parameters of linear layers: linear() applies their copies, also per row in mixed batches. */
    private readonly linearParams: ReadonlySet<string>,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
  }

  /** adapted − base for a targeted parameter, or null. */
  private delta(name: string): Tensor | null {
    const key = this.keys.get(name);
    return key ? this.opts.tensor(key).sub(this.inner.weight(name)) : null;
  }

  private masked(d: Tensor): Tensor {
    return maskRows(d, this.opts.rowMask);
  }

  override weight(name: string): Tensor {
    const key = this.keys.get(name);
    if (!key) return this.inner.weight(name);
    const adapted = this.opts.tensor(key);
    if (!this.opts.rowMask) return adapted;
    // A per-row matrix cannot be expressed; linear() adds this adapter's rows, so the rows of
    // other adapters (and another adapter's difference) must see the value beneath.
    if (this.linearParams.has(name)) return this.inner.weight(name);
    return rowsParameter(this.inner.weight(name), adapted, this.opts.rowMask, name);
  }

  override linear(path: string, x: Tensor, lin?: LinearOptions): Tensor {
    let y = this.inner.linear(path, x, lin);
    const dw = this.delta(`${path}.weight`);
    if (dw) y = y.add(this.masked(x.matmul(lin?.fanInFanOut ? dw : dw.transpose())));
    const db = this.hasWeight(`${path}.bias`) ? this.delta(`${path}.bias`) : null;
    if (db) y = y.add(maskedBiasShift(db, this.opts.rowMask, y.rank));
    return y;
  }

  override embedding(path: string, ids: Tensor): Tensor {
    const e = this.inner.embedding(path, ids);
    const dw = this.delta(`${path}.weight`);
    return dw ? e.add(this.masked(dw.gather(ids, 0))) : e;
  }
}

function merge(info: ModelInfo, c: LnTuningConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, key] of lnTuningKeys(info, c)) {
    const t = tensors.get(key) as HostTensor;
    out.set(name, hostTensor("f32", t.shape, Float32Array.from(t.data as Float32Array)));
  }
  return out;
}

export const LN_TUNING: Tuner<LnTuningConfig> = {
  peftType: "LN_TUNING",
  parseConfig: parseLnTuningConfig,
  toJson: lnTuningConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => {
    const keys = lnTuningKeys(info, c);
    const linear = new Set(info.linearLayers.flatMap((p) => [`${p}.weight`, `${p}.bias`]).filter((n) => keys.has(n)));
    return new LnTuningContext(base, keys, linear, opts);
  },
  merge,
  supportsMixedBatch: true,
};
