import type { CommandSpec } from "../args.js";
import { runEngineDemo } from "../demo.js";

export const demoCommand: CommandSpec = {
  name: "demo",
  summary: "Train a small network with the compiled AdamW step and show held-out accuracy before and after.",
  usage: "peftkit demo [--steps N]",
  flags: [{ name: "steps", type: "int", meta: "N", help: "training steps", default: 1500 }],
  examples: ["peftkit demo"],
  async run(o) {
    await runEngineDemo({ steps: o.steps as number, threads: (o.threads as number | undefined) ?? 2 });
    return 0;
  },
};
