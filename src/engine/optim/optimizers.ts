/**
 * In-graph optimizers: the update is traced into the training-step graph, so parameters and
 * optimizer state go in and come out of one ORT run, with no per-tensor JS work between steps.
 */
import { scalar, type Tensor } from "../trace/tensor.js";

export interface AdamWConfig {
  kind: "adamw";
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (Loshchilov & Hutter), applied as p ← p − lr·wd·p. */
  weightDecay?: number;
}

export interface SgdConfig {
  kind: "sgd";
  momentum?: number;
  /** Coupled L2 decay added to the gradient, as torch.optim.SGD. */
  weightDecay?: number;
  nesterov?: boolean;
}

export type OptimizerConfig = AdamWConfig | SgdConfig;

/** Names of the per-parameter state slots an optimizer keeps. */
export function stateSlots(cfg: OptimizerConfig): string[] {
  if (cfg.kind === "adamw") return ["exp_avg", "exp_avg_sq"];
  return cfg.momentum ? ["momentum_buffer"] : [];
}

export interface UpdateInputs {
  param: Tensor;
  grad: Tensor;
  state: Tensor[];
  /** f32 scalar, 1 on the first step (for bias correction). */
  step: Tensor;
  lr: Tensor;
}

/**
 * Scalars every parameter's update shares (AdamW's bias-corrected step size and its second-moment
 * correction), traced once per step rather than once per parameter.
 */
export interface SharedScalars {
  stepSize?: Tensor;
  bc2?: Tensor;
  decay?: Tensor;
}

export function sharedScalars(cfg: OptimizerConfig, step: Tensor, lr: Tensor): SharedScalars {
  if (cfg.kind !== "adamw") return {};
  const b1 = cfg.beta1 ?? 0.9;
  const b2 = cfg.beta2 ?? 0.999;
  const t = step.cast("f32");
  const bc1 = scalar(1).sub(scalar(b1).pow(t));
  return {
    stepSize: lr.cast("f32").div(bc1),
    bc2: scalar(1).sub(scalar(b2).pow(t)),
    decay: cfg.weightDecay ? lr.cast("f32").mul(cfg.weightDecay) : undefined,
  };
}

/** One parameter's update; returns the new parameter and new state, slot order as stateSlots. */
export function applyUpdate(
  cfg: OptimizerConfig,
  u: UpdateInputs,
  shared: SharedScalars = sharedScalars(cfg, u.step, u.lr),
): { param: Tensor; state: Tensor[] } {
  const { param: p, grad: g, lr } = u;
  if (cfg.kind === "adamw") {
    const b1 = cfg.beta1 ?? 0.9;
    const b2 = cfg.beta2 ?? 0.999;
    const eps = cfg.eps ?? 1e-8;
    const [m0, v0] = u.state;
    const m = m0.mul(b1).add(g.mul(1 - b1));
    const v = v0.mul(b2).add(g.mul(g).mul(1 - b2));
    const dt = p.dtype;
    // lr·m̂/(√v̂+ε) with the corrections folded into shared scalars: one pass over the big tensors.
    const denom = v
      .div((shared.bc2 as Tensor).cast(dt))
      .sqrt()
      .add(eps);
    let next = p;
    if (shared.decay) next = next.sub(p.mul(shared.decay.cast(dt)));
    next = next.sub(m.div(denom).mul((shared.stepSize as Tensor).cast(dt)));
    return { param: next, state: [m, v] };
  }
  const mu = cfg.momentum ?? 0;
  const wd = cfg.weightDecay ?? 0;
  let d = wd ? g.add(p.mul(wd)) : g;
  const state: Tensor[] = [];
  if (mu) {
    const buf = u.state[0].mul(mu).add(d);
    state.push(buf);
    d = cfg.nesterov ? d.add(buf.mul(mu)) : buf;
  }
  return { param: p.sub(d.mul(lr.cast(p.dtype))), state };
}

/**
 * Scales gradients so their global L2 norm is at most maxNorm (as torch.nn.utils.clip_grad_norm_).
 * Returns the clipped gradients and the norm before clipping.
 */
export function clipByGlobalNorm(grads: Tensor[], maxNorm: number): { grads: Tensor[]; norm: Tensor } {
  const norm = globalNorm(grads);
  const scale = scalar(maxNorm, norm.dtype).div(norm.add(1e-6)).minimum(1);
  return { grads: grads.map((g) => g.mul(scale.cast(g.dtype))), norm };
}

export function globalNorm(grads: Tensor[]): Tensor {
  let total: Tensor | null = null;
  for (const g of grads) {
    const s = g.mul(g).sum().cast("f32");
    total = total ? total.add(s) : s;
  }
  return (total ?? scalar(0)).sqrt();
}
