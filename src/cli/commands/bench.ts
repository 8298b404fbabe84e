import { type CommandSpec, UsageError } from "../args.js";

export const benchCommand: CommandSpec = {
  name: "bench",
  summary: "Benchmarks: engine (matmul and a transformer-block LoRA step).",
  usage: "peftkit bench engine [--json]",
  flags: [
    { name: "what", type: "string", meta: "NAME", help: "the benchmark to run", choices: ["engine"], required: true },
    { name: "json", type: "boolean", help: "print one JSON line per result" },
  ],
  examples: ["peftkit bench engine", "peftkit bench engine --json"],
  async run(o) {
    if (o.what !== "engine") throw new UsageError(`unknown benchmark "${o.what}"`);
    const { runEngineBench } = await import("../../../bench/engine.js");
    await runEngineBench({ json: Boolean(o.json), threads: o.threads as number | undefined });
    return 0;
  },
};
