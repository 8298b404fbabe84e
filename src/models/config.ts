/** Reading typed fields out of a Hugging Face config.json, with errors that name the field. */
import type { Tensor } from "../engine/trace/tensor.js";
import { ModelError } from "../nn/context.js";

export type RawConfig = Readonly<Record<string, unknown>>;

export class ConfigReader {
  constructor(
    readonly raw: RawConfig,
    private readonly file = "config.json",
  ) {}

  private fail(field: string, want: string): never {
    throw new ModelError(`${this.file}: field "${field}" must be ${want}, got ${JSON.stringify(this.raw[field])}`);
  }

  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }

  int(field: string, dflt?: number): number {
    const v = this.raw[field];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.fail(field, "a positive integer (it is required)");
      return dflt;
    }
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) this.fail(field, "a non-negative integer");
    return v;
  }

  num(field: string, dflt?: number): number {
    const v = this.raw[field];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.fail(field, "a number (it is required)");
      return dflt;
    }
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(field, "a finite number");
    return v;
  }

  bool(field: string, dflt: boolean): boolean {
    const v = this.raw[field];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") this.fail(field, "true or false");
    return v;
  }

  str(field: string, dflt?: string): string {
    const v = this.raw[field];
    if (v === undefined || v === null) {
      if (dflt === undefined) this.fail(field, "a string (it is required)");
      return dflt;
    }
    if (typeof v !== "string") this.fail(field, "a string");
    return v;
  }

  /**
   * A positive integer where an explicit null means "none" (e.g. sliding_window): `absent` is what
   * transformers' config class defaults to when the field is missing, which may differ from null.
   */
  positiveIntOrNull(field: string, absent: number | null): number | null {
    if (!(field in this.raw)) return absent;
    const v = this.raw[field];
    if (v === null) return null;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) this.fail(field, "a positive integer or null");
    return v;
  }

  /** An optional list of strings (e.g. layer_types); null when absent. */
  strList(field: string): string[] | null {
    const v = this.raw[field];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) this.fail(field, "a list of strings");
    return v as string[];
  }

  /** An optional integer or list of integers (e.g. eos_token_id). */
  intList(field: string): number[] {
    const v = this.raw[field];
    if (v === undefined || v === null) return [];
    if (typeof v === "number" && Number.isInteger(v)) return [v];
    if (Array.isArray(v) && v.every((x) => typeof x === "number" && Number.isInteger(x))) return v as number[];
    this.fail(field, "an integer or a list of integers");
  }

  obj(field: string): Record<string, unknown> | null {
    const v = this.raw[field];
    if (v === undefined || v === null) return null;
    if (typeof v !== "object" || Array.isArray(v)) this.fail(field, "an object");
    return v as Record<string, unknown>;
  }

  /** Fails unless `field` divides evenly. */
  divisible(a: string, av: number, b: string, bv: number): void {
    if (bv === 0 || av % bv !== 0) throw new ModelError(`${this.file}: "${a}" (${av}) must be a multiple of "${b}" (${bv})`);
  }
}

export type Activation = "silu" | "gelu" | "gelu_tanh" | "relu";

/** Applies an activation named by activationName. */
export function activate(x: Tensor, act: Activation): Tensor {
  if (act === "silu") return x.silu();
  if (act === "gelu") return x.gelu();
  if (act === "gelu_tanh") return x.gelu("tanh");
  return x.relu();
}

/** The activation functions config.json may name, as transformers' ACT2FN. */
export function activationName(name: string, file = "config.json"): Activation {
  switch (name) {
    case "silu":
    case "swish":
      return "silu";
    case "gelu":
      return "gelu";
    case "gelu_new":
    case "gelu_pytorch_tanh":
    case "gelu_fast":
      return "gelu_tanh";
    case "relu":
      return "relu";
    default:
      throw new ModelError(`${file}: unsupported activation "${name}" (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)`);
  }
}
