/**
 * Bottleneck adapters: small down-project → non-linearity → up-project modules added to a
 * frozen transformer, h ← h + s·up(f(down(x))).
 * - "houlsby" (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"): serial
 *   adapters on the attention output and on the MLP output, x = h (before the residual add).
 * - "pfeiffer" (Pfeiffer et al. 2020, "AdapterFusion"): one serial adapter on the MLP output.
 * - "parallel" (He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer
 *   Learning"): the scaled parallel adapter, x = the MLP's input, added to the MLP's output.
 * The up-projection starts at zero, so training starts from the base model. Adapters add
 * non-linear modules and cannot be merged into the base weights.
 */

import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, HookPoint } from "../../nn/context.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { layerSeed } from "../layer-seed.js";
import { layerIndex } from "../targets.js";
import { type CreatedAdapter, DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type BottleneckConfig, bottleneckConfigJson, type NonLinearity, parseBottleneckConfig } from "./config.js";

export type Site = "adapter_attn" | "adapter_mlp" | "adapter_parallel";

export interface AdapterModule {
  layer: number;
  site: Site;
  /** Key prefix, e.g. "model.layers.0.adapter_mlp". */
  key: string;
}

export function sitesFor(c: BottleneckConfig): Site[] {
  if (c.adapterType === "houlsby") return ["adapter_attn", "adapter_mlp"];
  if (c.adapterType === "pfeiffer") return ["adapter_mlp"];
  return ["adapter_parallel"];
}

/** The module path of each transformer layer (PEFT naming), from the model's linear layers. */
function layerPaths(info: ModelInfo): Map<number, string> {
  const out = new Map<number, string>();
  for (const path of info.linearLayers) {
    const name = info.peftName(path);
    const i = layerIndex(name, null);
    if (i === null || out.has(i)) continue;
    const m = new RegExp(`^(.*?(?:^|\\.)(?:layers|h|block|blocks|layer)\\.${i})(?:\\.|$)`).exec(name);
    if (m) out.set(i, m[1]);
  }
  return out;
}

export function bottleneckSize(info: ModelInfo, c: BottleneckConfig): number {
  return c.bottleneckSize ?? Math.max(1, Math.floor(info.hidden / c.reductionFactor));
}

export function adapterModules(info: ModelInfo, c: BottleneckConfig): AdapterModule[] {
  const paths = layerPaths(info);
  const want = c.layersToTransform;
  const layers = [...paths.keys()]
    .sort((a, b) => a - b)
    .filter((i) => want === null || (typeof want === "number" ? i === want : want.includes(i)));
  if (layers.length === 0)
    throw new PeftConfigError(
      `BOTTLENECK config: layers_to_transform ${JSON.stringify(want)} matched no layer (the model has ${paths.size})`,
    );
  return layers.flatMap((layer) => sitesFor(c).map((site) => ({ layer, site, key: `${paths.get(layer)}.${site}` })));
}

function expectedTensors(info: ModelInfo, c: BottleneckConfig): Map<string, number[]> {
  const r = bottleneckSize(info, c);
  const d = info.hidden;
  const out = new Map<string, number[]>();
  for (const m of adapterModules(info, c)) {
    out.set(`${m.key}.down.weight`, [r, d]);
    out.set(`${m.key}.down.bias`, [r]);
    out.set(`${m.key}.up.weight`, [d, r]);
    out.set(`${m.key}.up.bias`, [d]);
  }
  return out;
}

function create(info: ModelInfo, c: BottleneckConfig, rng: Rng): CreatedAdapter {
  const r = bottleneckSize(info, c);
  const d = info.hidden;
  const tensors = new Map<string, HostTensor>();
  for (const m of adapterModules(info, c)) {
    // down: nn.Linear's Kaiming-uniform bound 1/√fan_in, zero bias; up: zero (identity) or the same random init.
    const bd = 1 / Math.sqrt(d);
    const bu = 1 / Math.sqrt(r);
    tensors.set(`${m.key}.down.weight`, hostTensor("f32", [r, d], fillUniform(r * d, -bd, bd, rng)));
    tensors.set(`${m.key}.down.bias`, hostTensor("f32", [r], new Float32Array(r)));
    tensors.set(
      `${m.key}.up.weight`,
      hostTensor("f32", [d, r], c.initWeights ? new Float32Array(d * r) : fillUniform(d * r, -bu, bu, rng)),
    );
    tensors.set(`${m.key}.up.bias`, hostTensor("f32", [d], c.initWeights ? new Float32Array(d) : fillUniform(d, -bu, bu, rng)));
  }
  return { tensors };
}

export function nonLinearity(x: Tensor, f: NonLinearity): Tensor {
  switch (f) {
    case "relu":
      return x.relu();
    case "gelu":
      return x.gelu();
    case "gelu_new":
      return x.gelu("tanh");
    case "silu":
    case "swish":
      return x.silu();
    case "tanh":
      return x.tanh();
    case "identity":
      return x;
  }
}

class BottleneckContext extends DelegatingContext {
  private readonly byPoint = new Map<string, AdapterModule>();
  /** The MLP input of the layer being traced, for its parallel adapter. */
  private readonly mlpInput = new Map<number, Tensor>();

  constructor(
    inner: ForwardContext,
    modules: AdapterModule[],
    private readonly c: BottleneckConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    for (const m of modules) this.byPoint.set(`${m.site}:${m.layer}`, m);
  }

  /** s·up(f(down(x))), masked to this adapter's rows. */
  private delta(m: AdapterModule, x: Tensor): Tensor {
    const t = (k: string) => this.opts.tensor(`${m.key}.${k}`);
    const xin =
      this.opts.training && this.c.dropout > 0 && this.opts.seed ? F.dropout(x, this.c.dropout, layerSeed(this.opts.seed, m.key)) : x;
    const down = xin.matmul(t("down.weight").transpose()).add(t("down.bias"));
    const up = nonLinearity(down, this.c.nonLinearity).matmul(t("up.weight").transpose()).add(t("up.bias"));
    return maskRows(up.mul(this.c.scaling), this.opts.rowMask);
  }

  override hook(point: HookPoint, x: Tensor): Tensor {
    const y = this.inner.hook(point, x);
    if (point.kind === "mlp_input") {
      if (this.byPoint.has(`adapter_parallel:${point.layer}`)) this.mlpInput.set(point.layer, y);
      return y;
    }
    if (point.kind === "attention_output") {
      const m = this.byPoint.get(`adapter_attn:${point.layer}`);
      return m ? y.add(this.delta(m, y)) : y;
    }
    if (point.kind === "mlp_output") {
      const serial = this.byPoint.get(`adapter_mlp:${point.layer}`);
      const parallel = this.byPoint.get(`adapter_parallel:${point.layer}`);
      let out = serial ? y.add(this.delta(serial, y)) : y;
      if (parallel) {
        const xin = this.mlpInput.get(point.layer);
        if (!xin) throw new PeftConfigError(`parallel adapter: the ${this.c.adapterType} adapter of layer ${point.layer} saw no MLP input`);
        out = out.add(this.delta(parallel, xin));
      }
      return out;
    }
    return y;
  }
}

export const BOTTLENECK: Tuner<BottleneckConfig> = {
  peftType: "BOTTLENECK",
  parseConfig: parseBottleneckConfig,
  toJson: bottleneckConfigJson,
  create,
  expectedTensors,
  wrap: (base, info, c, opts) => new BottleneckContext(base, adapterModules(info, c), c, opts),
  supportsMixedBatch: true,
};
