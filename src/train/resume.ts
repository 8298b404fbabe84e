/** Reading an adapter's tensors back from a checkpoint folder for resume. */
import type { HostTensor } from "../engine/ir/host.js";
import { readAdapter } from "../tuners/format.js";
import type { PeftModel } from "../tuners/peft-model.js";

export function readAdapterTensors(peft: PeftModel, dir: string): Map<string, HostTensor> {
  return readAdapter(peft, dir).tensors;
}
