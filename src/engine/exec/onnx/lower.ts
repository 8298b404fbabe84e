/**
 * One lowering per IR primitive onto standard ONNX opset-18 ops that ONNX Runtime's CPU provider
 * implements. Where ORT lacks a kernel for a dtype the IR allows, the lowering computes in a wider
 * dtype and casts back (documented per op in DTYPE_WORKAROUNDS below).
 */

import { createHash } from "node:crypto";
import { BackendError } from "../../errors.js";
import { allocArray, type DType, type TypedArray } from "../../ir/dtype.js";
import type { Node } from "../../ir/graph.js";
import { f32ToF16, type HostTensor } from "../../ir/host.js";
import type { OpName, ValueType } from "../../ir/ops.js";
import { RNG } from "../../ir/random.js";
import { type Dim, dimFactors } from "../../ir/shape.js";
import { type AttrSpec, type NodeSpec, onnxDType, type TensorSpec } from "./onnx-proto.js";

/** Where a symbolic dimension can be read at run time: axis `axis` of graph input `input`. */
export interface SymbolSource {
  input: string;
  axis: number;
}

/** Accumulates ONNX nodes and initializers; hands out fresh names and shared constants. */
export class OnnxBuilder {
  readonly nodes: NodeSpec[] = [];
  readonly initializers: TensorSpec[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();
  private symCache = new Map<string, string>();
  /** Graph inputs read only for their shape (symbolic dims); they must stay graph inputs. */
  readonly shapeSources = new Set<string>();
  private shapeCache = new Map<string, string>();
  /** Name of the IR node being lowered, attached to every ONNX node for error messages. */
  context = "";

  constructor(
    /** Prefix of every generated name; chosen by the emitter not to clash with graph names. */
    readonly prefix: string,
    readonly symbols: ReadonlyMap<string, SymbolSource>,
  ) {}

  fresh(hint: string): string {
    return `${this.prefix}${hint}_${this.counter++}`;
  }

  /** Adds a node; `outs` is a list of output names or a count of fresh outputs. */
  node(opType: string, inputs: readonly string[], attrs: AttrSpec[] = [], outs: readonly string[] | number = 1): string[] {
    const outputs = typeof outs === "number" ? Array.from({ length: outs }, () => this.fresh(opType.toLowerCase())) : [...outs];
    const name = this.fresh(this.context ? `${this.context}/${opType}` : opType);
    this.nodes.push({ opType, inputs, outputs, name, attrs });
    return outputs;
  }

  /** Single-output node; writes to `out` when given. */
  op(opType: string, inputs: readonly string[], attrs: AttrSpec[] = [], out?: string): string {
    return this.node(opType, inputs, attrs, out === undefined ? 1 : [out])[0];
  }

  initializer(dtype: DType, dims: readonly number[], data: TypedArray, hint = "const"): string {
    const name = this.fresh(hint);
    this.initializers.push({ name, dtype, dims: [...dims], data });
    return name;
  }

  private readonly contentCache = new Map<string, string>();

  /**
   * An initializer shared by every constant with the same dtype, shape and bytes. Traced graphs
   * repeat the same scalars thousands of times, and ORT's session setup grows faster than
   * linearly with the number of initializers.
   */
  sharedInitializer(dtype: DType, dims: readonly number[], data: TypedArray): string {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const key = `${dtype}|${dims.join(",")}|${bytes.byteLength <= 64 ? Buffer.from(bytes).toString("hex") : createHash("sha1").update(bytes).digest("hex")}`;
    let name = this.contentCache.get(key);
    if (name === undefined) {
      name = this.initializer(dtype, dims, data, "const");
      this.contentCache.set(key, name);
    }
    return name;
  }

  /** A small constant, shared between uses with the same value. */
  constant(dtype: DType, dims: readonly number[], values: readonly (number | bigint)[]): string {
    const key = `${dtype}|${dims.join(",")}|${values.join(",")}`;
    let name = this.constCache.get(key);
    if (name === undefined) {
      const data = allocArray(dtype, values.length);
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (data instanceof BigInt64Array) data[i] = BigInt(v);
        else if (dtype === "f16") data[i] = f32ToF16(Number(v));
        else if (dtype === "bool") data[i] = Number(v) !== 0 ? 1 : 0;
        else data[i] = Number(v);
      }
      name = this.initializer(dtype, dims, data, `c_${dtype}`);
      this.constCache.set(key, name);
    }
    return name;
  }

  scalar(dtype: DType, v: number | bigint): string {
    return this.constant(dtype, [], [v]);
  }

  i64s(values: readonly number[]): string {
    return this.constant("i64", [values.length], values);
  }

  /**
   * A [1]-shaped int64 tensor holding the run-time size of a symbolic dimension. A product dim such
   * as "4*batch*seq" is read directly when some input carries it, else multiplied from its factors.
   */
  symDim(sym: string): string {
    let name = this.symCache.get(sym);
    if (name !== undefined) return name;
    const src = this.symbols.get(sym);
    if (src) {
      this.shapeSources.add(src.input);
      name = this.op("Shape", [src.input], [attrInt("start", src.axis), attrInt("end", src.axis + 1)]);
    } else if (sym.includes("+")) {
      // A sum dim ("past+seq", from concatenating a KV cache) is the sum of its terms.
      const terms = sym.split("+");
      const parts = terms.map((t) => (/^\d+$/.test(t) ? this.i64s([Number(t)]) : this.symDim(t)));
      name = parts.slice(1).reduce((acc, p) => this.op("Add", [acc, p]), parts[0]);
    } else {
      const { fixed, symbols } = dimFactors(sym);
      if (symbols.length === 1 && symbols[0] === sym) {
        throw new BackendError(
          `ONNX export: symbolic dimension "${sym}" is not an axis of any graph input, so its size is unknown at run time`,
        );
      }
      let acc = this.symDim(symbols[0]);
      for (const f of symbols.slice(1)) acc = this.op("Mul", [acc, this.symDim(f)]);
      name = fixed === 1 ? acc : this.op("Mul", [acc, this.i64s([fixed])]);
    }
    this.symCache.set(sym, name);
    return name;
  }

  /** A 1-D int64 tensor holding `shape`: an initializer when static, else built from input shapes. */
  shapeTensor(shape: readonly Dim[]): string {
    if (shape.every((d) => typeof d === "number")) return this.i64s(shape as number[]);
    const key = shape.join(",");
    let name = this.shapeCache.get(key);
    if (name === undefined) {
      const pieces: string[] = [];
      let run: number[] = [];
      for (const d of shape) {
        if (typeof d === "number") run.push(d);
        else {
          if (run.length) pieces.push(this.i64s(run));
          run = [];
          pieces.push(this.symDim(d));
        }
      }
      if (run.length) pieces.push(this.i64s(run));
      name = pieces.length === 1 ? pieces[0] : this.op("Concat", pieces, [attrInt("axis", 0)]);
      this.shapeCache.set(key, name);
    }
    return name;
  }

  /** Element count of `shape` as an int64 scalar. */
  numelScalar(shape: readonly Dim[]): string {
    let fixed = 1;
    const syms: string[] = [];
    for (const d of shape) {
      if (typeof d === "number") fixed *= d;
      else syms.push(d);
    }
    if (syms.length === 0) return this.scalar("i64", fixed);
    let acc = this.symDim(syms[0]);
    for (const s of syms.slice(1)) acc = this.op("Mul", [acc, this.symDim(s)]);
    if (fixed !== 1) acc = this.op("Mul", [acc, this.i64s([fixed])]);
    return this.op("Reshape", [acc, this.i64s([])]);
  }

  cast(x: string, to: DType, out?: string): string {
    return this.op("Cast", [x], [attrInt("to", onnxDType(to))], out);
  }
}

export const attrInt = (name: string, i: number | bigint): AttrSpec => ({ name, type: "int", i });
export const attrInts = (name: string, ints: readonly number[]): AttrSpec => ({ name, type: "ints", ints });
export const attrStr = (name: string, s: string): AttrSpec => ({ name, type: "string", s });

/** What a lowering sees of one IR node. */
export interface LowerArgs {
  readonly node: Node;
  /** ONNX names of the node's inputs. */
  readonly ins: readonly string[];
  /** ONNX names the node's outputs must be written to (unless the lowering returns aliases). */
  readonly outs: readonly string[];
  readonly inTypes: readonly ValueType[];
  readonly outTypes: readonly ValueType[];
  // biome-ignore lint/suspicious/noExplicitAny: attrs are per-op; each lowering reads its own.
  readonly attrs: any;
  /** Emits a large constant as a graph input fed at run time instead of an initializer. */
  readonly hoist: (t: HostTensor) => string;
}

/**
 * A lowering either writes the node's outputs to `outs` (returns void) or returns existing ONNX names
 * that already hold the outputs (pure aliases: constants, identities), which saves a copy.
 */
export type Lowering = (b: OnnxBuilder, a: LowerArgs) => string[] | undefined;

/** Constants up to this size are initializers; larger ones are hoisted to inputs (see emit.ts). */
export const HOIST_BYTES = 1 << 20;

/**
 * Computes `fn` in `compute` dtype when `dt` is not in `supported`, casting inputs listed in
 * `castIdx` (all when undefined) and the result(s) back. Used for ORT kernels missing a dtype.
 */
function viaDType(
  b: OnnxBuilder,
  a: LowerArgs,
  supported: readonly DType[],
  compute: DType,
  fn: (ins: string[], outs: readonly string[] | undefined) => string[],
  castIdx: (i: number) => boolean = () => true,
  castOut: (j: number) => boolean = () => true,
): string[] | undefined {
  const dt = a.inTypes[0].dtype;
  if (supported.includes(dt)) {
    fn([...a.ins], a.outs);
    return undefined;
  }
  const ins = a.ins.map((n, i) => (castIdx(i) ? b.cast(n, compute) : n));
  const res = fn(ins, undefined);
  res.forEach((r, j) => {
    if (castOut(j)) b.cast(r, a.outTypes[j].dtype, a.outs[j]);
    else b.op("Identity", [r], [], a.outs[j]);
  });
  return undefined;
}

const NUMERIC: readonly DType[] = ["f32", "f64", "i32", "i64"];

/** Plain one-to-one mapping onto an ONNX op (dtypes supported natively). */
function direct(opType: string, attrs: (a: LowerArgs) => AttrSpec[] = () => []): Lowering {
  return (b, a) => {
    b.node(opType, a.ins, attrs(a), a.outs);
    return undefined;
  };
}

function unaryFloat(opType: string): Lowering {
  return direct(opType);
}

/** Ordering comparisons: ORT has no bool kernels, so bools compare as int32. */
function compare(opType: string, negate = false): Lowering {
  return (b, a) => {
    let ins = [...a.ins];
    const dt = a.inTypes[0].dtype;
    if (dt === "bool" && opType !== "Equal") ins = ins.map((n) => b.cast(n, "i32"));
    if (negate) b.op("Not", [b.op(opType, ins)], [], a.outs[0]);
    else b.op(opType, ins, [], a.outs[0]);
    return undefined;
  };
}

function reduce(opType: string): Lowering {
  return (b, a) => {
    const axes = a.attrs.axes as number[];
    const rank = a.inTypes[0].shape.length;
    // Empty axes means "reduce nothing" in the IR but "reduce everything" in ONNX.
    if (axes.length === 0) {
      b.op("Identity", [a.ins[0]], [], a.outs[0]);
      return undefined;
    }
    const norm = axes.map((x) => (x < 0 ? x + rank : x));
    b.op(opType, [a.ins[0], b.i64s(norm)], [attrInt("keepdims", a.attrs.keepdims ? 1 : 0)], a.outs[0]);
    return undefined;
  };
}

/** Moves axis `axis` of a rank-`r` tensor to the front. */
function frontPerm(axis: number, r: number): number[] {
  return [axis, ...[...Array(r).keys()].filter((i) => i !== axis)];
}

function invertPerm(p: readonly number[]): number[] {
  const inv = new Array<number>(p.length);
  p.forEach((v, i) => {
    inv[v] = i;
  });
  return inv;
}

const lowerScatterAdd: Lowering = (b, a) => {
  const axis = a.attrs.axis as number;
  const base = a.inTypes[0];
  const r = base.shape.length;
  const ir = a.inTypes[1].shape.length;
  return viaDType(
    b,
    a,
    NUMERIC,
    base.dtype === "bool" ? "i32" : "f32",
    ([x, idx, upd], outs) => {
      // ScatterND scatters along leading axes only: bring `axis` (and the index dims of the updates)
      // to the front, scatter with indices[..., 1], and move the axis back.
      const idx64 = a.inTypes[1].dtype === "i64" ? idx : b.cast(idx, "i64");
      const idxN = b.op("Unsqueeze", [idx64, b.i64s([ir])]);
      if (axis === 0) {
        return [b.op("ScatterND", [x, idxN, upd], [attrStr("reduction", "add")], outs?.[0])];
      }
      const p = frontPerm(axis, r);
      const xt = b.op("Transpose", [x], [attrInts("perm", p)]);
      // updates: [pre(axis), I(ir), post] -> [I, pre, post]
      const ur = a.inTypes[2].shape.length;
      const up = [...Array(ir).keys()].map((i) => axis + i);
      const upPerm = [...up, ...[...Array(ur).keys()].filter((i) => i < axis || i >= axis + ir)];
      const ut = b.op("Transpose", [upd], [attrInts("perm", upPerm)]);
      const s = b.op("ScatterND", [xt, idxN, ut], [attrStr("reduction", "add")]);
      return [b.op("Transpose", [s], [attrInts("perm", invertPerm(p))], outs?.[0])];
    },
    (i) => i !== 1,
  );
};

const lowerPutAlongAxisAdd: Lowering = (b, a) => {
  const base = a.inTypes[0];
  return viaDType(
    b,
    a,
    NUMERIC,
    base.dtype === "bool" ? "i32" : "f32",
    ([x, idx, upd], outs) => [
      b.op("ScatterElements", [x, idx, upd], [attrInt("axis", a.attrs.axis), attrStr("reduction", "add")], outs?.[0]),
    ],
    (i) => i !== 1,
  );
};

function padValue(dt: DType, v: number): number {
  if (dt === "bool") return v !== 0 ? 1 : 0;
  if (dt === "i32" || dt === "i64") return Math.trunc(v);
  return v;
}

const lowerIota: Lowering = (b, a) => {
  const shape = a.attrs.shape as Dim[];
  const axis = a.attrs.axis as number;
  const dt = a.attrs.dtype as DType;
  const rangeDT: DType = NUMERIC.includes(dt) ? dt : "i64";
  const n = shape[axis];
  const limit = typeof n === "number" ? b.scalar(rangeDT, n) : castIf(b, b.op("Reshape", [b.symDim(n), b.i64s([])]), "i64", rangeDT);
  let v = b.op("Range", [b.scalar(rangeDT, 0), limit, b.scalar(rangeDT, 1)]);
  if (rangeDT !== dt) v = b.cast(v, dt);
  const r = shape.length;
  if (r === 1) {
    b.op("Identity", [v], [], a.outs[0]);
    return undefined;
  }
  const unit = Array.from({ length: r }, (_, i) => (i === axis ? -1 : 1));
  const col = b.op("Reshape", [v, b.i64s(unit)]);
  b.op("Expand", [col, b.shapeTensor(shape)], [], a.outs[0]);
  return undefined;
};

function castIf(b: OnnxBuilder, x: string, from: DType, to: DType): string {
  return from === to ? x : b.cast(x, to);
}

// ---- counter-based RNG (mirrors src/engine/ir/random.ts) ----

const TWO32 = 4294967296;

/** The 32-bit hash of int64 counters `c` (each < 2^32) under the reduced, pre-multiplied seed term. */
function hashBits(b: OnnxBuilder, c: string, seedTerm: string): string {
  const i64 = (v: number) => b.scalar("i64", v);
  const mod = (x: string) => b.op("Mod", [x, i64(TWO32)], [attrInt("fmod", 0)]);
  // x ^ (x >> sh): both operands are in [0, 2^32), so the XOR is too and needs no Mod.
  const shiftXor = (x: string, sh: number) => b.op("BitwiseXor", [x, b.op("Div", [x, i64(2 ** sh)])]);
  let x = mod(b.op("Mul", [c, i64(RNG.K_INDEX)]));
  x = mod(b.op("Add", [b.op("Add", [x, seedTerm]), i64(RNG.OFFSET)]));
  x = shiftXor(x, RNG.SHIFT1);
  x = mod(b.op("Mul", [x, i64(RNG.K_MIX1)]));
  x = shiftXor(x, RNG.SHIFT2);
  x = mod(b.op("Mul", [x, i64(RNG.K_MIX2)]));
  return shiftXor(x, RNG.SHIFT3);
}

/** (floor(bits / 256) + plusOne) · 2^-24 in dtype dt: exact in f32 and f64. */
function bitsToUnit(b: OnnxBuilder, bits: string, dt: DType, plusOne: boolean): string {
  let q = b.op("Div", [bits, b.scalar("i64", 256)]);
  if (plusOne) q = b.op("Add", [q, b.scalar("i64", 1)]);
  return b.op("Mul", [b.cast(q, dt), b.scalar(dt, 2 ** -24)]);
}

function lowerRandom(normal: boolean): Lowering {
  return (b, a) => {
    const shape = a.attrs.shape as Dim[];
    const dt = a.attrs.dtype as DType;
    const i64 = (v: number) => b.scalar("i64", v);
    const seed32 = b.op("Mod", [a.ins[0], i64(TWO32)], [attrInt("fmod", 0)]);
    let seedTerm = b.op("Mod", [b.op("Mul", [seed32, i64(RNG.K_SEED)]), i64(TWO32)], [attrInt("fmod", 0)]);
    // The counters 0..n-1 are an exclusive CumSum of ones computed from the seed input, not a constant
    // Range: ORT's constant folding would turn the counter chain (Range, ·2, +1, ·K) into int64
    // initializers of numel elements each, about 40 bytes per generated value held for the session's
    // life (MeZO's z over a whole model). A Range with runtime bounds avoids that too, but its output
    // shape is then unknown and session creation took 20× the CPU (4-layer SmolLM2 MeZO graph: 1.6 s →
    // 34 s); Expand to a fixed length keeps the shapes static.
    const nVec = shape.every((d) => typeof d === "number")
      ? b.shapeTensor([(shape as number[]).reduce((p, d) => p * d, 1)])
      : b.op("Reshape", [b.numelScalar(shape), b.shapeTensor([1])]);
    // A batch of seeds (rank > 0) gives one stream per seed: the seed term is a column [m, 1] against
    // the counters [n], and the hash is [m, n]. `one` must be a scalar that depends on the seed; a
    // sum of seed·0 is 0 even for an empty batch.
    const seedRank = a.inTypes[0].shape.length;
    const dep = b.op("ReduceSum", [b.op("Mul", [seed32, i64(0)])], [attrInt("keepdims", 0)]);
    const one = b.op("Add", [dep, i64(1)]);
    const idx = b.op("CumSum", [b.op("Expand", [one, nVec]), i64(0)], [attrInt("exclusive", 1)]);
    if (seedRank > 0) seedTerm = b.op("Reshape", [seedTerm, b.i64s([-1, 1])]);
    let flat: string;
    if (!normal) {
      flat = bitsToUnit(b, hashBits(b, idx, seedTerm), dt, false);
    } else {
      // Counters 2i and 2i+1 wrap mod 2^32 as `>>> 0` does in random.ts (and keep Mul in range).
      const c1 = b.op("Mod", [b.op("Mul", [idx, i64(2)]), i64(TWO32)], [attrInt("fmod", 0)]);
      const c2 = b.op("Mod", [b.op("Add", [c1, i64(1)]), i64(TWO32)], [attrInt("fmod", 0)]);
      const u1 = bitsToUnit(b, hashBits(b, c1, seedTerm), dt, true);
      const u2 = bitsToUnit(b, hashBits(b, c2, seedTerm), dt, false);
      const rad = b.op("Sqrt", [b.op("Mul", [b.op("Log", [u1]), b.scalar(dt, -2)])]);
      const ang = b.op("Cos", [b.op("Mul", [u2, b.scalar(dt, 2 * Math.PI)])]);
      flat = b.op("Mul", [rad, ang]);
    }
    b.op("Reshape", [flat, b.shapeTensor([...a.inTypes[0].shape, ...shape])], [attrInt("allowzero", 1)], a.outs[0]);
    return undefined;
  };
}

// ---- erf in float64 ----

/**
 * ORT has no double Erf kernel. Computing in f32 would cost f64 gradchecks their precision, so erf is
 * built from double ops: for |x| < 2.5 the all-positive series erf(x) = 2/√π e^{-x²} Σ (2x²)^k x / (2k+1)!!
 * (40 terms; no cancellation), beyond that 1 - erfc(x) with erfc's continued fraction (depth 30).
 * Both agree with reference values to ~1e-16.
 */
function erfF64(b: OnnxBuilder, x: string, out: string): void {
  const c = (v: number) => b.scalar("f64", v);
  const SPLIT = 2.5;
  const ax = b.op("Abs", [x]);
  const small = b.op("Less", [ax, c(SPLIT)]);
  // series branch on min(|x|, SPLIT)
  const xs = b.op("Min", [ax, c(SPLIT)]);
  const x2 = b.op("Mul", [xs, xs]);
  const y = b.op("Mul", [x2, c(2)]);
  let t = c(1);
  for (let k = 40; k >= 1; k--) t = b.op("Add", [b.op("Mul", [b.op("Mul", [y, t]), c(1 / (2 * k + 1))]), c(1)]);
  const ex2 = b.op("Exp", [b.op("Neg", [x2])]);
  const ser = b.op("Mul", [b.op("Mul", [b.op("Mul", [ex2, xs]), t]), c(2 / Math.sqrt(Math.PI))]);
  // continued-fraction branch on max(|x|, SPLIT)
  const xl = b.op("Max", [ax, c(SPLIT)]);
  let d = xl;
  for (let k = 30; k >= 1; k--) d = b.op("Add", [xl, b.op("Div", [c(k / 2), d])]);
  const el = b.op("Exp", [b.op("Neg", [b.op("Mul", [xl, xl])])]);
  const erfc = b.op("Div", [b.op("Mul", [el, c(1 / Math.sqrt(Math.PI))]), d]);
  const big = b.op("Sub", [c(1), erfc]);
  const mag = b.op("Where", [small, ser, big]);
  b.op("Mul", [mag, b.op("Sign", [x])], [], out);
}

export const LOWERINGS: Readonly<Record<OpName, Lowering>> = {
  exp: unaryFloat("Exp"),
  log: unaryFloat("Log"),
  sqrt: unaryFloat("Sqrt"),
  rsqrt: (b, a) => {
    b.op("Reciprocal", [b.op("Sqrt", [a.ins[0]])], [], a.outs[0]);
    return undefined;
  },
  tanh: unaryFloat("Tanh"),
  erf: (b, a) => {
    if (a.inTypes[0].dtype === "f64") erfF64(b, a.ins[0], a.outs[0]);
    else b.op("Erf", [a.ins[0]], [], a.outs[0]);
    return undefined;
  },
  sigmoid: unaryFloat("Sigmoid"),
  sin: unaryFloat("Sin"),
  cos: unaryFloat("Cos"),
  reciprocal: unaryFloat("Reciprocal"),
  floor: unaryFloat("Floor"),
  round: unaryFloat("Round"),
  neg: direct("Neg"),
  abs: direct("Abs"),
  sign: direct("Sign"),
  add: direct("Add"),
  sub: direct("Sub"),
  mul: direct("Mul"),
  div: direct("Div"),
  pow: direct("Pow"),
  maximum: direct("Max"),
  minimum: direct("Min"),
  lt: compare("Less"),
  le: compare("LessOrEqual"),
  gt: compare("Greater"),
  ge: compare("GreaterOrEqual"),
  eq: compare("Equal"),
  ne: compare("Equal", true),
  and: direct("And"),
  or: direct("Or"),
  not: direct("Not"),
  where: (b, a) => {
    if (a.inTypes[1].dtype !== "bool") {
      b.op("Where", a.ins, [], a.outs[0]);
      return undefined;
    }
    // ORT has no bool Where kernel: (c ∧ x) ∨ (¬c ∧ y), which broadcasts the same way.
    const [cnd, x, y] = a.ins;
    b.op("Or", [b.op("And", [cnd, x]), b.op("And", [b.op("Not", [cnd]), y])], [], a.outs[0]);
    return undefined;
  },
  matmul: direct("MatMul"),
  reduce_sum: reduce("ReduceSum"),
  reduce_max: reduce("ReduceMax"),
  argmax: (b, a) =>
    viaDType(
      b,
      a,
      ["f32", "f64", "i32", "i64", "f16"],
      "i32",
      ([x], outs) => [
        b.op(
          "ArgMax",
          [x],
          [attrInt("axis", a.attrs.axis), attrInt("keepdims", a.attrs.keepdims ? 1 : 0), attrInt("select_last_index", 0)],
          outs?.[0],
        ),
      ],
      undefined,
      () => false,
    ),
  reshape: (b, a) => {
    b.op("Reshape", [a.ins[0], b.shapeTensor(a.attrs.shape)], [attrInt("allowzero", 1)], a.outs[0]);
    return undefined;
  },
  transpose: direct("Transpose", (a) => [attrInts("perm", a.attrs.perm)]),
  concat: direct("Concat", (a) => [attrInt("axis", a.attrs.axis)]),
  slice: (b, a) => {
    const { axis, start, end } = a.attrs as { axis: number; start: number; end: number };
    b.op("Slice", [a.ins[0], b.i64s([start]), b.i64s([end]), b.i64s([axis])], [], a.outs[0]);
    return undefined;
  },
  gather: direct("Gather", (a) => [attrInt("axis", a.attrs.axis)]),
  scatter_add: lowerScatterAdd,
  take_along_axis: direct("GatherElements", (a) => [attrInt("axis", a.attrs.axis)]),
  put_along_axis_add: lowerPutAlongAxisAdd,
  expand: (b, a) => {
    b.op("Expand", [a.ins[0], b.shapeTensor(a.attrs.shape)], [], a.outs[0]);
    return undefined;
  },
  pad: (b, a) => {
    const dt = a.inTypes[0].dtype;
    const pads = b.i64s(a.attrs.pads);
    const value = b.scalar(dt, padValue(dt, a.attrs.value));
    b.op("Pad", [a.ins[0], pads, value], [attrStr("mode", "constant")], a.outs[0]);
    return undefined;
  },
  cast: (b, a) => {
    b.cast(a.ins[0], a.attrs.to, a.outs[0]);
    return undefined;
  },
  topk: (b, a) =>
    viaDType(
      b,
      a,
      ["f32", "f64", "i32", "i64", "f16"],
      "i32",
      ([x], outs) =>
        b.node(
          "TopK",
          [x, b.i64s([a.attrs.k])],
          [attrInt("axis", a.attrs.axis), attrInt("largest", a.attrs.largest ? 1 : 0), attrInt("sorted", 1)],
          outs ?? 2,
        ),
      undefined,
      (j) => j === 0,
    ),
  cumsum: (b, a) =>
    viaDType(b, a, ["f32", "f64", "i32", "i64", "f16"], "i32", ([x], outs) => [
      b.op(
        "CumSum",
        [x, b.scalar("i64", a.attrs.axis)],
        [attrInt("exclusive", a.attrs.exclusive ? 1 : 0), attrInt("reverse", a.attrs.reverse ? 1 : 0)],
        outs?.[0],
      ),
    ]),
  trilu: (b, a) => {
    b.op("Trilu", [a.ins[0], b.scalar("i64", a.attrs.k)], [attrInt("upper", a.attrs.upper ? 1 : 0)], a.outs[0]);
    return undefined;
  },
  iota: lowerIota,
  random_uniform: lowerRandom(false),
  random_normal: lowerRandom(true),
  stop_gradient: (_b, a) => [a.ins[0]],
  custom_vjp: (_b, a) => a.ins.slice(a.attrs.nPrimals as number),
  constant: (b, a) => {
    const v = a.attrs.value as HostTensor;
    if (v.data.byteLength > HOIST_BYTES) return [a.hoist(v)];
    return [b.sharedInitializer(v.dtype, v.shape, v.data)];
  },
};

/** Input dtypes per op that ORT's CPU provider lacks, and how the lowering works around them. */
export const DTYPE_WORKAROUNDS: readonly string[] = [
  "erf f64: no ORT kernel; series + continued fraction in f64 ops",
  "lt/le/gt/ge bool: no ORT kernel; compared as int32",
  "where with bool branches: no ORT kernel; And/Or/Not",
  "argmax bool: no ORT kernel; cast to int32",
  "topk bool: no ORT kernel; cast to int32 and back",
  "cumsum bool: no ORT kernel; int32 cumsum cast back to bool (nonzero -> true)",
  "scatter_add/put_along_axis_add f16: ORT rejects reduction=add for MLFloat16; computed in f32",
  "scatter_add/put_along_axis_add bool: computed in int32, cast back (nonzero -> true)",
];
