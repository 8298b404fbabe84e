/**
 * The --budgets syntax: groups separated by ";", each KNOB=V1,V2,...
 *   r=4,8,16           LoRA-family rank (lora, dora, rslora, pissa, corda, loha, lokr, hut, lora_sb, svfit, kasa, loldu,
 *                      pego, lora_ggpo, snell, snella; adalora's and increlora's target_r, triadaptlora's reference_rank),
 *                      SoKA's Kronecker terms
 *   tokens=10,20       virtual tokens (prompt, prefix)
 *   bottleneck=16,64   adapter bottleneck width
 *   params=10k,1M      a target trainable-parameter count: per method, the knob value whose
 *                      count is nearest (in ratio) to each target
 * Methods without a knob (ia3, ssf, bitfit, ln_tuning, oft, boft, fourierft, loca, full) run their single configuration.
 * A method whose knob is not given runs its default (r=8, tokens=20, bottleneck=32).
 */
import { METHODS } from "../train/methods.js";
import { SELECTIVE_METHODS } from "../train/selective-run.js";
import { ZO_COMPARE_METHODS } from "../train/zo/compare.js";
import { CompareError } from "./task.js";

export type Knob = "r" | "tokens" | "bottleneck";

/** A method's configuration: one knob value, or the method's only configuration. */
export interface MethodConfig {
  knob: Knob | null;
  value: number | null;
}

export interface Budgets {
  values: Partial<Record<Knob, number[]>>;
  /** Target trainable-parameter counts (params=). */
  params: number[];
}

/** Every `peftkit train --method`, plus full fine-tuning, and full fine-tuning then grafting (compare/graft-run.ts). */
export const COMPARE_METHODS = [...METHODS, ...SELECTIVE_METHODS, ...ZO_COMPARE_METHODS, "graft", "full"] as const;

const KNOB_OF: Record<string, Knob | null> = {
  lora: "r",
  mezo_lora: "r",
  dora: "r",
  rslora: "r",
  pissa: "r",
  corda: "r",
  svfit: "r",
  kasa: "r",
  loldu: "r",
  adalora: "r",
  increlora: "r",
  triadaptlora: "r",
  pego: "r",
  lora_ggpo: "r",
  light_peft: "r",
  snell: "r",
  snella: "r",
  prompt: "tokens",
  prefix: "tokens",
  adapter: "bottleneck",
  hut: "r",
  soka: "r",
  lora_sb: "r",
  loha: "r",
  lokr: "r",
  hra: "r",
  poly: "r",
};

export const DEFAULT_KNOB: Record<Knob, number> = { r: 8, tokens: 20, bottleneck: 32 };

/** Values tried when a params= target picks the nearest configuration. */
export const KNOB_CANDIDATES: Record<Knob, number[]> = {
  r: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  tokens: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  bottleneck: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
};

export function knobOf(method: string): Knob | null {
  return KNOB_OF[method] ?? null;
}

/** "r=8", "tokens=20", "default". */
export function configLabel(c: MethodConfig): string {
  return c.knob === null ? "default" : `${c.knob}=${c.value}`;
}

/** 100k → 100000, 1.5M → 1500000. */
function parseCount(s: string, where: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmMgG]?)$/.exec(s);
  if (!m) throw new CompareError(`${where}: "${s}" is not a parameter count (e.g. 5000, 100k, 1.5M)`);
  const n = Number(m[1]) * ({ "": 1, k: 1e3, m: 1e6, g: 1e9 } as Record<string, number>)[m[2].toLowerCase()];
  if (!(n >= 1) || n > 1e12) throw new CompareError(`${where}: "${s}" must be between 1 and 1e12`);
  return Math.round(n);
}

export function parseBudgets(text: string | undefined): Budgets {
  const out: Budgets = { values: {}, params: [] };
  if (!text?.trim()) return out;
  for (const group of text.split(/[;\s]+/).filter(Boolean)) {
    const where = `--budgets ${group}`;
    const eq = group.indexOf("=");
    if (eq <= 0) throw new CompareError(`${where}: expected KNOB=V1,V2,... with KNOB one of r, tokens, bottleneck, params`);
    const key = group.slice(0, eq);
    const vals = group
      .slice(eq + 1)
      .split(",")
      .filter(Boolean);
    if (!vals.length) throw new CompareError(`${where}: no values`);
    if (key === "params") {
      out.params.push(...vals.map((v) => parseCount(v, where)));
      continue;
    }
    if (key !== "r" && key !== "tokens" && key !== "bottleneck")
      throw new CompareError(`${where}: unknown knob "${key}" (knobs: r, tokens, bottleneck, params)`);
    out.values[key] = vals.map((v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 4096) throw new CompareError(`${where}: "${v}" must be an integer in [1, 4096]`);
      return n;
    });
  }
  if (out.params.length && Object.keys(out.values).length)
    throw new CompareError("--budgets: give either params=... or knob values (r=, tokens=, bottleneck=), not both");
  return out;
}

/** The configurations a method runs under explicit knob values (not params=). */
export function explicitConfigs(method: string, b: Budgets): MethodConfig[] {
  const knob = knobOf(method);
  if (knob === null) return [{ knob: null, value: null }];
  const vals = b.values[knob] ?? [DEFAULT_KNOB[knob]];
  return vals.map((value) => ({ knob, value }));
}

/**
 * The candidate value whose trainable count is nearest each target, by |log(count / target)|;
 * ties go to the smaller configuration. Duplicates (two targets picking the same) are merged.
 */
export function nearestConfigs(counts: readonly { value: number; params: number }[], targets: readonly number[]): number[] {
  const picked: number[] = [];
  for (const t of targets) {
    let best = counts[0];
    for (const c of counts) if (Math.abs(Math.log(c.params / t)) < Math.abs(Math.log(best.params / t)) - 1e-12) best = c;
    if (!picked.includes(best.value)) picked.push(best.value);
  }
  return picked;
}
