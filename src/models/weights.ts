/**
 * Matching a checkpoint's tensors to what an architecture expects: prefixes, ties, ignorable
 * buffers, missing and mis-shaped tensors. Loading never falls back to random weights for the
 * backbone; a task head absent from the checkpoint is initialised and reported.
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { WeightStore } from "../io/hf-folder.js";
import { ModelError } from "../nn/context.js";
import { Rng } from "../util/rng.js";
import type { Architecture, TaskHead } from "./architecture.js";

export interface LoadedWeights {
  weights: Map<string, HostTensor>;
  /** Head weights the checkpoint did not have, initialised as transformers does (normal(0, 0.02), zero bias). */
  newlyInitialized: string[];
  /** Checkpoint tensors not used by this head (another head's weights). */
  unused: string[];
  /**
   * Weights the config ties (e.g. lm_head.weight to the input embedding) that the checkpoint
   * holds with different values of their own: they are kept apart, as transformers 5 does.
   */
  untied: string[];
}

/** Same dtype, shape and elements (bitwise for floats but -0/+0 and NaNs; identical objects trivially). */
export function sameValues(a: HostTensor, b: HostTensor): boolean {
  if (a === b) return true;
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false;
  const x = a.data;
  const y = b.data;
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

const shapeStr = (s: readonly number[]) => `[${s.join(", ")}]`;

export function loadWeights<C>(
  arch: Architecture<C>,
  cfg: C,
  head: TaskHead,
  store: WeightStore,
  opts: { seed?: number } = {},
): LoadedWeights {
  const expected = arch.expectedWeights(cfg, head);
  const prefix = arch.basePrefix(cfg);
  const otherHeads = new Set<string>();
  for (const h of arch.heads) for (const n of arch.expectedWeights(cfg, h).keys()) if (!expected.has(n)) otherHeads.add(n);

  const canonical = new Map<string, string>();
  const unexpected: string[] = [];
  const unused: string[] = [];
  for (const name of store.names()) {
    if (arch.ignorable(name)) continue;
    const c =
      expected.has(name) || otherHeads.has(name)
        ? name
        : expected.has(prefix + name) || otherHeads.has(prefix + name)
          ? prefix + name
          : null;
    if (c === null) unexpected.push(name);
    else if (otherHeads.has(c)) unused.push(name);
    else canonical.set(c, name);
  }

  const weights = new Map<string, HostTensor>();
  const missing: string[] = [];
  const misshaped: string[] = [];
  const ties = arch.tiedWeights(cfg, head);
  const baseNames = new Set(arch.expectedWeights(cfg, "base").keys());
  const fresh: string[] = [];
  for (const [name, shape] of expected) {
    const src = canonical.get(name);
    if (src !== undefined) {
      const info = store.info(src);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        misshaped.push(`${src}: checkpoint ${shapeStr(info.shape)}, expected ${shapeStr(shape)}`);
        continue;
      }
      weights.set(name, store.get(src));
      continue;
    }
    if (ties.has(name)) continue;
    if (!baseNames.has(name) && head !== "causal_lm") fresh.push(name);
    else missing.push(`${name} ${shapeStr(shape)}`);
  }
  const problems: string[] = [];
  if (missing.length) problems.push(`missing tensors:\n  ${missing.join("\n  ")}`);
  if (misshaped.length) problems.push(`tensors with the wrong shape:\n  ${misshaped.join("\n  ")}`);
  if (unexpected.length) problems.push(`tensors this ${arch.name} model does not use (misnamed?):\n  ${unexpected.join("\n  ")}`);
  if (problems.length) throw new ModelError(`${store.dir}: the checkpoint does not match its config.json\n${problems.join("\n")}`);

  // A tied weight the checkpoint also holds (torch .bin files and some exporters write both) is
  // shared when equal; when it differs, the config is wrong about the checkpoint and both are
  // kept, as transformers 5 does (some 4.x releases tied them anyway, replacing the head).
  const untied: string[] = [];
  for (const [name, target] of ties) {
    const t = weights.get(target);
    if (!t) throw new ModelError(`${store.dir}: "${name}" is tied to "${target}", which is missing`);
    const own = weights.get(name);
    if (!own || sameValues(own, t)) weights.set(name, t);
    else untied.push(name);
  }
  const rng = new Rng(opts.seed ?? 0);
  const normal = () => rng.normal();
  for (const name of fresh) {
    const shape = expected.get(name) as number[];
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    // A fresh norm (a masked-LM head's LayerNorm) starts as the identity, as transformers' _init_weights does.
    if (/(norm|LayerNorm)\.weight$/.test(name)) data.fill(1);
    else if (!name.endsWith(".bias")) for (let i = 0; i < n; i++) data[i] = 0.02 * normal();
    weights.set(name, hostTensor("f32", shape, data));
  }
  return { weights, newlyInitialized: fresh, unused, untied };
}
