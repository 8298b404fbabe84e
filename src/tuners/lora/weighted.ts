/**
 * PEFT's LoraModel.add_weighted_adapter: a new LoRA adapter built from existing ones.
 *  - "cat": the As, each scaled by weight·scaling, stacked on the rank axis, and the Bs stacked;
 *    r = Σ r_i, so the result is exactly Σ w_i·s_i·B_i·A_i.
 *  - "linear", "ties", "dare_linear", "dare_ties", "magnitude_prune": the rule is applied to the
 *    As (weights sign(w·s)·√|w·s|) and the Bs (weights √|w·s|) separately; equal ranks required.
 *    As in PEFT, several adapters give cross terms (B₁·A₂…): the result is not Σ w_i·ΔW_i.
 *  - "svd" and the "*_svd" forms: the rule is applied to the full deltas ΔW_i = s_i·B_i·A_i with
 *    weights w_i·s_i (PEFT multiplies by the scaling twice here), then truncated by SVD to svdRank
 *    (default: the largest source rank): B = U_r·diag(S_r), A = V_rᵀ; with svdClamp = q, both are
 *    clamped to [−h, h], h = the q-quantile of their signed entries together (torch.quantile).
 * The new adapter copies the first adapter's config with r = lora_alpha = new rank (scaling 1),
 * the union of the target modules, no rank/alpha patterns and use_rslora off.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { type Matrix, matmul, matrix, qr, svd, transpose } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { createModulesToSave, modulesToSaveKeys } from "../modules-to-save.js";
import type { Adapter, AnyConfig, PeftModel } from "../peft-model.js";
import type { ModelInfo, Tuner } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { LORA } from "./index.js";
import { biasTargets, type LoraLayer, logicalWeight, loraKeys, loraLayers, rowNorms } from "./layers.js";
import { dareLinear, dareTies, type MajoritySignMethod, magnitudePruneMerge, quantile, taskArithmetic, ties } from "./merge-utils.js";

export type CombinationType =
  | "linear"
  | "cat"
  | "svd"
  | "ties"
  | "ties_svd"
  | "dare_linear"
  | "dare_ties"
  | "dare_linear_svd"
  | "dare_ties_svd"
  | "magnitude_prune"
  | "magnitude_prune_svd";

export interface WeightedAdapterOptions {
  /** Default "svd", as PEFT; a single adapter always combines as "linear". */
  combinationType?: CombinationType;
  /** Rank of the result for the svd types (default: the largest source rank). */
  svdRank?: number;
  /** Fraction of entries kept by ties/dare/magnitude_prune, in [0, 1]. */
  density?: number;
  majoritySignMethod?: MajoritySignMethod;
  /**
   * PEFT's svd_clamp, svd types only: clamp the new A and B to [−h, h] with h the q-quantile
   * (linear interpolation) of their signed entries taken together; q in [0, 1].
   */
  svdClamp?: number;
  /** Seed of the random drops of the dare types (default 0). */
  seed?: number;
}

/** Every combination type add_weighted_adapter takes (also `peftkit merge-adapters --combination-type`'s choices). */
export const COMBINATION_TYPES: readonly CombinationType[] = [
  "linear",
  "cat",
  "svd",
  "ties",
  "ties_svd",
  "dare_linear",
  "dare_ties",
  "dare_linear_svd",
  "dare_ties_svd",
  "magnitude_prune",
  "magnitude_prune_svd",
];

/** One rule on task tensors: the merge_utils function a combination type names (svd suffix removed). */
type Rule = (tensors: Float64Array[], weights: number[]) => Float64Array;

function ruleFor(type: CombinationType, opts: WeightedAdapterOptions, rng: Rng): Rule {
  const base = type.replace(/_svd$/, "");
  if (base === "linear" || base === "svd" || base === "cat") return taskArithmetic;
  const density = opts.density;
  if (density === undefined || !Number.isFinite(density) || density < 0 || density > 1)
    throw new PeftConfigError(`add_weighted_adapter: combination "${type}" needs a density in [0, 1], got ${density}`);
  const sign = opts.majoritySignMethod ?? "total";
  if (sign !== "total" && sign !== "frequency")
    throw new PeftConfigError(`add_weighted_adapter: majoritySignMethod must be "total" or "frequency", got ${JSON.stringify(sign)}`);
  switch (base) {
    case "ties":
      return (t, w) => ties(t, w, density, sign);
    case "dare_linear":
      return (t, w) => dareLinear(t, w, density, rng);
    case "dare_ties":
      return (t, w) => dareTies(t, w, density, sign, rng);
    case "magnitude_prune":
      return (t, w) => magnitudePruneMerge(t, w, density);
  }
  throw new PeftConfigError(`add_weighted_adapter: unknown combination type "${type}"`);
}

/** A config's target modules as PEFT holds them after injection: defaults and "all-linear" resolved to names. */
function resolvedTargets(info: ModelInfo, c: LoraConfig): string[] | string {
  const t = c.targetModules;
  if (t === null) return [...(LORA_DEFAULT_TARGETS[info.modelType] ?? loraLayers(info, c).map((l) => l.key))];
  if (typeof t === "string" && t.toLowerCase() === "all-linear") return loraLayers(info, c).map((l) => l.key);
  return t;
}

function unionTargets(info: ModelInfo, configs: LoraConfig[]): string[] | string {
  const all = configs.map((c) => resolvedTargets(info, c));
  const strings = all.filter((t) => typeof t === "string");
  if (strings.length === all.length) return (all as string[]).map((t) => `(${t})`).join("|");
  if (strings.length > 0)
    throw new PeftConfigError(
      "add_weighted_adapter: the adapters' target_modules mix regex strings and lists, which PEFT does not combine either",
    );
  const out: string[] = [];
  for (const list of all as string[][]) for (const t of list) if (!out.includes(t)) out.push(t);
  return out;
}

function f64(t: HostTensor): Float64Array {
  return Float64Array.from(t.data as Float32Array);
}

interface Source {
  layer: LoraLayer;
  a: Float64Array;
  b: Float64Array;
  weight: number;
}

/** The rule applied to the full deltas ΔW_i = s_i·B_i·A_i (logical [out, in]) with weights w_i·s_i. */
function prunedDelta(rule: Rule, l: LoraLayer, sources: Source[]): Float64Array {
  const deltas = sources.map((s) => {
    const d = new Float64Array(l.outFeatures * l.inFeatures);
    const rk = s.layer.r;
    for (let o = 0; o < l.outFeatures; o++) {
      for (let k = 0; k < rk; k++) {
        const v = s.b[o * rk + k] * s.layer.scaling;
        for (let i = 0; i < l.inFeatures; i++) d[o * l.inFeatures + i] += v * s.a[k * l.inFeatures + i];
      }
    }
    return d;
  });
  return rule(
    deltas,
    sources.map((s) => s.weight * s.layer.scaling),
  );
}

/**
 * The thin SVD of Σ_i c_i·B_i·A_i (c_i = w_i·s_i², PEFT's weights times the scaling already in
 * ΔW_i) from its factors: B_c = [B_1 … B_k] = Q_b·R_b, A_cᵀ = [c_1·A_1; …]ᵀ = Q_a·R_a, then the SVD
 * of the small R_b·R_aᵀ = U'·S·V'ᵀ gives U = Q_b·U', V = Q_a·V'. Exact, O((out + in)·R²) with
 * R = Σ r_i, where the full SVD of a rank-R [out, in] matrix costs seconds per layer.
 */
function lowRankSvd(l: LoraLayer, sources: Source[]): { u: Matrix; s: Float64Array; v: Matrix } {
  const R = sources.reduce((n, s) => n + s.layer.r, 0);
  const bc = matrix(l.outFeatures, R);
  const act = matrix(l.inFeatures, R);
  let col = 0;
  for (const s of sources) {
    const rk = s.layer.r;
    const c = s.weight * s.layer.scaling * s.layer.scaling;
    for (let k = 0; k < rk; k++, col++) {
      for (let o = 0; o < l.outFeatures; o++) bc.data[o * R + col] = s.b[o * rk + k];
      for (let i = 0; i < l.inFeatures; i++) act.data[i * R + col] = c * s.a[k * l.inFeatures + i];
    }
  }
  const b = qr(bc);
  const a = qr(act);
  const small = svd(matmul(b.r, transpose(a.r)));
  return { u: matmul(b.q, small.u), s: small.s, v: matmul(a.q, small.v) };
}

/** New A [r, in] and B [out, r] (f32) for one layer. */
function combineLayer(
  type: CombinationType,
  rule: Rule,
  l: LoraLayer,
  sources: Source[],
  svdClamp: number | undefined,
): { a: Float32Array; b: Float32Array } {
  const a = new Float32Array(l.r * l.inFeatures);
  const b = new Float32Array(l.outFeatures * l.r);
  if (type === "cat") {
    let row = 0;
    for (const s of sources) {
      const rk = s.layer.r;
      const f = s.weight * s.layer.scaling;
      for (let k = 0; k < rk; k++) {
        for (let i = 0; i < l.inFeatures; i++) a[(row + k) * l.inFeatures + i] = f * s.a[k * l.inFeatures + i];
        for (let o = 0; o < l.outFeatures; o++) b[o * l.r + row + k] = s.b[o * rk + k];
      }
      row += rk;
    }
    return { a, b };
  }
  if (!type.endsWith("svd")) {
    const bad = sources.find((s) => s.layer.r !== l.r);
    if (bad)
      throw new PeftConfigError(`add_weighted_adapter "${type}": "${l.key}" has rank ${bad.layer.r} in one adapter, expected ${l.r}`);
    const ws = sources.map((s) => s.weight * s.layer.scaling);
    a.set(
      rule(
        sources.map((s) => s.a),
        ws.map((w) => Math.sign(w || 1) * Math.sqrt(Math.abs(w))),
      ),
    );
    b.set(
      rule(
        sources.map((s) => s.b),
        ws.map((w) => Math.sqrt(Math.abs(w))),
      ),
    );
    return { a, b };
  }
  // "svd" (task arithmetic) keeps ΔW = Σ (w_i·s_i)·s_i·B_i·A_i low-rank: factor it without forming it.
  const { u, s, v } = type === "svd" ? lowRankSvd(l, sources) : svd(matrix(l.outFeatures, l.inFeatures, prunedDelta(rule, l, sources)));
  const k = s.length;
  // A rank above min(out, in) leaves the extra rows/columns at zero.
  const kept = Math.min(l.r, k);
  const bf = new Float64Array(l.outFeatures * kept);
  const af = new Float64Array(kept * l.inFeatures);
  for (let j = 0; j < kept; j++) {
    for (let o = 0; o < l.outFeatures; o++) bf[o * kept + j] = u.data[o * k + j] * s[j];
    for (let i = 0; i < l.inFeatures; i++) af[j * l.inFeatures + i] = v.data[i * k + j];
  }
  if (svdClamp !== undefined) {
    // PEFT: hi = torch.quantile(cat(U·S, Vh), clamp) over the truncated factors, lo = −hi, then
    // clamp(x, lo, hi) = min(max(x, lo), hi) (torch gives hi everywhere when lo > hi).
    const both = new Float64Array(bf.length + af.length);
    both.set(bf);
    both.set(af, bf.length);
    const hi = quantile(both, svdClamp);
    const clamp = (x: number) => Math.min(Math.max(x, -hi), hi);
    bf.forEach((x, i) => {
      bf[i] = clamp(x);
    });
    af.forEach((x, i) => {
      af[i] = clamp(x);
    });
  }
  for (let j = 0; j < kept; j++) {
    for (let o = 0; o < l.outFeatures; o++) b[o * l.r + j] = bf[o * kept + j];
    for (let i = 0; i < l.inFeatures; i++) a[j * l.inFeatures + i] = af[j * l.inFeatures + i];
  }
  return { a, b };
}

export function addWeightedAdapter(
  peft: PeftModel,
  adapters: readonly string[],
  weights: readonly number[],
  name: string,
  opts: WeightedAdapterOptions = {},
): Adapter {
  const info = peft.info;
  if (adapters.length === 0) throw new PeftConfigError("add_weighted_adapter: no adapters given");
  if (weights.length !== adapters.length)
    throw new PeftConfigError(`add_weighted_adapter: ${adapters.length} adapters but ${weights.length} weights`);
  if (weights.some((w) => !Number.isFinite(w))) throw new PeftConfigError(`add_weighted_adapter: weights must be finite, got ${weights}`);
  if (peft.adapterNames.includes(name)) throw new PeftConfigError(`add_weighted_adapter: an adapter named "${name}" already exists`);
  const srcs = adapters.map((n) => peft.adapter(n));
  for (const a of srcs)
    if (a.tuner.peftType !== "LORA")
      throw new PeftConfigError(`add_weighted_adapter: adapter "${a.name}" is ${a.tuner.peftType}, only LoRA adapters combine`);
  const configs = srcs.map((a) => a.config as unknown as LoraConfig);

  const seen = new Map<string, string>();
  srcs.forEach((a, i) => {
    for (const w of modulesToSaveKeys(info, configs[i].modulesToSave).keys()) {
      const other = seen.get(w);
      if (other !== undefined && other !== a.name)
        throw new PeftConfigError(`add_weighted_adapter: adapters "${other}" and "${a.name}" both have "${w}" in modules_to_save`);
      seen.set(w, a.name);
    }
  });

  const requested = opts.combinationType ?? "svd";
  if (!COMBINATION_TYPES.includes(requested)) throw new PeftConfigError(`add_weighted_adapter: unknown combination type "${requested}"`);
  const type: CombinationType = adapters.length === 1 ? "linear" : requested;
  const ranks = configs.map((c) => Math.max(c.r, ...Object.values(c.rankPattern)));
  let rank: number;
  if (type === "cat") rank = ranks.reduce((x, y) => x + y, 0);
  else if (type.endsWith("svd")) rank = opts.svdRank ?? Math.max(...ranks);
  else {
    if (new Set(ranks).size !== 1)
      throw new PeftConfigError(`add_weighted_adapter "${type}": all adapters must have the same r, got ${ranks.join(", ")}`);
    rank = ranks[0];
  }
  if (!Number.isInteger(rank) || rank < 1)
    throw new PeftConfigError(`add_weighted_adapter: svdRank must be a positive integer, got ${rank}`);

  if (opts.svdClamp !== undefined && !(opts.svdClamp >= 0 && opts.svdClamp <= 1))
    throw new PeftConfigError(`add_weighted_adapter: svdClamp is a quantile in [0, 1], got ${opts.svdClamp}`);

  const config: LoraConfig = {
    ...configs[0],
    r: rank,
    loraAlpha: rank,
    targetModules: unionTargets(info, configs),
    rankPattern: {},
    alphaPattern: {},
    useRslora: false,
  };
  const rule = ruleFor(type, opts, new Rng(opts.seed ?? 0));
  const srcLayers = configs.map((c) => new Map(loraLayers(info, c).map((l) => [l.key, l])));
  const tensors = new Map<string, HostTensor>();
  const magnitudes = new Map<string, HostTensor>();
  const layers = loraLayers(info, config);
  for (const l of layers) {
    const sources: Source[] = [];
    srcs.forEach((a, i) => {
      const sl = srcLayers[i].get(l.key);
      if (!sl || sl.kind !== l.kind) return;
      const k = loraKeys(sl);
      sources.push({ layer: sl, a: f64(a.tensors.get(k.a) as HostTensor), b: f64(a.tensors.get(k.b) as HostTensor), weight: weights[i] });
    });
    if (sources.length === 0) throw new PeftConfigError(`add_weighted_adapter: no adapter has LoRA weights for "${l.key}"`);
    const { a, b } = combineLayer(type, rule, l, sources, type.endsWith("svd") ? opts.svdClamp : undefined);
    const k = loraKeys(l);
    tensors.set(k.a, hostTensor("f32", [l.r, l.inFeatures], a));
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, l.r], b));
    // PEFT computes the new magnitude when it injects the new adapter, before A and B are
    // overwritten, i.e. from B = 0: ‖W‖ per output feature.
    if (config.useDora) magnitudes.set(k.m, hostTensor("f32", [l.outFeatures], Float32Array.from(rowNorms(logicalWeight(info, l)))));
  }
  // Trained biases are base-model parameters in PEFT, shared by every adapter: take the first
  // adapter's (or the base's where it trains none).
  const firstBiases = new Map(biasTargets(info, configs[0], loraLayers(info, configs[0])).map((t) => [t.name, t.key]));
  for (const t of biasTargets(info, config, layers)) {
    const own = firstBiases.get(t.name);
    const src = own !== undefined ? srcs[0].tensors.get(own) : undefined;
    const w = src ?? info.weight(t.name);
    tensors.set(t.key, hostTensor(w.dtype, w.shape, (w.data as Float32Array).slice()));
  }
  for (const [k, v] of createModulesToSave(info, config.modulesToSave)) tensors.set(k, v);
  return peft.insertAdapter(name, LORA as unknown as Tuner, config as unknown as AnyConfig, new Map([...magnitudes, ...tensors]));
}
