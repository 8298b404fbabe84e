/**
 * `peftkit compress`: ComPEFT (src/compress/, docs/methods/compeft.md). Compresses an adapter folder
 * into a folder holding adapter_compeft.safetensors (docs/formats/compeft.md), which eval, generate,
 * merge and the library load as they are; `--decompress` writes the plain HF PEFT folder back.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { type CompeftScope, checkCompeftDensity } from "../../compress/compeft.js";
import { compressAdapterFolder, decompressAdapterFolder } from "../../compress/file.js";
import { type CommandSpec, UsageError } from "../args.js";

export const compressCommand: CommandSpec = {
  name: "compress",
  summary: "Compress an adapter with ComPEFT (top-k of the update, ternarised with one scale), or --decompress one.",
  usage:
    "peftkit compress ADAPTER --density D [--alpha A] [--scope global|per-tensor] --output-dir DIR | ADAPTER --decompress --output-dir DIR",
  flags: [
    {
      name: "adapter",
      type: "string",
      meta: "DIR",
      help: "the adapter folder (with --decompress: a folder written by compress)",
      required: true,
    },
    {
      name: "output-dir",
      type: "string",
      meta: "DIR",
      help: "where to write the compressed (or decompressed) adapter folder",
      required: true,
    },
    {
      name: "density",
      type: "number",
      meta: "D",
      help: "fraction of the update's entries kept, in (0, 1]",
      default: 0.2,
      exclusiveMin: 0,
      max: 1,
    },
    {
      name: "alpha",
      type: "number",
      meta: "A",
      help: "the kept entries become ±alpha·σ (σ: std of the whole update)",
      default: 1,
      exclusiveMin: 0,
    },
    {
      name: "scope",
      type: "string",
      help: "top-k and σ over all adapter tensors at once (the authors') or per tensor",
      default: "global",
      choices: ["global", "per-tensor"],
    },
    {
      name: "bits",
      type: "int",
      meta: "B",
      help: "bits per kept entry: 1 (sign, ComPEFT) is the only one implemented",
      default: 1,
      min: 1,
      max: 1,
    },
    { name: "decompress", type: "boolean", help: "write the plain HF PEFT folder (adapter_model.safetensors) of a compressed one" },
  ],
  examples: [
    "peftkit compress runs/demo --density 0.1 --output-dir runs/demo-compeft",
    "peftkit eval --model models/wordnet-llama --adapter runs/demo-compeft --data eval.jsonl",
    "peftkit compress runs/demo-compeft --decompress --output-dir runs/demo-ternary",
  ],
  async run(o) {
    const adapter = o.adapter as string;
    const out = o.outputDir as string;
    if (!existsSync(adapter)) throw new UsageError(`--adapter ${adapter}: no such folder`);
    if (resolve(adapter) === resolve(out)) throw new UsageError(`--output-dir ${out} is the input folder; choose another folder`);
    if (o.decompress) {
      const { output, tensors } = decompressAdapterFolder(adapter, out);
      console.log(`wrote ${output}: ${tensors} tensors`);
      return 0;
    }
    const density = o.density as number;
    try {
      checkCompeftDensity(density);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const s = compressAdapterFolder(adapter, out, { density, alpha: o.alpha as number, scope: o.scope as CompeftScope });
    const scale = Number.isNaN(s.scale) ? "per tensor" : s.scale.toPrecision(6);
    console.log(
      `wrote ${s.output}: kept ${s.kept} of ${s.entries} entries (${((100 * s.kept) / s.entries).toFixed(2)}%), scale ${scale}, init ${s.init}`,
    );
    console.log(`size: ${s.sourceBytes} → ${s.compressedBytes} bytes (${s.ratio.toFixed(2)}× smaller than ${s.source})`);
    return 0;
  },
};
