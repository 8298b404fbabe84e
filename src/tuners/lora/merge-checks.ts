/**
 * Checks made on adapter folders before they are merged (`peftkit merge-adapters`), each failure
 * one line naming the field or tensor. PEFT's add_weighted_adapter checks none of these: adapters
 * of another method cannot sit in a LoraModel, a base-model mismatch goes unnoticed, and a shape
 * mismatch surfaces as a raw torch error in stack/cat.
 */
import { PeftConfigError } from "../config.js";
import type { CombinationType } from "./weighted.js";

/** One adapter folder as read from disk: its adapter_config.json and its tensors' shapes. */
export interface AdapterSummary {
  /** How the user named it (the folder path), for messages. */
  readonly label: string;
  readonly config: Readonly<Record<string, unknown>>;
  /** Saved tensor name → shape. */
  readonly shapes: ReadonlyMap<string, readonly number[]>;
}

/** A pair of adapters that must not be merged; `force` can override only a base-model mismatch. */
export class MergeCheckError extends PeftConfigError {}

const dims = (s: readonly number[]) => s.join("×");

/** The ranks the method needs equal: everything but cat and the *_svd forms. */
export function needsEqualRank(type: CombinationType): boolean {
  return type !== "cat" && !type.endsWith("svd");
}

/** The dimensions of a saved tensor that must agree across adapters: all but the rank axis. */
function fixedDims(name: string, shape: readonly number[]): (number | null)[] {
  // lora_A / lora_embedding_A: [r, in, …]; lora_B / lora_embedding_B: [out, r, …] (conv: [out, r, k, k]).
  if (/\.lora_(embedding_)?A(\.weight)?$/.test(name)) return shape.map((d, i) => (i === 0 ? null : d));
  if (/\.lora_(embedding_)?B(\.weight)?$/.test(name)) return shape.map((d, i) => (i === 1 ? null : d));
  return [...shape];
}

function baseModel(a: AdapterSummary): string | null {
  const b = a.config.base_model_name_or_path;
  return typeof b === "string" && b !== "" ? b.replace(/\/+$/, "") : null;
}

function effectiveRank(a: AdapterSummary): number {
  const r = Number(a.config.r);
  const pattern = a.config.rank_pattern;
  const extra = pattern && typeof pattern === "object" ? Object.values(pattern as Record<string, unknown>).map(Number) : [];
  return Math.max(r, ...extra);
}

/**
 * Throws MergeCheckError on adapters that cannot be merged with `type`; returns warnings (a
 * base-model mismatch under `force`). Order: method, base model, shapes, ranks.
 */
export function checkMergeable(
  adapters: readonly AdapterSummary[],
  type: CombinationType,
  opts: {
    force?: boolean;
    /** Whether two differently named base models are the same weights (e.g. by fingerprint). */
    sameBase?: (a: string, b: string) => boolean;
  } = {},
): string[] {
  const warnings: string[] = [];
  const first = adapters[0];
  const method = String(first.config.peft_type);
  for (const a of adapters.slice(1)) {
    const t = String(a.config.peft_type);
    if (t !== method)
      throw new MergeCheckError(
        `peft_type: ${method} in ${first.label}, ${t} in ${a.label}; only adapters of one method merge (and that method must be LORA)`,
      );
  }
  if (method !== "LORA")
    throw new MergeCheckError(
      `peft_type: ${method} in ${first.label}; merge-adapters combines LoRA adapters only (PEFT's add_weighted_adapter)`,
    );

  const base0 = baseModel(first);
  for (const a of adapters.slice(1)) {
    const b = baseModel(a);
    if (b === base0 || (b !== null && base0 !== null && opts.sameBase?.(base0, b))) continue;
    const msg = `base_model_name_or_path: ${JSON.stringify(base0)} in ${first.label}, ${JSON.stringify(b)} in ${a.label}`;
    if (!opts.force) throw new MergeCheckError(`${msg}; adapters of different base models do not merge (--force merges them anyway)`);
    warnings.push(`${msg}; merging anyway (--force)`);
  }

  for (const a of adapters.slice(1))
    for (const [name, shape] of a.shapes) {
      const s0 = first.shapes.get(name);
      if (!s0) continue;
      const f0 = fixedDims(name, s0);
      const f1 = fixedDims(name, shape);
      if (f0.length !== f1.length || f0.some((d, i) => d !== f1[i]))
        throw new MergeCheckError(`${name}: ${dims(s0)} in ${first.label}, ${dims(shape)} in ${a.label}`);
    }

  if (needsEqualRank(type)) {
    const r0 = effectiveRank(first);
    for (const a of adapters.slice(1)) {
      const r = effectiveRank(a);
      if (r !== r0)
        throw new MergeCheckError(
          `r: ${r0} in ${first.label}, ${r} in ${a.label} (largest of r and rank_pattern); --method ${type} needs equal ranks (cat and the *_svd methods do not)`,
        );
    }
  }
  return warnings;
}
