/**
 * PAT, Pruning-Aware Tuning (Liu et al. 2024, "PAT: Pruning-Aware Tuning for Large Language
 * Models", arXiv 2408.14721; catalog §11.5, seed #60), after the authors' code
 * (kriskrisliu/PAT_Pruning-Aware-Tuning @ bc54095: DimDownModule.py, the patched
 * modeling_llama.py, script/merge_dimdown.py). LoRA on the linear layers plus Hybrid
 * Sparsification Modules HSM(x) = s ⊙ m(t) ⊙ (x + U·D·x) on every contribution to the residual
 * stream (hsm.ts), one global trainable channel mask whose temperature and bias follow the step
 * (a controller writes them into a fixed tensor between updates: no recompilation), and the
 * mask-count, polarisation and identity losses. After training, the rounded mask keeps
 * {j : μ_j ≥ 0}: merging folds the HSMs into the embedding and o_proj / down_proj (fold.ts), and
 * src/prune/hidden-size.ts removes the dropped channels (`peftkit merge --prune`), giving a
 * smaller dense LLaMA.
 *
 * Saved format: LoRA's tensors plus `<site>.hsm_down.weight` [rank, hidden], `<site>.hsm_up.weight`
 * [hidden, rank], `<site>.hsm_scale.weight` [hidden] for each site (model.embed_tokens,
 * model.layers.i.self_attn.o_proj, model.layers.i.mlp.down_proj) and `model.embed_tokens.pat_mask`
 * [hidden]. The schedule is training state (checkpoints keep it; a folder rebuilds it at t = 0).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { ForwardContext, HookPoint } from "../../nn/context.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import { LORA } from "../lora/index.js";
import { DelegatingContext, type ModelInfo, maskRows, type Tuner, type WrapOptions } from "../tuner.js";
import { type PatConfig, parsePatConfig, patConfigJson } from "./config.js";
import { foldHsms } from "./fold.js";
import {
  checkPatModel,
  createHsm,
  type HsmSite,
  hsmForward,
  hsmKeys,
  hsmRankOf,
  hsmShapes,
  hsmSites,
  identityLoss,
  identitySites,
  keepDimOf,
  keptChannels,
  maskKey,
  maskLoss,
  maskOf,
  scheduleAt,
  scheduleKey,
} from "./hsm.js";

export { keptChannels, maskKey } from "./hsm.js";

const initialSchedule = (info: ModelInfo): [string, HostTensor] => [scheduleKey(info), hostTensor("f32", [3], scheduleAt(0, 2))];

class PatContext extends DelegatingContext {
  private readonly sites = new Map<string, HsmSite>();
  private mask: Tensor | null = null;

  constructor(
    inner: ForwardContext,
    private readonly info: ModelInfo,
    private readonly c: PatConfig,
    private readonly opts: WrapOptions,
  ) {
    super(inner);
    for (const s of hsmSites(info)) this.sites.set(s.kind === "embeddings" ? "embeddings" : `${s.kind}:${s.layer}`, s);
  }

  // The HSMs act on hook points only: the linear layers (LoRA's) may fuse as they would alone.
  override fusedLinear(paths: readonly string[], x: Tensor): Tensor | null {
    return this.inner.fusedLinear(paths, x);
  }

  private siteOf(point: HookPoint): HsmSite | undefined {
    if (point.kind === "embeddings") return this.sites.get("embeddings");
    if (point.kind === "attention_output" || point.kind === "mlp_output") return this.sites.get(`${point.kind}:${point.layer}`);
    return undefined;
  }

  override hook(point: HookPoint, x: Tensor): Tensor {
    const y = this.inner.hook(point, x);
    const site = this.siteOf(point);
    if (!site) return y;
    // One mask for the whole network; the embedding HSM (first in the forward) builds it.
    this.mask ??= maskOf(this.opts.tensor(maskKey(this.info)), this.opts.training ? this.opts.tensor(scheduleKey(this.info)) : null);
    const k = hsmKeys(site);
    const sm = this.c.identityLoss ? this.mask.mul(this.opts.tensor(k.scale)) : this.mask;
    const out = hsmForward(y, this.opts.tensor(k.down), this.opts.tensor(k.up), sm);
    return this.opts.rowMask ? y.add(maskRows(out.sub(y), this.opts.rowMask)) : out;
  }
}

/** Writes the step's temperature, bias and freeze flag into the schedule tensor after every update. */
export class PatController implements Controller<PatConfig> {
  readonly gradientKeys: string[] = [];
  readonly configFields = ["schedule_steps"];
  private readonly n: number;
  private t = 0;
  private kept = 0;

  constructor(
    private readonly info: ModelInfo,
    private readonly c: PatConfig,
    run: ControllerRun,
  ) {
    const n = c.scheduleSteps ?? run.totalSteps;
    if (n === null) throw new PeftConfigError(`field "schedule_steps" is needed when the run's number of steps is not known`);
    if (n < 2) throw new PeftConfigError(`field "schedule_steps" must be >= 2 (ln N divides), got ${n}`);
    this.n = n;
    this.kept = info.hidden;
  }

  private action(written: boolean): ControllerAction<PatConfig> {
    return {
      tensors: new Map([[scheduleKey(this.info), hostTensor("f32", [3], scheduleAt(this.t, this.n))]]),
      ...(written ? {} : { config: { ...this.c, scheduleSteps: this.n } }),
    };
  }

  begin(): ControllerAction<PatConfig> {
    return this.action(this.c.scheduleSteps !== null);
  }

  afterStep(s: ControllerStep): ControllerAction<PatConfig> {
    this.t = s.step;
    const mu = s.tensors.get(maskKey(this.info));
    if (mu) this.kept = keptChannels(mu).length;
    return this.action(this.c.scheduleSteps !== null);
  }

  metrics(): Record<string, number> {
    const [temp, bias, trains] = scheduleAt(this.t, this.n);
    return { pat_kept: this.kept, pat_temperature: temp, pat_bias: bias, pat_mask_trains: trains };
  }

  state(): ControllerState {
    return { tensors: new Map(), json: { t: this.t, kept: this.kept } };
  }

  restore(s: ControllerState): ControllerAction<PatConfig> {
    const j = s.json as { t?: unknown; kept?: unknown } | null;
    this.t = typeof j?.t === "number" ? j.t : 0;
    this.kept = typeof j?.kept === "number" ? j.kept : this.info.hidden;
    return this.action(this.c.scheduleSteps !== null);
  }
}

/** The config as creation resolves it: keep_dim and hsm_rank written out. */
function resolved(info: ModelInfo, c: PatConfig): PatConfig {
  return { ...c, keepDim: keepDimOf(info, c), hsmRank: hsmRankOf(info, c) };
}

export const PAT: Tuner<PatConfig> = {
  peftType: "PAT",
  parseConfig: parsePatConfig,
  toJson: patConfigJson,
  create: (info, c, rng, data) => {
    checkPatModel(info);
    const config = resolved(info, c);
    const { tensors, baseEdits } = LORA.create(info, config, rng, data);
    for (const [k, t] of createHsm(info, config, rng)) tensors.set(k, t);
    tensors.set(...initialSchedule(info));
    return { tensors, baseEdits, config };
  },
  calibration: (info, c) => LORA.calibration?.(info, c) ?? null,
  trainable: (key) => !key.endsWith(".pat_schedule"),
  controller: (info, c, run) => new PatController(info, c, run),
  loss: (info, c, opts) => {
    let l = maskLoss(opts.tensor(maskKey(info)), keepDimOf(info, c), c.countLossWeight);
    if (c.identityLoss) for (const s of identitySites(info, c)) l = l.add(identityLoss(opts.tensor(hsmKeys(s).down)));
    return l;
  },
  expectedTensors: (info, c) => new Map([...LORA.expectedTensors(info, c), ...hsmShapes(info, c)]),
  tensorsToSave: (_info, _c, tensors) => new Map([...tensors].filter(([k]) => !k.endsWith(".pat_schedule"))),
  tensorsFromSaved: (info, _c, saved) => new Map([...saved, initialSchedule(info)]),
  wrap: (base, info, c, opts) => new PatContext(LORA.wrap(base, info, c, opts), info, c, opts),
  merge: (info, c, tensors, unmerged) => {
    const lora = LORA.merge?.(info, c, tensors, unmerged) ?? new Map<string, HostTensor>();
    const folded = foldHsms(info, c, tensors, (n) => lora.get(n) ?? info.weight(n));
    return new Map([...lora, ...folded]);
  },
  supportsMixedBatch: true,
};

/**
 * The hidden channels the adapter `name` keeps ({j : μ_j ≥ 0}), for pruning after its merge; one
 * line naming the adapter when it is not a PAT adapter.
 */
export function patKeptChannels(peft: import("../peft-model.js").PeftModel, name: string): number[] {
  const a = peft.adapter(name);
  if (a.tuner.peftType !== "PAT")
    throw new PeftConfigError(`adapter "${name}" is ${a.tuner.peftType}: only a PAT adapter says which hidden channels to prune`);
  return keptChannels(a.tensors.get(maskKey(peft.info)) as HostTensor);
}
