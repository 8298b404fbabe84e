/** peft_type → tuner. A new method is a folder plus one line here. */
import { PeftConfigError } from "./config.js";
import { LORA } from "./lora/index.js";
import type { Tuner } from "./tuner.js";

const TUNERS: readonly Tuner<never>[] = [LORA] as unknown as Tuner<never>[];

export function tunerFor(peftType: string): Tuner {
  const t = TUNERS.find((x) => x.peftType === peftType);
  if (!t) throw new PeftConfigError(`peft_type "${peftType}" is not supported (supported: ${TUNERS.map((x) => x.peftType).join(", ")})`);
  return t as unknown as Tuner;
}

export function supportedPeftTypes(): string[] {
  return TUNERS.map((t) => t.peftType);
}
