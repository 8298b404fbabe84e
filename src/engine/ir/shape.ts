import { ShapeError } from "../errors.js";

/**
 * A dimension: a fixed size, or a symbol such as "batch" or "seq" bound when the graph runs.
 * A symbolic dim may be a product written "batch*seq" or "4*batch" (canonical form: one number
 * factor first if not 1, then symbol names sorted), which is what flattening symbolic dims gives,
 * or a sum written "past+seq" (terms sorted, a number term last), which is what concatenating
 * along a symbolic axis gives (a KV cache). Sums are atomic names as far as products go.
 */
export type Dim = number | string;
export type Shape = readonly Dim[];

export function shapeStr(s: Shape): string {
  return `[${s.join(", ")}]`;
}

export function isStatic(s: Shape): s is readonly number[] {
  return s.every((d) => typeof d === "number");
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Number of elements of a fully static shape. */
export function numel(s: readonly number[]): number {
  let n = 1;
  for (const d of s) n *= d;
  return n;
}

/** Element count as (product of fixed dims, sorted list of symbols) so symbolic shapes can be compared. */
export function symbolicSize(s: Shape): { fixed: number; symbols: string[] } {
  let fixed = 1;
  const symbols: string[] = [];
  for (const d of s) {
    if (typeof d === "number") fixed *= d;
    else if (d.includes("+")) symbols.push(d);
    else {
      for (const f of d.split("*")) {
        const n = Number(f);
        if (Number.isInteger(n) && f.trim() !== "") fixed *= n;
        else symbols.push(f);
      }
    }
  }
  symbols.sort();
  return { fixed, symbols };
}

/** The canonical dim for a product of a fixed part and symbols (a number when there are none). */
export function productDim(fixed: number, symbols: readonly string[]): Dim {
  if (symbols.length === 0) return fixed;
  const sorted = [...symbols].sort();
  return fixed === 1 ? sorted.join("*") : `${fixed}*${sorted.join("*")}`;
}

/** The canonical dim for the sum of dims (concatenation along an axis). */
export function sumDims(dims: readonly Dim[]): Dim {
  let fixed = 0;
  const terms: string[] = [];
  for (const d of dims) {
    if (typeof d === "number") fixed += d;
    else terms.push(...d.split("+").map((t) => t.trim()));
  }
  const named = terms.filter((t) => !/^\d+$/.test(t));
  for (const t of terms) if (/^\d+$/.test(t)) fixed += Number(t);
  if (named.length === 0) return fixed;
  named.sort();
  return fixed === 0 ? named.join("+") : `${named.join("+")}+${fixed}`;
}

/** The factors of a symbolic dim: its fixed part and its symbol names. */
export function dimFactors(d: Dim): { fixed: number; symbols: string[] } {
  return symbolicSize([d]);
}

export function sameSize(a: Shape, b: Shape): boolean {
  const x = symbolicSize(a);
  const y = symbolicSize(b);
  return x.fixed === y.fixed && x.symbols.join(",") === y.symbols.join(",");
}

/** NumPy broadcasting of two shapes; `op` names the op for the error message. */
export function broadcastShapes(a: Shape, b: Shape, op: string): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)];
    const db = i < n - b.length ? 1 : b[i - (n - b.length)];
    if (da === db || db === 1) out.push(da);
    else if (da === 1) out.push(db);
    else throw new ShapeError(`${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast (dim ${da} vs ${db})`);
  }
  return out;
}

export function normAxis(axis: number, rank: number, op: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new ShapeError(`${op}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

/** Resolves symbolic dims with concrete sizes. */
export function bindShape(s: Shape, bindings: ReadonlyMap<string, number> | Record<string, number>): number[] {
  const get = (name: string) => (bindings instanceof Map ? bindings.get(name) : (bindings as Record<string, number>)[name]);
  return s.map((d) => {
    if (typeof d === "number") return d;
    const direct = get(d);
    if (direct !== undefined) return direct;
    const { fixed, symbols } = dimFactors(d);
    let v = fixed;
    for (const sym of symbols) {
      const b = get(sym);
      if (b === undefined) throw new ShapeError(`symbolic dimension "${sym}" has no value`);
      v *= b;
    }
    return v;
  });
}
