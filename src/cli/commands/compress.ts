/**
 * `peftkit compress`: ComPEFT (src/compress/, docs/methods/compeft.md). Compresses an adapter folder
 * into a folder holding adapter_compeft.safetensors (docs/formats/compeft.md), which eval, generate,
 * merge and the library load as they are; `--decompress` writes the plain HF PEFT folder back.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { COMPEFT_BITS, type CompeftBits, type CompeftScope, checkCompeftDensity } from "../../compress/compeft.js";
import { compressAdapterFolder, decompressAdapterFolder } from "../../compress/file.js";
import { tmpPath } from "../../io/atomic-write.js";
import { type CommandSpec, type Flags, parseFlags, UsageError } from "../args.js";
import { evalCommand } from "./eval.js";

/** What `--alpha auto` maximises: exact match or accuracy, ties to the lower loss (then the smaller α). */
export interface AlphaTrial {
  readonly alpha: number;
  readonly score: number | null;
  readonly loss: number;
}

export function pickAlpha(trials: readonly AlphaTrial[]): AlphaTrial {
  let best = trials[0];
  for (const t of trials.slice(1)) {
    const s = t.score ?? Number.NEGATIVE_INFINITY;
    const b = best.score ?? Number.NEGATIVE_INFINITY;
    if (s > b || (s === b && t.loss < best.loss)) best = t;
  }
  return best;
}

function parseAlpha(v: string): number {
  const a = Number(v);
  if (!(v.trim() !== "" && Number.isFinite(a) && a > 0)) throw new UsageError(`--alpha must be a positive number or "auto", got "${v}"`);
  return a;
}

/** Compresses at every α of the grid, evaluates each with `peftkit eval`, and returns the trials. */
async function alphaTrials(
  o: Flags,
  adapter: string,
  out: string,
  density: number,
  scope: CompeftScope,
  bits: CompeftBits,
): Promise<AlphaTrial[]> {
  const model = o.model as string | undefined;
  const data = o.evalData as string | undefined;
  if (!model || !data) throw new UsageError("--alpha auto needs --model and --eval-data (α is chosen by the score there)");
  const grid = ((o.alphas as string[] | undefined) ?? []).map(parseAlpha);
  if (grid.length === 0) throw new UsageError("--alphas must list at least one α");
  const work = tmpPath(resolve(out).replace(/\/$/, ""));
  const trials: AlphaTrial[] = [];
  try {
    for (const alpha of grid) {
      const dir = join(work, `alpha-${alpha}`);
      compressAdapterFolder(adapter, dir, { density, alpha, scope, bits });
      const result = join(dir, "eval.json");
      const args = ["--model", model, "--adapter", dir, "--data", data, "--output", result];
      if (o.threads !== undefined) args.push("--threads", String(o.threads));
      await evalCommand.run(parseFlags(args, evalCommand));
      const m = JSON.parse(readFileSync(result, "utf8")) as Record<string, number>;
      const score = m.eval_exact_match ?? m.eval_accuracy ?? m.eval_token_accuracy ?? null;
      trials.push({ alpha, score, loss: m.eval_loss });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return trials;
}

export const compressCommand: CommandSpec = {
  name: "compress",
  summary:
    "Compress an adapter with ComPEFT (top-k of the update, ternarised with one scale; or --bits > 1 magnitude levels), or --decompress one.",
  usage:
    "peftkit compress ADAPTER --density D [--alpha A|auto] [--scope global|per-tensor] [--bits 1|2|3|4|8] --output-dir DIR | ADAPTER --decompress --output-dir DIR",
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
      type: "string",
      meta: "A|auto",
      help: "the kept entries become ±alpha·σ (σ: std of the whole update; --bits > 1: ±alpha·level); auto: the best of --alphas on --eval-data",
      default: "1",
    },
    { name: "alphas", type: "list", meta: "LIST", help: "--alpha auto: the grid tried", default: ["0.5", "1", "2", "4"] },
    { name: "model", type: "string", meta: "DIR", help: "--alpha auto: the base model the adapter belongs to" },
    {
      name: "eval-data",
      type: "string",
      meta: "FILE",
      help: "--alpha auto: data to score each α on (exact match or accuracy, ties to the lower loss); use a dev set, not your test set",
    },
    {
      name: "scope",
      type: "string",
      help: "top-k and σ (or the --bits > 1 codebook) over all adapter tensors at once (the authors') or per tensor",
      default: "global",
      choices: ["global", "per-tensor"],
    },
    {
      name: "bits",
      type: "string",
      meta: "B",
      help: "bits per kept entry: 1 = the sign (ComPEFT); 2, 3, 4, 8 = the sign + a (B−1)-bit index into 2^(B−1) Lloyd–Max magnitude levels (peftkit's extension)",
      default: "1",
      choices: COMPEFT_BITS.map(String),
    },
    { name: "decompress", type: "boolean", help: "write the plain HF PEFT folder (adapter_model.safetensors) of a compressed one" },
  ],
  examples: [
    "peftkit compress runs/demo --density 0.1 --output-dir runs/demo-compeft",
    "peftkit eval --model models/wordnet-llama --adapter runs/demo-compeft --data eval.jsonl",
    "peftkit compress runs/demo --density 0.1 --alpha auto --model models/wordnet-llama --eval-data dev.jsonl --output-dir runs/demo-compeft",
    "peftkit compress runs/demo --density 0.5 --bits 4 --output-dir runs/demo-compeft4",
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
    const scope = o.scope as CompeftScope;
    const bits = Number(o.bits) as CompeftBits;
    let alpha: number;
    if (o.alpha === "auto") {
      const trials = await alphaTrials(o, adapter, out, density, scope, bits);
      for (const t of trials) console.log(`alpha ${t.alpha}: score ${t.score ?? "–"}, loss ${t.loss.toFixed(4)}`);
      alpha = pickAlpha(trials).alpha;
      console.log(`chose alpha ${alpha}`);
    } else alpha = parseAlpha(String(o.alpha));
    const s = compressAdapterFolder(adapter, out, { density, alpha, scope, bits });
    const scale =
      s.bits !== 1
        ? `${s.bits} bits (${scope === "global" ? `${s.levels} levels` : `≤ ${s.levels} levels per tensor`})`
        : `scale ${Number.isNaN(s.scale) ? "per tensor" : s.scale.toPrecision(6)}`;
    console.log(
      `wrote ${s.output}: kept ${s.kept} of ${s.entries} entries (${((100 * s.kept) / s.entries).toFixed(2)}%), ${scale}, init ${s.init}`,
    );
    console.log(`size: ${s.sourceBytes} → ${s.compressedBytes} bytes (${s.ratio.toFixed(2)}× smaller than ${s.source})`);
    return 0;
  },
};
