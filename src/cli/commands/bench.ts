import { type CommandSpec, UsageError } from "../args.js";

export const benchCommand: CommandSpec = {
  name: "bench",
  summary: "Benchmarks: engine (matmul, transformer-block step), train (LoRA/full steps on an HF config), generate (KV-cache decoding).",
  usage: "peftkit bench engine|train|generate [options] [--json]",
  flags: [
    { name: "what", type: "string", meta: "NAME", help: "the benchmark", choices: ["engine", "train", "generate"], required: true },
    { name: "config", type: "string", meta: "FILE", help: "train/generate: an HF config.json (random weights are used)" },
    {
      name: "method",
      type: "string",
      help: "train: PEFT method, or lisa/hft/gradnorm_lorp (whole base tensors), or mezo/sparse_mezo (zeroth-order over all weights)",
      default: "lora",
    },
    {
      name: "density",
      type: "number",
      meta: "D",
      help: "train: spiel's density (share of all parameters trained; default 0.01)",
      exclusiveMin: 0,
      max: 1,
    },
    { name: "lisa-layers", type: "int", meta: "N", help: "train: lisa's γ, layers trained at a time (default 2)", min: 1 },
    { name: "rank", type: "int", meta: "R", help: "train: gradnorm_lorp's projector rank (default: --r)", min: 1 },
    { name: "v-ratio", type: "number", meta: "R", help: "train: s2ft's v_ratio (with none given: o 0.052, d 0.02)", min: 0, max: 1 },
    { name: "o-ratio", type: "number", meta: "R", help: "train: s2ft's o_ratio (with none given: o 0.052, d 0.02)", min: 0, max: 1 },
    { name: "u-ratio", type: "number", meta: "R", help: "train: s2ft's u_ratio (with none given: o 0.052, d 0.02)", min: 0, max: 1 },
    { name: "d-ratio", type: "number", meta: "R", help: "train: s2ft's d_ratio (with none given: o 0.052, d 0.02)", min: 0, max: 1 },
    { name: "r", type: "int", meta: "N", help: "LoRA rank", default: 16, min: 1 },
    { name: "target", type: "list", meta: "LIST", help: 'target modules or "all-linear"', default: ["all-linear"] },
    { name: "batch", type: "int", meta: "N", help: "batch size", default: 4, min: 1 },
    { name: "seq", type: "int", meta: "N", help: "train: sequence length", default: 256, min: 1 },
    { name: "steps", type: "int", meta: "N", help: "train: timed steps after one warm-up", default: 3, min: 1 },
    { name: "full", type: "boolean", help: "train: full fine-tuning instead of an adapter" },
    {
      name: "inference",
      type: "boolean",
      help: "train: an inference-only forward with the loss of the same batch (no backward, no update): the memory baseline of --method mezo",
    },
    { name: "zo-split", type: "boolean", help: "train: mezo's two forwards as two runs of a one-forward graph instead of one graph" },
    {
      name: "gradient-checkpointing",
      type: "boolean",
      help: "train: recompute each layer's activations in the backward pass (less memory)",
    },
    {
      name: "startup",
      type: "boolean",
      help: "train: measure process start to end of the first step in two fresh processes, cold (empty compile cache) then warm",
    },
    {
      name: "static-shapes",
      type: "boolean",
      help: "train: compile the step for this batch and sequence length (concrete dims: faster session creation)",
    },
    { name: "peak", type: "number", meta: "GFLOPS", help: "train: matmul peak to compare with (default: measured)", exclusiveMin: 0 },
    { name: "prompt-length", type: "int", meta: "N", help: "generate: prompt tokens", default: 32, min: 1 },
    { name: "new-tokens", type: "int", meta: "N", help: "generate: tokens to decode", default: 64, min: 1 },
    {
      name: "attn-pruning-ratio",
      type: "number",
      meta: "R",
      help: "generate: also time the model with this share of heads pruned by light_peft's rule (whole KV groups)",
      min: 0,
      exclusiveMax: 1,
    },
    {
      name: "ffn-pruning-ratio",
      type: "number",
      meta: "R",
      help: "generate: also time the model with this share of FFN neurons pruned by light_peft's rule",
      min: 0,
      exclusiveMax: 1,
    },
    { name: "repeats", type: "int", meta: "N", help: "generate: timed repeats", default: 3, min: 1 },
    {
      name: "prune-hidden",
      type: "number",
      meta: "F",
      help: "generate: time the model against itself pruned to round(F·hidden_size) hidden channels (PAT's pruning); combines with the two ratios",
      exclusiveMin: 0,
      exclusiveMax: 1,
    },
    { name: "json", type: "boolean", help: "print JSON lines" },
  ],
  examples: [
    "peftkit bench engine --json",
    "peftkit bench train --config bench/configs/smollm2-135m.json --method lora --r 16 --target all-linear --batch 4 --seq 256 --steps 3 --json",
    "peftkit bench train --config bench/configs/smollm2-135m.json --startup --json",
    "peftkit bench generate --config bench/configs/smollm2-135m.json --batch 1",
    "peftkit bench generate --config bench/configs/smollm2-135m.json --batch 1 --attn-pruning-ratio 0.3333 --ffn-pruning-ratio 0.3333",
    "peftkit bench generate --config bench/configs/smollm2-135m.json --batch 1 --prune-hidden 0.75",
  ],
  async run(o) {
    const threads = o.threads as number | undefined;
    if (o.what === "engine") {
      const { runEngineBench } = await import("../../../bench/engine.js");
      await runEngineBench({ json: Boolean(o.json), threads });
      return 0;
    }
    if (!o.config) throw new UsageError(`peftkit bench ${o.what}: --config is required`);
    if (o.what === "train") {
      const { runStartupBench, runTrainBench } = await import("../../../bench/train.js");
      const r = await (o.startup ? runStartupBench : runTrainBench)({
        config: o.config as string,
        method: o.method as string,
        density: o.density as number | undefined,
        lisaLayers: o.lisaLayers as number | undefined,
        rank: o.rank as number | undefined,
        s2ftRatios: {
          v: o.vRatio as number | undefined,
          o: o.oRatio as number | undefined,
          u: o.uRatio as number | undefined,
          d: o.dRatio as number | undefined,
        },
        r: o.r as number,
        target: o.target as string[],
        batch: o.batch as number,
        seq: o.seq as number,
        steps: o.steps as number,
        full: Boolean(o.full),
        inference: Boolean(o.inference),
        zoSplit: Boolean(o.zoSplit),
        gradientCheckpointing: Boolean(o.gradientCheckpointing),
        staticShapes: Boolean(o.staticShapes),
        threads,
        peak: o.peak as number | undefined,
      });
      console.log(
        o.json
          ? JSON.stringify(r)
          : Object.entries(r)
              .map(([k, v]) => `${k}: ${typeof v === "number" ? +v.toFixed(3) : v}`)
              .join("\n"),
      );
      return 0;
    }
    if (o.attnPruningRatio !== undefined || o.ffnPruningRatio !== undefined || o.pruneHidden !== undefined) {
      const { runPrunedGenerateBench } = await import("../../../bench/generate-pruned.js");
      const rows = await runPrunedGenerateBench({
        config: o.config as string,
        attnRatio: o.attnPruningRatio as number | undefined,
        ffnRatio: o.ffnPruningRatio as number | undefined,
        hiddenShare: o.pruneHidden as number | undefined,
        promptLength: o.promptLength as number,
        newTokens: o.newTokens as number,
        batch: o.batch as number,
        repeats: o.repeats as number,
        threads,
      });
      for (const r of rows)
        console.log(
          o.json
            ? JSON.stringify(r)
            : `${r.mode}: hidden ${r.hidden_size}, ${r.heads} heads, ${r.intermediate} FFN, ${r.params} params: ${(r.tokens_per_s as number).toFixed(1)} tokens/s (${(r.speedup_vs_base as number).toFixed(3)}× base speed)`,
        );
      return 0;
    }
    const { runGenerateBench } = await import("../../../bench/generate.js");
    const rows = await runGenerateBench({
      config: o.config as string,
      r: o.r as number,
      target: o.target as string[],
      promptLength: o.promptLength as number,
      newTokens: o.newTokens as number,
      batch: o.batch as number,
      repeats: o.repeats as number,
      threads,
    });
    for (const r of rows)
      console.log(
        o.json
          ? JSON.stringify(r)
          : `${r.mode}: ${(r.tokens_per_s as number).toFixed(1)} tokens/s (${(r.vs_merged as number).toFixed(3)}× merged time)`,
      );
    return 0;
  },
};
