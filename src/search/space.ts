/**
 * The joint search space of `peftkit search` (AutoPEFT, cambridgeltl/autopeft adapterhub/bo/search_space.py,
 * extended to peftkit's methods): a method, its size (LoRA rank, prompt length, bottleneck width: powers of
 * two or a given list), a target-module subset and a per-layer on/off mask. Pure host logic: parsing,
 * counting, sampling, one-exchange neighbours and the vector encoding the GP sees.
 */
import { PeftkitError } from "../engine/errors.js";
import type { Rng } from "../util/rng.js";

/** A bad search space (unknown method or field, no valid configuration). */
export class SearchSpaceError extends PeftkitError {}

export type SizeKnob = "r" | "tokens" | "bottleneck";
/** One target-module choice: a list of module names, or "all-linear". */
export type TargetChoice = string[] | "all-linear";

export interface MethodSpace {
  method: string;
  knob: SizeKnob | null;
  /** Allowed sizes, ascending (empty when the method has no size knob). */
  sizes: number[];
  /** Target-module choices, or null (the method's default targets). */
  targets: TargetChoice[] | null;
  /** Whether the per-layer mask is searched (else every layer). */
  layers: boolean;
}

export interface SearchSpace {
  methods: MethodSpace[];
  /** Transformer layers of the model (the mask's length). */
  numLayers: number;
  /** The hypervolume reference point, when the space file declares it. */
  reference: { params?: number; score?: number };
}

export interface SearchConfig {
  method: string;
  size: number | null;
  /** Index into the method's target choices, or null. */
  target: number | null;
  /** The layers on, ascending; null = every layer. */
  layers: number[] | null;
}

/** Methods `peftkit search` knows how to size, target and mask (compare's names). */
export const SEARCH_METHOD_FIELDS: Record<string, { knob: SizeKnob | null; targets: boolean; layers: boolean }> = {
  lora: { knob: "r", targets: true, layers: true },
  dora: { knob: "r", targets: true, layers: true },
  rslora: { knob: "r", targets: true, layers: true },
  pissa: { knob: "r", targets: true, layers: true },
  loha: { knob: "r", targets: true, layers: false },
  lokr: { knob: "r", targets: true, layers: false },
  ia3: { knob: null, targets: true, layers: false },
  prompt: { knob: "tokens", targets: false, layers: false },
  prefix: { knob: "tokens", targets: false, layers: false },
  adapter: { knob: "bottleneck", targets: false, layers: true },
};

function fieldsOf(method: string): string[] {
  const f = SEARCH_METHOD_FIELDS[method];
  return [...(f.knob ? [f.knob] : []), ...(f.targets ? ["target_modules"] : []), ...(f.layers ? ["layers"] : [])];
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function parseSizes(v: unknown, where: string): number[] {
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number")) {
    const [lo, hi] = v as number[];
    if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1)
      throw new SearchSpaceError(`${where}: [lo, hi] must be whole numbers ≥ 1, got ${JSON.stringify(v)}`);
    const out: number[] = [];
    for (let p = 1; p <= hi; p *= 2) if (p >= lo) out.push(p);
    return out;
  }
  if (isMap(v) && Object.keys(v).length === 1 && Array.isArray(v.values)) {
    const vals = v.values as unknown[];
    if (!vals.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 1))
      throw new SearchSpaceError(`${where}.values: must be whole numbers ≥ 1, got ${JSON.stringify(vals)}`);
    return [...new Set(vals as number[])].sort((a, b) => a - b);
  }
  throw new SearchSpaceError(`${where}: give [lo, hi] (the powers of two between) or {values: [...]}, got ${JSON.stringify(v)}`);
}

function parseTargets(v: unknown, where: string): TargetChoice[] {
  if (!Array.isArray(v)) throw new SearchSpaceError(`${where}: must be a list of choices (each a list of module names or "all-linear")`);
  return v.map((c, i) => {
    if (c === "all-linear") return "all-linear";
    if (typeof c === "string" && c !== "") return [c];
    if (Array.isArray(c) && c.length && c.every((s) => typeof s === "string" && s !== "")) return [...(c as string[])];
    throw new SearchSpaceError(`${where}[${i}]: must be a list of module names or "all-linear", got ${JSON.stringify(c)}`);
  });
}

/** A space from its parsed YAML (`where` names the file in messages); numLayers comes from the model. */
export function parseSpace(raw: unknown, where: string, numLayers: number): SearchSpace {
  if (!isMap(raw)) throw new SearchSpaceError(`${where}: must be a mapping with "methods"`);
  for (const k of Object.keys(raw))
    if (k !== "methods" && k !== "reference") throw new SearchSpaceError(`${where}: ${k}: unknown field (fields: methods, reference)`);
  if (!isMap(raw.methods)) throw new SearchSpaceError(`${where}: methods: must be a mapping of method names to their ranges`);
  const methods: MethodSpace[] = [];
  for (const [method, body] of Object.entries(raw.methods)) {
    const w = `${where}: methods.${method}`;
    const spec = SEARCH_METHOD_FIELDS[method];
    if (!spec)
      throw new SearchSpaceError(`${w}: unknown method "${method}" (search methods: ${Object.keys(SEARCH_METHOD_FIELDS).join(", ")})`);
    const b = body === null || body === undefined ? {} : body;
    if (!isMap(b)) throw new SearchSpaceError(`${w}: must be a mapping (fields: ${fieldsOf(method).join(", ") || "none"})`);
    for (const k of Object.keys(b))
      if (!fieldsOf(method).includes(k))
        throw new SearchSpaceError(`${w}.${k}: unknown field for ${method} (fields: ${fieldsOf(method).join(", ") || "none"})`);
    const sizes = spec.knob ? (b[spec.knob] === undefined ? [] : parseSizes(b[spec.knob], `${w}.${spec.knob}`)) : [];
    if (spec.knob && b[spec.knob] === undefined)
      throw new SearchSpaceError(`${w}.${spec.knob}: missing (the ${spec.knob} range to search)`);
    const targets = b.target_modules === undefined ? null : parseTargets(b.target_modules, `${w}.target_modules`);
    if (b.layers !== undefined && typeof b.layers !== "boolean") throw new SearchSpaceError(`${w}.layers: must be true or false`);
    methods.push({ method, knob: spec.knob, sizes, targets, layers: b.layers === true });
  }
  const reference: SearchSpace["reference"] = {};
  if (raw.reference !== undefined) {
    if (!isMap(raw.reference)) throw new SearchSpaceError(`${where}: reference: must be a mapping {params, score}`);
    for (const [k, v] of Object.entries(raw.reference)) {
      if (k !== "params" && k !== "score") throw new SearchSpaceError(`${where}: reference.${k}: unknown field (fields: params, score)`);
      if (typeof v !== "number" || !Number.isFinite(v) || (k === "params" && v <= 1))
        throw new SearchSpaceError(`${where}: reference.${k}: must be a number${k === "params" ? " > 1" : ""}, got ${JSON.stringify(v)}`);
      reference[k] = v;
    }
  }
  const space = { methods, numLayers, reference };
  checkNonEmpty(space, where);
  return space;
}

/** Configurations of one method: sizes × target choices × non-empty layer masks. */
export function methodCount(m: MethodSpace, numLayers: number): number {
  const sizes = m.knob ? m.sizes.length : 1;
  const targets = m.targets === null ? 1 : m.targets.length;
  const masks = m.layers ? 2 ** numLayers - 1 : 1;
  return sizes * targets * masks;
}

/** Why a method contributes no configuration, or null. */
function emptyReason(m: MethodSpace, numLayers: number): string | null {
  if (m.knob && !m.sizes.length) return `${m.knob} range holds no value`;
  if (m.targets !== null && !m.targets.length) return "target_modules lists no choice";
  if (m.layers && numLayers < 1) return "the model has no layers to mask";
  return null;
}

/** The acceptance error: one line, with the reason of each method. */
export function checkNonEmpty(space: SearchSpace, where: string): void {
  if (space.methods.some((m) => methodCount(m, space.numLayers) > 0)) return;
  const why = space.methods.map((m) => `${m.method}: ${emptyReason(m, space.numLayers)}`);
  throw new SearchSpaceError(`${where}: search space has no valid configuration (${why.length ? why.join("; ") : "no methods"})`);
}

export function totalCount(space: SearchSpace): number {
  return space.methods.reduce((s, m) => s + methodCount(m, space.numLayers), 0);
}

const live = (space: SearchSpace) => space.methods.filter((m) => methodCount(m, space.numLayers) > 0);
const methodOf = (space: SearchSpace, name: string) => space.methods.find((m) => m.method === name) as MethodSpace;

/** A canonical string of a configuration (equal configurations, equal keys). */
export function configKey(c: SearchConfig): string {
  return `${c.method}|${c.size ?? "-"}|${c.target ?? "-"}|${c.layers ? c.layers.join(",") : "all"}`;
}

/** Human label: "lora r=8 t=q_proj+v_proj layers=0,1". */
export function configLabel(space: SearchSpace, c: SearchConfig): string {
  const m = methodOf(space, c.method);
  const parts = [c.method];
  if (m.knob) parts.push(`${m.knob}=${c.size}`);
  if (c.target !== null && m.targets) {
    const t = m.targets[c.target];
    parts.push(`t=${t === "all-linear" ? t : t.join("+")}`);
  }
  if (m.layers) parts.push(`layers=${c.layers ? c.layers.join(",") : "all"}`);
  return parts.join(" ");
}

function normaliseLayers(bits: boolean[]): number[] | null {
  const on = bits.flatMap((b, i) => (b ? [i] : []));
  return on.length === bits.length ? null : on;
}

/** A uniformly drawn configuration per parameter (ConfigSpace's sample_configuration), method first. */
export function sampleConfig(space: SearchSpace, rng: Rng): SearchConfig {
  const ms = live(space);
  const m = ms[Math.floor(rng.next() * ms.length)];
  const size = m.knob ? m.sizes[Math.floor(rng.next() * m.sizes.length)] : null;
  const target = m.targets ? Math.floor(rng.next() * m.targets.length) : null;
  let layers: number[] | null = null;
  if (m.layers) {
    let bits: boolean[];
    do bits = Array.from({ length: space.numLayers }, () => rng.next() < 0.5);
    while (!bits.some(Boolean));
    layers = normaliseLayers(bits);
  }
  return { method: m.method, size, target, layers };
}

/** Relative position of a size in its method's range, in [0, 1] on a log scale. */
function sizePosition(m: MethodSpace, size: number | null): number {
  if (!m.knob || size === null || m.sizes.length < 2) return 0.5;
  const lo = Math.log2(m.sizes[0]);
  const hi = Math.log2(m.sizes[m.sizes.length - 1]);
  return (Math.log2(size) - lo) / (hi - lo);
}

/**
 * The one-exchange neighbours (ConfigSpace's get_one_exchange_neighbourhood): change one parameter.
 * Another method keeps the relative size, the target index (clamped) and the mask where it has one.
 */
export function neighbours(space: SearchSpace, c: SearchConfig): SearchConfig[] {
  const m = methodOf(space, c.method);
  const out: SearchConfig[] = [];
  for (const o of live(space)) {
    if (o.method === c.method) continue;
    let size: number | null = null;
    if (o.knob) {
      const want = sizePosition(m, c.size);
      size = o.sizes.reduce(
        (best, s) => (Math.abs(sizePosition(o, s) - want) < Math.abs(sizePosition(o, best) - want) ? s : best),
        o.sizes[0],
      );
    }
    const target = o.targets ? Math.min(c.target ?? 0, o.targets.length - 1) : null;
    out.push({ method: o.method, size, target, layers: o.layers ? c.layers : null });
  }
  if (m.knob && c.size !== null) {
    const i = m.sizes.indexOf(c.size);
    for (const j of [i - 1, i + 1]) if (j >= 0 && j < m.sizes.length) out.push({ ...c, size: m.sizes[j] });
  }
  if (m.targets && c.target !== null) for (let t = 0; t < m.targets.length; t++) if (t !== c.target) out.push({ ...c, target: t });
  if (m.layers) {
    const on = c.layers ?? Array.from({ length: space.numLayers }, (_, i) => i);
    for (let l = 0; l < space.numLayers; l++) {
      const bits = Array.from({ length: space.numLayers }, (_, i) => on.includes(i) !== (i === l));
      if (bits.some(Boolean)) out.push({ ...c, layers: normaliseLayers(bits) });
    }
  }
  return out;
}

/** Length of the encoded vector: method one-hot, relative log-size, target one-hots, layer bits. */
export function encodedLength(space: SearchSpace): number {
  return space.methods.length + 1 + space.methods.reduce((s, m) => s + (m.targets?.length ?? 0), 0) + space.numLayers;
}

/** AutoPEFT's encoding ([0, 1] sizes on a log scale, layer bits), with a one-hot method. */
export function encode(space: SearchSpace, c: SearchConfig): Float64Array {
  const x = new Float64Array(encodedLength(space));
  let o = 0;
  space.methods.forEach((m, i) => {
    if (m.method === c.method) x[o + i] = 1;
  });
  o += space.methods.length;
  const m = methodOf(space, c.method);
  x[o++] = sizePosition(m, c.size);
  for (const s of space.methods) {
    const n = s.targets?.length ?? 0;
    if (s.method === c.method && c.target !== null) x[o + c.target] = 1;
    o += n;
  }
  for (let l = 0; l < space.numLayers; l++) x[o + l] = !m.layers || c.layers === null || c.layers.includes(l) ? 1 : 0;
  return x;
}

/** The `peftkit train` options of a configuration beyond the method and size (--target, --layers-to-transform). */
export function extraTrainArgs(space: SearchSpace, c: SearchConfig): string[] {
  const m = methodOf(space, c.method);
  const a: string[] = [];
  if (m.targets && c.target !== null) {
    const t = m.targets[c.target];
    a.push("--target", t === "all-linear" ? t : t.join(","));
  }
  if (m.layers && c.layers !== null) a.push("--layers-to-transform", c.layers.join(","));
  return a;
}

/** The target choice of a configuration, or undefined. */
export function targetOf(space: SearchSpace, c: SearchConfig): TargetChoice | undefined {
  const m = methodOf(space, c.method);
  return m.targets && c.target !== null ? m.targets[c.target] : undefined;
}
