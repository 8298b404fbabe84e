/**
 * `peftkit compare` names for zeroth-order runs: mezo and sparse_mezo train the model's weights;
 * mezo_lora is MeZO over a LoRA adapter (its r is compare's r knob) with the authors' LoRA ε, 1e-2
 * (princeton-nlp/MeZO large_models/README.md).
 */
export const ZO_COMPARE_METHODS = ["mezo", "sparse_mezo", "mezo_lora"] as const;

/** The `peftkit train` flags that stand for a compare method name (null: `--method NAME`). */
export function zoCompareArgs(method: string): string[] | null {
  return method === "mezo_lora" ? ["--method", "mezo", "--zo-over", "lora", "--zo-eps", "1e-2"] : null;
}
