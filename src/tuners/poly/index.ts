/**
 * POLY (Ponti et al. 2023, "Combining Parameter-efficient Modules for Task-level Generalisation")
 * and MHR (Caccia et al. 2023, "Multi-Head Adapter Routing for Cross-Task Generalization"), in HF
 * PEFT's POLY format (src/peft/tuners/poly/{config,router,layer}.py). Every targeted layer holds
 * `n_skills` LoRAs split into `n_splits` heads and its own routing table `module_logits`
 * [n_tasks, n_splits·n_skills]. For an example of task t the router turns row t into weights over
 * the skills (RelaxedBernoulli(T = 1) samples in training, sigmoid in eval, normalised to sum 1 per
 * split), A and B are mixed separately with those weights and the layer adds x·A_t·B_t / r.
 *
 * The task id is the per-example channel of WrapOptions.taskIds (docs/dev/TUNERS.md "Task ids").
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { randomUniform, type Tensor } from "../../engine/trace/tensor.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { layerSeed } from "../layer-seed.js";
import { targetedLinears } from "../targets.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type PolyConfig, parsePolyConfig, polyConfigJson } from "./config.js";

/** PEFT's router constant (router.py EPS): the weights are L / (ΣL + EPS). */
export const POLY_EPS = 1e-12;
/** torch.finfo(float32).eps and .tiny: RelaxedBernoulli's clamps of u and of the sample. */
const F32_EPS = 1.1920928955078125e-7;
const F32_TINY = 1.1754943508222875e-38;

export interface PolyLayer {
  path: string;
  key: string;
  inFeatures: number;
  outFeatures: number;
}

export const polyKeys = (key: string) => ({
  a: `${key}.poly_lora_A`,
  b: `${key}.poly_lora_B`,
  logits: `${key}.poly_router.module_logits`,
});

/** The targeted layers; n_splits must divide both feature sizes (PEFT does not check; it fails in a reshape). */
export function polyLayers(info: ModelInfo, c: PolyConfig): PolyLayer[] {
  const spec = { ...c, layersToTransform: null, layersPattern: null };
  return targetedLinears(info, spec, "POLY config").map(({ path, key, inFeatures, outFeatures }) => {
    for (const [n, what, tensor] of [
      [inFeatures, "in_features", polyKeys(key).a],
      [outFeatures, "out_features", polyKeys(key).b],
    ] as const)
      if (n % c.nSplits !== 0)
        throw new PeftConfigError(`POLY config: n_splits = ${c.nSplits} does not divide ${what} = ${n} of "${key}" (tensor ${tensor})`);
    return { path, key, inFeatures, outFeatures };
  });
}

/** Shapes of a layer's tensors: A [q, s, in/q, r], B [q, s, r, out/q], logits [n_tasks, q·s]. */
export function polyShapes(l: PolyLayer, c: PolyConfig): { a: number[]; b: number[]; logits: number[] } {
  const q = c.nSplits;
  return {
    a: [q, c.nSkills, l.inFeatures / q, c.r],
    b: [q, c.nSkills, c.r, l.outFeatures / q],
    logits: [c.nTasks, q * c.nSkills],
  };
}

function create(info: ModelInfo, c: PolyConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of polyLayers(info, c)) {
    const k = polyKeys(l.key);
    const s = polyShapes(l, c);
    // reset_poly_parameters: A per (split, skill) is kaiming_uniform_(a=√5) of an (r, d) matrix,
    // i.e. U(−1/√d, 1/√d) with d = in/q, stored transposed; B zero, or the same draw with d = out/q.
    const d = s.a[2];
    tensors.set(
      k.a,
      hostTensor(
        "f32",
        s.a,
        fillUniform(
          s.a.reduce((x, y) => x * y, 1),
          -1 / Math.sqrt(d),
          1 / Math.sqrt(d),
          rng,
        ),
      ),
    );
    const nb = s.b.reduce((x, y) => x * y, 1);
    const bound = 1 / Math.sqrt(c.r);
    tensors.set(k.b, hostTensor("f32", s.b, c.initWeights ? new Float32Array(nb) : fillUniform(nb, -bound, bound, rng)));
    // PolyRouter.reset: U(−1e-3, 1e-3).
    tensors.set(k.logits, hostTensor("f32", s.logits, fillUniform(s.logits[0] * s.logits[1], -1e-3, 1e-3, rng)));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: PolyConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of polyLayers(info, c)) {
    const k = polyKeys(l.key);
    const s = polyShapes(l, c);
    out.set(k.a, s.a);
    out.set(k.b, s.b);
    out.set(k.logits, s.logits);
  }
  return out;
}

/**
 * torch's RelaxedBernoulli(T = 1, logits).rsample() with the uniforms `u` given:
 * clamp(sigmoid(logits + log u − log(1 − u)), tiny, 1 − eps), u clamped to [eps, 1 − eps].
 */
export function relaxedBernoulli(logits: Tensor, u: Tensor): Tensor {
  const uc = u.clamp(F32_EPS, 1 - F32_EPS);
  const noise = uc.log().sub(uc.neg().add(1).log());
  return logits
    .add(noise)
    .sigmoid()
    .clamp(F32_TINY, 1 - F32_EPS);
}

/**
 * The router (PolyRouter.forward): [B, q, s] weights from the routing table and the [B] task ids.
 * `uniforms` ([B, q, s]) selects the training path; null is eval (sigmoid).
 */
export function polyRouterWeights(logits: Tensor, taskIds: Tensor, q: number, s: number, uniforms: Tensor | null): Tensor {
  const rows = logits.gather(taskIds.cast("i64"), 0);
  const l = rows.reshape([rows.shape[0], q, s]);
  const p = uniforms ? relaxedBernoulli(l, uniforms) : l.sigmoid();
  return p.div(p.sum(-1, true).add(POLY_EPS));
}

/**
 * poly.Linear.forward's change for weights w [B, q, s]: A_b = Σ_s w·A (splits stacked along the
 * input), B_b = Σ_s w·B (splits side by side along the output), x·A_b·B_b / r per example.
 */
export function polyMix(x: Tensor, a: Tensor, b: Tensor, w: Tensor, l: PolyLayer, c: PolyConfig): Tensor {
  const q = c.nSplits;
  const s = c.nSkills;
  const r = c.r;
  const bs = w.shape[0];
  const wq = w.unsqueeze(2); // [B, q, 1, s]
  const aMix = wq.matmul(a.reshape([q, s, (l.inFeatures / q) * r])).reshape([bs, l.inFeatures, r]);
  const bMix = wq
    .matmul(b.reshape([q, s, r * (l.outFeatures / q)]))
    .reshape([bs, q, r, l.outFeatures / q])
    .transpose(1, 2)
    .reshape([bs, r, l.outFeatures]);
  const flat = x.rank === 2;
  const xs = flat ? x.unsqueeze(1) : x;
  // As PEFT: x in the adapter's dtype, the result back in x's.
  const y = xs
    .cast(a.dtype)
    .matmul(aMix)
    .matmul(bMix)
    .mul(1 / r)
    .cast(x.dtype);
  return flat ? y.squeeze(1) : y;
}

/**
 * A layer's mixing weights [B, q, s] in a forward: in a training step the uniforms of the
 * RelaxedBernoulli sample are drawn in the graph from the step's seed (salted by the layer, so
 * layers draw independently; element i of the [B, q, s] draw is uniformAt(seed + salt, i)).
 */
export function polyLayerWeights(opts: WrapOptions, l: PolyLayer, c: PolyConfig, taskIds: Tensor): Tensor {
  const shape = [taskIds.shape[0], c.nSplits, c.nSkills];
  const logits = opts.tensor(polyKeys(l.key).logits);
  const uniforms = opts.training && opts.seed ? randomUniform(layerSeed(opts.seed, l.key), shape, logits.dtype) : null;
  return polyRouterWeights(logits, taskIds, c.nSplits, c.nSkills, uniforms);
}

function wrap(base: Parameters<Tuner["wrap"]>[0], info: ModelInfo, c: PolyConfig, opts: WrapOptions) {
  const taskIds = opts.taskIds;
  if (!taskIds) throw new PeftConfigError(`adapter "${opts.adapterName}" (POLY) routes by task: the forward needs a task id per example`);
  return new LinearDeltaContext(base, polyLayers(info, c), opts.rowMask, (l, x) => {
    const k = polyKeys(l.key);
    return polyMix(x, opts.tensor(k.a), opts.tensor(k.b), polyLayerWeights(opts, l, c, taskIds), l, c);
  });
}

export const POLY: Tuner<PolyConfig> = {
  peftType: "POLY",
  parseConfig: parsePolyConfig,
  toJson: polyConfigJson,
  create,
  expectedTensors,
  wrap,
  taskCount: (c) => c.nTasks,
  supportsMixedBatch: true,
};
