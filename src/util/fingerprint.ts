/**
 * A short fingerprint of a model's weights, to tell whether two artifacts were made for the same
 * base (sparse deltas that compose must be). Not cryptographic: FNV-1a (64-bit) over each
 * weight's name, shape and up to 64 evenly spaced values, which tells apart different
 * checkpoints, sizes and architectures without reading every weight. Runs in the browser too.
 */
import type { HostTensor } from "../engine/ir/host.js";

const PRIME = 0x100000001b3n;
const MASK = 0xffffffffffffffffn;

class Fnv64 {
  private h = 0xcbf29ce484222325n;
  byte(b: number): void {
    this.h = ((this.h ^ BigInt(b & 0xff)) * PRIME) & MASK;
  }
  text(s: string): void {
    for (const b of new TextEncoder().encode(s)) this.byte(b);
    this.byte(0);
  }
  f32(v: number): void {
    const u = new Uint8Array(new Float32Array([v]).buffer);
    for (const b of u) this.byte(b);
  }
  hex(): string {
    return this.h.toString(16).padStart(16, "0");
  }
}

/** The fingerprint of a set of named weights (order-independent: names are sorted). */
export function weightsFingerprint(weights: ReadonlyMap<string, HostTensor>): string {
  const h = new Fnv64();
  for (const name of [...weights.keys()].sort()) {
    const t = weights.get(name) as HostTensor;
    h.text(name);
    h.text(t.shape.join(","));
    const n = t.data.length;
    const samples = Math.min(64, n);
    for (let i = 0; i < samples; i++) h.f32(Number(t.data[Math.floor((i * n) / samples)]));
  }
  return h.hex();
}
