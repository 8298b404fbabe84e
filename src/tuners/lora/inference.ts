/**
 * Host-side forms of LoRA tensors for inference graphs. At decode time every LoRA site runs on a
 * single token, so its cost is per-op overhead rather than arithmetic. Layers that read the same
 * input (q/k/v, gate/up) are fused: their scaled A matrices are stacked, so one product gives
 * every site's rank-r activations, and their B matrices form one block-diagonal matrix, so one
 * more product gives all updates, added to the fused base output at once (3 ops for the group
 * instead of 4 per layer).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";

export interface FusedSite {
  /** s·A is stacked; A is [r, in]. */
  a: HostTensor;
  /** B is [out, r]. */
  b: HostTensor;
  scaling: number;
}

function f32(t: HostTensor, what: string): Float32Array {
  if (t.dtype !== "f32" || t.shape.length !== 2)
    throw new PeftConfigError(`${what}: expected a 2-D f32 tensor, got ${t.dtype} [${t.shape}]`);
  return t.data as Float32Array;
}

/** [Σr, in]: each site's s·A, in order; members without LoRA (null) add no rows. */
export function stackedScaledA(sites: readonly (FusedSite | null)[], inFeatures: number): HostTensor {
  const rows = sites.reduce((n, s) => n + (s ? s.a.shape[0] : 0), 0);
  const out = new Float32Array(rows * inFeatures);
  let at = 0;
  for (const s of sites) {
    if (!s) continue;
    const a = f32(s.a, "lora_A");
    for (let i = 0; i < a.length; i++) out[at + i] = s.scaling * a[i];
    at += a.length;
  }
  return hostTensor("f32", [rows, inFeatures], out);
}

/** [Σout, Σr]: B of each site on the diagonal; members without LoRA get zero rows of width `outs[i]`. */
export function blockDiagonalB(sites: readonly (FusedSite | null)[], outs: readonly number[]): HostTensor {
  const rank = sites.reduce((n, s) => n + (s ? s.a.shape[0] : 0), 0);
  const total = outs.reduce((a, b) => a + b, 0);
  const out = new Float32Array(total * rank);
  let row = 0;
  let col = 0;
  sites.forEach((s, i) => {
    if (s) {
      const b = f32(s.b, "lora_B");
      const r = s.b.shape[1];
      for (let o = 0; o < outs[i]; o++) for (let k = 0; k < r; k++) out[(row + o) * rank + col + k] = b[o * r + k];
      col += r;
    }
    row += outs[i];
  });
  return hostTensor("f32", [total, rank], out);
}
