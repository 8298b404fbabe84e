/**
 * Which modules a tuner attaches to, with PEFT's rules (tuners_utils.check_target_module_exists):
 * a list matches a module name exactly or as a dotted suffix, a string is a regex that must match
 * the whole name, "all-linear" means every linear layer but the output head; layers_to_transform
 * and layers_pattern restrict by layer index; rank_pattern/alpha_pattern override r/alpha.
 */

import { PeftConfigError } from "./config.js";
import { LORA_DEFAULT_TARGETS } from "./defaults.js";
import type { ModelInfo } from "./tuner.js";

export interface TargetSpec {
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  layersToTransform: number | number[] | null;
  layersPattern: string[] | string | null;
}

const DEFAULT_LAYER_PATTERNS = ["layers", "h", "block", "blocks", "layer"];

function fullMatch(pattern: string, key: string, where: string): boolean {
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${pattern})$`);
  } catch (e) {
    throw new PeftConfigError(`${where}: invalid regex ${JSON.stringify(pattern)}: ${(e as Error).message}`);
  }
  return re.test(key);
}

/** PEFT's list-or-regex match of one module name. */
export function matchesModules(spec: string[] | string, key: string, where = "adapter config"): boolean {
  if (typeof spec === "string") return fullMatch(spec, key, where);
  return spec.some((t) => key === t || key.endsWith(`.${t}`));
}

/** The layer index of a module name, found through the layer patterns (e.g. "layers.3."). */
export function layerIndex(key: string, patterns: string[] | string | null): number | null {
  const list = patterns === null ? DEFAULT_LAYER_PATTERNS : typeof patterns === "string" ? [patterns] : patterns;
  for (const p of list) {
    const m = new RegExp(`(?:^|\\.)${p}\\.(\\d+)(?:\\.|$)`).exec(key);
    if (m) return Number(m[1]);
  }
  return null;
}

/**
 * The modules among `candidates` a config selects. `allLinear` lists the linear layers eligible
 * for "all-linear"; `defaults` are the per-architecture targets used when target_modules is null.
 */
export function selectTargets(
  spec: TargetSpec,
  candidates: readonly string[],
  opts: { allLinear: readonly string[]; defaults: readonly string[] | null; where: string },
): string[] {
  let targets = spec.targetModules;
  if (targets === null) {
    if (!opts.defaults) throw new PeftConfigError(`${opts.where}: target_modules is required for this model (no default is known)`);
    targets = [...opts.defaults];
  }
  const allLinear = typeof targets === "string" && targets.toLowerCase() === "all-linear";
  const out: string[] = [];
  for (const key of candidates) {
    const hit = allLinear ? opts.allLinear.includes(key) : matchesModules(targets, key, opts.where);
    if (!hit) continue;
    if (spec.excludeModules !== null && matchesModules(spec.excludeModules, key, opts.where)) continue;
    if (spec.layersToTransform !== null) {
      const idx = layerIndex(key, spec.layersPattern);
      const want = spec.layersToTransform;
      if (idx === null || (typeof want === "number" ? idx !== want : !want.includes(idx))) continue;
    }
    out.push(key);
  }
  if (out.length === 0) {
    throw new PeftConfigError(
      `${opts.where}: target_modules ${JSON.stringify(spec.targetModules)} matched no module of this model (modules look like ${candidates.slice(0, 4).join(", ")}, ...)`,
    );
  }
  return out;
}

/** The value of the first pattern that matches (PEFT's get_pattern_key: `(.*\.)?(pattern)$`). */
export function patternValue(patterns: Record<string, number>, key: string, dflt: number): number {
  for (const [p, v] of Object.entries(patterns)) {
    if (new RegExp(`^(?:.*\\.)?(?:${p})$`).test(key)) return v;
  }
  return dflt;
}

/** A targeted linear layer: its canonical path, PEFT module name, and logical [out, in] sizes. */
export interface TargetedLinear {
  path: string;
  key: string;
  inFeatures: number;
  outFeatures: number;
}

/**
 * The linear layers a config targets, by PEFT's rules, with LoRA's per-architecture defaults when
 * target_modules is null (the mapping HF PEFT copies for most methods). Sizes are logical, also
 * for GPT-2's [in, out] Conv1D weights.
 */
export function targetedLinears(
  info: ModelInfo,
  spec: TargetSpec,
  where: string,
  defaults: readonly string[] | null = LORA_DEFAULT_TARGETS[info.modelType] ?? null,
): TargetedLinear[] {
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const chosen = selectTargets(spec, [...byPeft.keys()], { allLinear: info.allLinear.map((p) => info.peftName(p)), defaults, where });
  return chosen.map((key) => {
    const path = byPeft.get(key) as string;
    const [d0, d1] = info.weight(`${path}.weight`).shape;
    return { path, key, inFeatures: info.fanInFanOut ? d0 : d1, outFeatures: info.fanInFanOut ? d1 : d0 };
  });
}
