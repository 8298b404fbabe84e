/** peft_type → tuner. A new method is a folder plus one line here. */
import { ADALORA } from "./adalora/index.js";
import { BOTTLENECK } from "./adapter/index.js";
import { BITFIT } from "./bitfit/index.js";
import { BOFT } from "./boft/index.js";
import { type CommonConfig, PeftConfigError } from "./config.js";
import { DSEE } from "./dsee/index.js";
import { FOURIERFT } from "./fourierft/index.js";
import { HRA } from "./hra/index.js";
import { HUT } from "./hut/index.js";
import { IA3 } from "./ia3/index.js";
import { ID3 } from "./id3/index.js";
import { INCRELORA } from "./increlora/index.js";
import { IST } from "./ist/index.js";
import { KASA } from "./kasa/index.js";
import { LIGHT_PEFT } from "./light_peft/index.js";
import { LN_TUNING } from "./ln_tuning/index.js";
import { LOCA } from "./loca/index.js";
import { LOHA } from "./loha/index.js";
import { LOKR } from "./lokr/index.js";
import { LOLDU } from "./loldu/index.js";
import { LORA } from "./lora/index.js";
import { LORA_GGPO } from "./lora_ggpo/index.js";
import { LORA_SB } from "./lora_sb/index.js";
import { LOWBIT } from "./lowbit/index.js";
import { OFT } from "./oft/index.js";
import { PAT } from "./pat/index.js";
import { PEGO } from "./pego/index.js";
import { POLY } from "./poly/index.js";
import { PREFIX_TUNING } from "./prefix_tuning/index.js";
import { PROMPT_TUNING } from "./prompt_tuning/index.js";
import { RAMT } from "./ramt/index.js";
import { S2FT } from "./s2ft/index.js";
import { SARA } from "./sara/index.js";
import { SFT } from "./sft/index.js";
import { SNELL, SNELLA } from "./snell/index.js";
import { SOKA } from "./soka/index.js";
import { SPT } from "./spt/index.js";
import { SSF } from "./ssf/index.js";
import { SVFIT } from "./svfit/index.js";
import { TRIADAPTLORA } from "./triadaptlora/index.js";
import type { Tuner } from "./tuner.js";
import { VERA } from "./vera/index.js";

const TUNERS: Tuner<never>[] = [
  LORA,
  IA3,
  SSF,
  BITFIT,
  LN_TUNING,
  BOTTLENECK,
  PROMPT_TUNING,
  PREFIX_TUNING,
  HUT,
  SOKA,
  LORA_SB,
  HRA,
  VERA,
  OFT,
  BOFT,
  LOHA,
  LOKR,
  SVFIT,
  KASA,
  LOLDU,
  INCRELORA,
  ADALORA,
  FOURIERFT,
  TRIADAPTLORA,
  PEGO,
  LORA_GGPO,
  LOCA,
  SNELL,
  SNELLA,
  SFT,
  SPT,
  SARA,
  ID3,
  S2FT,
  LIGHT_PEFT,
  IST,
  PAT,
  RAMT,
  DSEE,
  POLY,
  LOWBIT,
] as unknown as Tuner<never>[];

export function tunerFor(peftType: string): Tuner {
  const t = TUNERS.find((x) => x.peftType === peftType);
  if (!t) throw new PeftConfigError(`peft_type "${peftType}" is not supported (supported: ${TUNERS.map((x) => x.peftType).join(", ")})`);
  return t as unknown as Tuner;
}

/**
 * Adds a method at run time (a method kept outside this tree, or a test's toy method). Its
 * peft_type must be new.
 */
export function registerTuner<C extends CommonConfig>(t: Tuner<C>): void {
  if (TUNERS.some((x) => x.peftType === t.peftType)) throw new PeftConfigError(`peft_type "${t.peftType}" is already registered`);
  TUNERS.push(t as unknown as Tuner<never>);
}

export function supportedPeftTypes(): string[] {
  return TUNERS.map((t) => t.peftType);
}
