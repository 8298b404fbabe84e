/**
 * Structural pruning of attention heads and FFN neurons in LLaMA-family decoders (llama, mistral,
 * qwen2): the model gets smaller, its config says so, and transformers can load the result.
 *
 * A head is pruned with its rows of q_proj (and of k_proj/v_proj when its whole KV group goes)
 * and its columns of o_proj; a neuron with its rows of gate_proj and up_proj and its column of
 * down_proj. Heads go in whole KV groups (transformers' repeat_kv pairs query head h with KV
 * head ⌊h·kv/heads⌋), so the query-per-KV ratio stays what the config says. Every layer keeps the
 * same number of groups and neurons: the config has one num_attention_heads and one
 * intermediate_size. head_dim is written out, since hidden_size / num_attention_heads no longer
 * gives it.
 *
 * The plan (which units each layer keeps) is a small JSON file, `pruned_backbone.json`
 * (docs/methods/light_peft.md): loading = slice the original weights by it.
 */

import { PeftkitError } from "../engine/errors.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { LlamaConfig } from "../models/llama.js";
import { PreTrainedModel } from "../models/pretrained.js";

export class PruningError extends PeftkitError {}

export const PRUNED_BACKBONE_FILE = "pruned_backbone.json";
export const PRUNED_BACKBONE_FORMAT = "peftkit-pruned-heads-ffn";

/** What one layer keeps, as indices into the original model's units (sorted, unique). */
export interface KeptUnits {
  /** KV heads (groups) kept; the query heads of these groups are kept with them. */
  kvHeads: number[];
  /** FFN neurons (rows of gate/up, columns of down) kept. */
  neurons: number[];
}

export interface PrunedBackbone {
  /** The original sizes the indices refer to. */
  original: { heads: number; kvHeads: number; headDim: number; intermediate: number; layers: number };
  layers: KeptUnits[];
}

/** The sizes of a prunable decoder; throws a one-line error for other architectures. */
export function prunableShape(model: PreTrainedModel, what = "pruning heads and FFN neurons"): PrunedBackbone["original"] {
  if (model.arch.name !== "llama")
    throw new PruningError(`${what} supports llama, mistral and qwen2 models; this one is ${model.modelType}`);
  const c = model.archConfig as LlamaConfig;
  return { heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, intermediate: c.intermediate, layers: c.layers };
}

const P = "model.layers.";
const MLP = new Set(["gate_proj", "up_proj", "down_proj"]);
/** Canonical path of a decoder layer's linear layer. */
export const layerPath = (i: number, name: "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj") =>
  `${P}${i}.${MLP.has(name) ? "mlp" : "self_attn"}.${name}`;

/** Query heads of the kept KV groups. */
export function keptQueryHeads(o: PrunedBackbone["original"], kvHeads: readonly number[]): number[] {
  const perKv = o.heads / o.kvHeads;
  return kvHeads.flatMap((g) => Array.from({ length: perKv }, (_, j) => g * perKv + j));
}

/** Row (or column) indices of whole heads of size headDim. */
function headRows(heads: readonly number[], headDim: number): number[] {
  return heads.flatMap((h) => Array.from({ length: headDim }, (_, j) => h * headDim + j));
}

/**
 * Which output rows and input columns of a linear layer survive (null: all of them), for every
 * linear layer the pruning touches. Adapters over these layers are sliced the same way.
 */
export function keptIndices(plan: PrunedBackbone): Map<string, { rows: number[] | null; cols: number[] | null }> {
  const o = plan.original;
  const m = new Map<string, { rows: number[] | null; cols: number[] | null }>();
  plan.layers.forEach((l, i) => {
    const q = headRows(keptQueryHeads(o, l.kvHeads), o.headDim);
    const kv = headRows(l.kvHeads, o.headDim);
    m.set(layerPath(i, "q_proj"), { rows: q, cols: null });
    m.set(layerPath(i, "k_proj"), { rows: kv, cols: null });
    m.set(layerPath(i, "v_proj"), { rows: kv, cols: null });
    m.set(layerPath(i, "o_proj"), { rows: null, cols: q });
    m.set(layerPath(i, "gate_proj"), { rows: l.neurons, cols: null });
    m.set(layerPath(i, "up_proj"), { rows: l.neurons, cols: null });
    m.set(layerPath(i, "down_proj"), { rows: null, cols: l.neurons });
  });
  return m;
}

/** Rows `rows` and columns `cols` (null: all) of a row-major 1-D or 2-D f32 tensor. */
export function sliceMatrix(t: HostTensor, rows: readonly number[] | null, cols: readonly number[] | null): HostTensor {
  const src = t.data as Float32Array;
  if (t.shape.length === 1) {
    if (!rows) return t;
    return hostTensor(
      "f32",
      [rows.length],
      Float32Array.from(rows, (r) => src[r]),
    );
  }
  const [n, k] = t.shape;
  const rs = rows ?? Array.from({ length: n }, (_, i) => i);
  const cs = cols ?? null;
  const width = cs ? cs.length : k;
  const out = new Float32Array(rs.length * width);
  rs.forEach((r, i) => {
    if (!cs) out.set(src.subarray(r * k, (r + 1) * k), i * width);
    else for (let j = 0; j < width; j++) out[i * width + j] = src[r * k + cs[j]];
  });
  return hostTensor("f32", [rs.length, width], out);
}

/** Checks a plan against a model: one line naming the layer and field. */
export function checkPlan(plan: PrunedBackbone, o: PrunedBackbone["original"], where: string): void {
  for (const f of ["heads", "kvHeads", "headDim", "intermediate", "layers"] as const)
    if (plan.original[f] !== o[f]) throw new PruningError(`${where}: made for a model with ${f} ${plan.original[f]}, this one has ${o[f]}`);
  if (plan.layers.length !== o.layers) throw new PruningError(`${where}: ${plan.layers.length} layers listed, the model has ${o.layers}`);
  const sorted = (xs: readonly number[], n: number, field: string, i: number) => {
    if (!Array.isArray(xs) || xs.length === 0) throw new PruningError(`${where}: layers[${i}].${field} must list at least one index`);
    xs.forEach((x, j) => {
      if (!Number.isInteger(x) || x < 0 || x >= n)
        throw new PruningError(`${where}: layers[${i}].${field}[${j}] = ${x} is outside [0, ${n})`);
      if (j > 0 && x <= xs[j - 1]) throw new PruningError(`${where}: layers[${i}].${field} must be sorted and unique`);
    });
  };
  plan.layers.forEach((l, i) => {
    sorted(l.kvHeads, o.kvHeads, "kv_heads", i);
    sorted(l.neurons, o.intermediate, "neurons", i);
    if (l.kvHeads.length !== plan.layers[0].kvHeads.length || l.neurons.length !== plan.layers[0].neurons.length)
      throw new PruningError(
        `${where}: layers[${i}] keeps a different number of KV heads or neurons than layers[0] (one config size for all layers)`,
      );
  });
}

/** The plan as written to pruned_backbone.json (snake_case). */
export function planJson(plan: PrunedBackbone, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const o = plan.original;
  return {
    format: PRUNED_BACKBONE_FORMAT,
    format_version: 1,
    original: {
      num_attention_heads: o.heads,
      num_key_value_heads: o.kvHeads,
      head_dim: o.headDim,
      intermediate_size: o.intermediate,
      num_hidden_layers: o.layers,
    },
    ...extra,
    layers: plan.layers.map((l, i) => ({ layer: i, kv_heads: l.kvHeads, heads: keptQueryHeads(o, l.kvHeads), neurons: l.neurons })),
  };
}

/** Reads pruned_backbone.json's content; errors name the file and field. */
export function parsePlan(raw: unknown, where: string): PrunedBackbone {
  const obj = (v: unknown, field: string): Record<string, unknown> => {
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new PruningError(`${where}: "${field}" must be an object`);
    return v as Record<string, unknown>;
  };
  const top = obj(raw, "(top level)");
  if (top.format !== PRUNED_BACKBONE_FORMAT)
    throw new PruningError(`${where}: "format" must be "${PRUNED_BACKBONE_FORMAT}", got ${JSON.stringify(top.format)}`);
  if (top.format_version !== 1)
    throw new PruningError(`${where}: format_version ${JSON.stringify(top.format_version)} is not supported (1)`);
  const o = obj(top.original, "original");
  const int = (v: unknown, field: string): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new PruningError(`${where}: "${field}" must be a positive integer`);
    return v;
  };
  const original = {
    heads: int(o.num_attention_heads, "original.num_attention_heads"),
    kvHeads: int(o.num_key_value_heads, "original.num_key_value_heads"),
    headDim: int(o.head_dim, "original.head_dim"),
    intermediate: int(o.intermediate_size, "original.intermediate_size"),
    layers: int(o.num_hidden_layers, "original.num_hidden_layers"),
  };
  if (!Array.isArray(top.layers)) throw new PruningError(`${where}: "layers" must be a list`);
  const list = (v: unknown, field: string): number[] => {
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number"))
      throw new PruningError(`${where}: "${field}" must be a list of integers`);
    return v as number[];
  };
  const layers = top.layers.map((l, i) => {
    const e = obj(l, `layers[${i}]`);
    return { kvHeads: list(e.kv_heads, `layers[${i}].kv_heads`), neurons: list(e.neurons, `layers[${i}].neurons`) };
  });
  const plan = { original, layers };
  checkPlan(plan, original, where);
  return plan;
}

/** The config.json of the pruned model. */
export function prunedConfig(config: Record<string, unknown>, plan: PrunedBackbone): Record<string, unknown> {
  const o = plan.original;
  const kv = plan.layers[0].kvHeads.length;
  return {
    ...config,
    num_attention_heads: (kv * o.heads) / o.kvHeads,
    num_key_value_heads: kv,
    head_dim: o.headDim,
    intermediate_size: plan.layers[0].neurons.length,
  };
}

/** The base weights with every pruned row and column removed (others shared, not copied). */
export function prunedWeights(weights: ReadonlyMap<string, HostTensor>, plan: PrunedBackbone): Map<string, HostTensor> {
  const kept = keptIndices(plan);
  const out = new Map<string, HostTensor>();
  for (const [name, t] of weights) {
    const path = name.replace(/\.(weight|bias)$/, "");
    const k = kept.get(path);
    if (!k) out.set(name, t);
    else if (name.endsWith(".bias")) out.set(name, k.rows ? sliceMatrix(t, k.rows, null) : t);
    else out.set(name, sliceMatrix(t, k.rows, k.cols));
  }
  return out;
}

/** A new model: the pruned config and weights (same head, directory and compile options). */
export function pruneModel(model: PreTrainedModel, plan: PrunedBackbone): PreTrainedModel {
  checkPlan(plan, prunableShape(model), PRUNED_BACKBONE_FILE);
  const config = prunedConfig(model.config, plan);
  const cfg = model.arch.parseConfig(config, { numLabels: (model.archConfig as LlamaConfig).numLabels });
  return new PreTrainedModel(
    config,
    model.arch,
    cfg,
    model.head,
    prunedWeights(model.weights, plan),
    model.dir,
    model.newlyInitialized,
    model.compileOptions,
  );
}

/** Whether a model already has the pruned sizes (a folder written by writePrunedModel). */
export function hasPrunedShape(model: PreTrainedModel, plan: PrunedBackbone): boolean {
  const c = model.archConfig as LlamaConfig;
  const want = prunedConfig(model.config, plan);
  return (
    model.arch.name === "llama" &&
    c.heads === want.num_attention_heads &&
    c.kvHeads === want.num_key_value_heads &&
    c.intermediate === want.intermediate_size &&
    c.headDim === plan.original.headDim &&
    c.layers === plan.original.layers
  );
}

/**
 * A plan that keeps, in every layer, the `keepKv` KV groups and `keepNeurons` neurons with the
 * highest scores (ties: the lower index is kept); scores per layer are [kvHeads] and [intermediate].
 */
export function planFromScores(
  original: PrunedBackbone["original"],
  groupScores: readonly (readonly number[])[],
  neuronScores: readonly (readonly number[])[],
  keepKv: number,
  keepNeurons: number,
): PrunedBackbone {
  const top = (s: readonly number[], k: number) =>
    s
      .map((v, i) => [v, i] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, k)
      .map(([, i]) => i)
      .sort((a, b) => a - b);
  return {
    original,
    layers: groupScores.map((g, i) => ({ kvHeads: top(g, keepKv), neurons: top(neuronScores[i], keepNeurons) })),
  };
}
