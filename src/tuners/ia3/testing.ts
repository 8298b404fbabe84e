/**
 * Test helpers for the IA3, SSF, BitFit and LN-tuning tests (not a test file itself): run one
 * piece of a model's forward (e.g. a single linear layer) through an adapter's context on the
 * reference interpreter, so its output can be compared with a closed form computed in plain JS.
 */
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { type ForwardContext, WeightContext } from "../../nn/context.js";
import type { PeftModel } from "../peft-model.js";

/**
 * `fn(ctx, x)` with `ctx` = the plain weight context wrapped by adapter `name`; with `rows` the
 * adapter applies only to the rows whose mask entry is 1 (mixed batch).
 */
export function probe(
  peft: PeftModel,
  name: string,
  fn: (ctx: ForwardContext, x: Tensor) => Tensor,
  x: HostTensor,
  rows?: number[],
): Float32Array {
  const a = peft.adapter(name);
  const weights = [...peft.base.weights];
  const tensors = [...a.tensors];
  const mask = rows ? [hostTensor("f32", [rows.length], Float32Array.from(rows))] : [];
  const inputs = [x, ...weights.map(([, t]) => t), ...tensors.map(([, t]) => t), ...mask];
  const g = trace(
    (xt, ...rest) => {
      const w = new Map(weights.map(([k], i) => [k, rest[i]]));
      const at = new Map(tensors.map(([k], i) => [k, rest[weights.length + i]]));
      const base = new WeightContext((n) => w.get(n), new Set(w.keys()));
      const ctx = a.tuner.wrap(base, peft.info, a.config, {
        adapterName: name,
        tensor: (k) => at.get(k) as Tensor,
        rowMask: rows ? rest[rest.length - 1] : null,
        training: false,
        seed: null,
      });
      return fn(ctx, xt);
    },
    inputs.map((t) => ({ dtype: t.dtype, shape: t.shape })),
  );
  return interpret(g, inputs)[0].data as Float32Array;
}

/** A random f32 tensor (values in [-1, 1)). */
export function randomTensor(shape: number[]): HostTensor {
  const n = shape.reduce((p, d) => p * d, 1);
  return hostTensor(
    "f32",
    shape,
    Float32Array.from({ length: n }, () => Math.random() * 2 - 1),
  );
}

/** y[r, o] = Σ_i x[r, i]·W[o, i] (+ b[o]) for W stored [out, in], or [in, out] when fanInFanOut. */
export function linearJs(x: Float32Array, rows: number, w: HostTensor, b: HostTensor | null, fanInFanOut: boolean): Float64Array {
  const [d0, d1] = w.shape;
  const inF = fanInFanOut ? d0 : d1;
  const outF = fanInFanOut ? d1 : d0;
  const wd = w.data as Float32Array;
  const y = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      let s = b ? (b.data as Float32Array)[o] : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * wd[fanInFanOut ? i * outF + o : o * inF + i];
      y[r * outF + o] = s;
    }
  return y;
}

export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
