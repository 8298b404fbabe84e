/**
 * The LoRA adapter phase 2 trains, cut from the phase-1 adapter (gccnlp/Light-PEFT
 * get_early_peft_model: prune_lora_attn, prune_lora_ffn, the reserved modules, prune_peft_rank):
 * only the kept modules, with only their kept ranks (rows of A, columns of B), and with the rows
 * and columns of pruned heads and neurons removed as in the pruned backbone. Each module keeps
 * the scaling it had (α/r of the phase-1 rank: the authors slice lora_A/lora_B and leave
 * `scaling` alone), written as an alpha_pattern entry, so the phase-2 model starts from exactly
 * the phase-1 function minus what was pruned.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import { keptIndices, type PrunedBackbone, sliceMatrix } from "../../prune/heads-ffn.js";
import { loraConfigJson } from "../lora/config.js";
import { type LoraLayer, loraKeys, loraLayers } from "../lora/layers.js";
import type { ModelInfo } from "../tuner.js";
import type { LightPeftConfig } from "./config.js";
import type { AdapterPlan } from "./plan.js";

/** Phase-1 modules and the ranks they keep: scored ones by the plan, others (embeddings) whole. */
function keptModules(info: ModelInfo, c: LightPeftConfig, plan: AdapterPlan): { layer: LoraLayer; ranks: number[] }[] {
  const out: { layer: LoraLayer; ranks: number[] }[] = [];
  for (const l of loraLayers(info, c)) {
    const ranks = l.kind === "linear" ? plan.ranks.get(l.key) : Array.from({ length: l.r }, (_, i) => i);
    if (ranks?.length) out.push({ layer: l, ranks });
  }
  return out;
}

/** adapter_config.json fields of the phase-2 LoRA (peft_type LORA, loadable by HF PEFT). */
export function phase2LoraConfig(info: ModelInfo, c: LightPeftConfig, plan: AdapterPlan): Record<string, unknown> {
  const kept = keptModules(info, c, plan);
  if (!kept.length) throw new RangeError("no LoRA module is left after pruning");
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const { layer: l, ranks } of kept) {
    const plain = c.useRslora ? c.loraAlpha / Math.sqrt(c.r) : c.loraAlpha / c.r;
    if (ranks.length === c.r && l.r === c.r && l.scaling === plain) continue;
    rankPattern[l.key] = ranks.length;
    // Same scaling as in phase 1: α'/r' = α/r (rsLoRA: α'/√r' = α/√r).
    alphaPattern[l.key] = c.useRslora ? l.scaling * Math.sqrt(ranks.length) : l.scaling * ranks.length;
  }
  return {
    ...loraConfigJson({ ...c, peftType: "LORA" }),
    peft_type: "LORA",
    target_modules: kept.map((k) => k.layer.key),
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
    init_lora_weights: true,
  };
}

/** The phase-2 LoRA tensors: the kept modules' A and B, sliced by kept ranks and by the pruned backbone. */
export function phase2LoraTensors(
  info: ModelInfo,
  c: LightPeftConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  backbone: PrunedBackbone,
  plan: AdapterPlan,
): Map<string, HostTensor> {
  const kept = keptIndices(backbone);
  const out = new Map<string, HostTensor>();
  for (const { layer: l, ranks } of keptModules(info, c, plan)) {
    const k = loraKeys(l);
    const a = tensors.get(k.a) as HostTensor;
    const b = tensors.get(k.b) as HostTensor;
    if (l.kind === "embedding") {
      // lora_embedding_A [r, num_embeddings], lora_embedding_B [dim, r]: ranks only.
      out.set(k.a, sliceMatrix(a, ranks, null));
      out.set(k.b, sliceMatrix(b, null, ranks));
      continue;
    }
    const s = kept.get(l.path);
    out.set(k.a, sliceMatrix(a, ranks, s?.cols ?? null));
    out.set(k.b, sliceMatrix(b, s?.rows ?? null, ranks));
  }
  return out;
}
