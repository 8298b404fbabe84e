/**
 * A PiSSA / OLoRA / CorDA adapter as a plain LoRA adapter for the ORIGINAL base weights, as HF
 * PEFT's save_pretrained(..., path_initial_model_for_weight_conversion=...) writes it
 * (peft_model.py save_mutated_as_lora, lora/model.py subtract_mutated_init, v0.20.0):
 *
 *   W = W_res + s·B₀·A₀ (init),  W_res + s·B·A (trained)  ⇒  ΔW = s·(B·A − B₀·A₀) = s·[B | −B₀]·[A ; A₀],
 *
 * so lora_A' = [A ; A₀] (2r rows), lora_B' = [B | −B₀] (2r columns), r' = 2r, lora_alpha' = 2α
 * (α·√2 with rsLoRA), rank_pattern and alpha_pattern doubled, init_lora_weights = true. PEFT
 * drops every other tensor; here they are kept (a classification head in modules_to_save, DoRA's
 * magnitude and trained biases apply unchanged on the original base, since W + s·B'·A' equals the
 * trained layer's weight).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import { saveAdapter } from "../format.js";
import type { PeftModel } from "../peft-model.js";
import type { LoraConfig } from "./config.js";

/** Whether the init replaced base weights (so the saved adapter needs the residual model). */
export function editsBase(c: LoraConfig): boolean {
  const i = c.initLoraWeights;
  return i === "pissa" || i === "olora" || i === "corda" || (typeof i === "string" && i.startsWith("pissa_niter_"));
}

function stackRows(a: HostTensor, b: HostTensor): HostTensor {
  const out = new Float32Array(a.data.length + b.data.length);
  out.set(a.data as Float32Array);
  out.set(b.data as Float32Array, a.data.length);
  return hostTensor("f32", [a.shape[0] + b.shape[0], a.shape[1]], out);
}

/** [x | −y] along the columns. */
function stackNegatedCols(x: HostTensor, y: HostTensor): HostTensor {
  const [rows, cx] = x.shape;
  const cy = y.shape[1];
  const out = new Float32Array(rows * (cx + cy));
  const xd = x.data as Float32Array;
  const yd = y.data as Float32Array;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cx; j++) out[i * (cx + cy) + j] = xd[i * cx + j];
    for (let j = 0; j < cy; j++) out[i * (cx + cy) + cx + j] = -yd[i * cy + j];
  }
  return hostTensor("f32", [rows, cx + cy], out);
}

/** The converted config and tensors (see the file comment). */
export function mutatedToLora(
  c: LoraConfig,
  initial: ReadonlyMap<string, HostTensor>,
  trained: ReadonlyMap<string, HostTensor>,
): { config: LoraConfig; tensors: Map<string, HostTensor> } {
  if (c.useRslora && (Object.keys(c.rankPattern).length || Object.keys(c.alphaPattern).length))
    throw new PeftConfigError(
      "converting to plain LoRA is not supported with rank_pattern or alpha_pattern together with use_rslora (as in PEFT)",
    );
  const tensors = new Map<string, HostTensor>();
  for (const [k, t] of trained) {
    const a = /\.lora_A\.weight$|\.lora_embedding_A$/.test(k);
    const b = /\.lora_B\.weight$|\.lora_embedding_B$/.test(k);
    if (!a && !b) {
      tensors.set(k, t);
      continue;
    }
    const t0 = initial.get(k);
    if (!t0) throw new PeftConfigError(`converting to plain LoRA: no initial value of "${k}"`);
    tensors.set(k, a ? stackRows(t, t0) : stackNegatedCols(t, t0));
  }
  const double = (m: Record<string, number>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, 2 * v]));
  const config: LoraConfig = {
    ...c,
    initLoraWeights: true,
    r: 2 * c.r,
    loraAlpha: c.useRslora ? c.loraAlpha * Math.SQRT2 : 2 * c.loraAlpha,
    rankPattern: double(c.rankPattern),
    alphaPattern: double(c.alphaPattern),
  };
  return { config, tensors };
}

/** Writes adapter `name` of `peft`, converted against its `initial` tensors, as a LoRA folder at `dir`. */
export function saveConvertedLora(peft: PeftModel, name: string, initial: ReadonlyMap<string, HostTensor>, dir: string): void {
  const a = peft.adapter(name);
  const { config, tensors } = mutatedToLora(a.config as LoraConfig, initial, a.tensors);
  const tmp = `${name}.converted`;
  peft.insertAdapter(tmp, a.tuner, config, tensors);
  try {
    saveAdapter(peft, tmp, dir);
  } finally {
    peft.deleteAdapter(tmp);
  }
}
