/**
 * Weights of layers that read the same input (q/k/v projections, gate/up), stacked along the
 * output axis so inference graphs run one matrix product instead of several. At decode time
 * every ONNX node costs a few microseconds whatever its size, so fewer nodes is faster.
 *
 * The stack is a view when the members already lie next to each other in one buffer. Otherwise
 * they are copied into a new buffer once and the model's entries are re-pointed at views of it,
 * so memory is not doubled; a member that another name shares (tied weights) is left alone.
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { ModelError } from "../nn/context.js";

/** Whether `names` can be stacked: all present, f32, the same trailing shape. */
export function canStack(weights: ReadonlyMap<string, HostTensor>, names: readonly string[]): boolean {
  const ts = names.map((n) => weights.get(n));
  if (ts.some((t) => t?.dtype !== "f32" || t.shape.length === 0)) return false;
  const tail = (t: HostTensor) => t.shape.slice(1).join("x");
  return ts.every((t) => tail(t as HostTensor) === tail(ts[0] as HostTensor));
}

/** Shape of the stack of `names` (rows added up). */
export function stackedShape(weights: ReadonlyMap<string, HostTensor>, names: readonly string[]): number[] {
  const ts = names.map((n) => weights.get(n) as HostTensor);
  return [ts.reduce((a, t) => a + t.shape[0], 0), ...ts[0].shape.slice(1)];
}

function adjacent(ts: readonly HostTensor[]): boolean {
  const ds = ts.map((t) => t.data as Float32Array);
  for (let i = 1; i < ds.length; i++) {
    if (ds[i].buffer !== ds[0].buffer || ds[i].byteOffset !== ds[i - 1].byteOffset + ds[i - 1].byteLength) return false;
  }
  return true;
}

export class WeightStacks {
  private readonly memo = new Map<string, { members: HostTensor[]; value: HostTensor }>();

  constructor(private readonly weights: Map<string, HostTensor>) {}

  /** The stack of `names`, packing the members together first when they are not adjacent. */
  get(names: readonly string[]): HostTensor {
    const key = names.join("+");
    let ts = names.map((n) => {
      const t = this.weights.get(n);
      if (!t) throw new ModelError(`the model has no weight "${n}" (needed for the fused layers ${key})`);
      return t;
    });
    const hit = this.memo.get(key);
    if (hit?.members.every((t, i) => t === ts[i])) return hit.value;
    if (!canStack(this.weights, names)) throw new ModelError(`weights ${key} cannot be stacked (they need f32 and equal trailing shapes)`);
    const shape = stackedShape(this.weights, names);
    const total = ts.reduce((a, t) => a + t.data.length, 0);
    let data: Float32Array;
    if (adjacent(ts)) {
      const first = ts[0].data as Float32Array;
      data = new Float32Array(first.buffer, first.byteOffset, total);
    } else {
      data = new Float32Array(total);
      let at = 0;
      ts = ts.map((t, i) => {
        const view = data.subarray(at, at + t.data.length);
        view.set(t.data as Float32Array);
        at += t.data.length;
        if (this.sharedElsewhere(names[i], t)) return t;
        const moved = hostTensor("f32", t.shape, view);
        this.weights.set(names[i], moved);
        return moved;
      });
    }
    const value = hostTensor("f32", shape, data);
    this.memo.set(key, { members: ts, value });
    return value;
  }

  private sharedElsewhere(name: string, t: HostTensor): boolean {
    for (const [n, u] of this.weights) if (u === t && n !== name) return true;
    return false;
  }
}
