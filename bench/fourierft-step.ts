/**
 * Training-step cost of FourierFT on models/wordnet-llama (all-linear), by graph route, next to LoRA:
 * CPU ms of this process per optimizer step (process.cpuUsage, all threads), median of alternating
 * rounds, so the other processes of a shared machine disturb it little.
 *
 *   npx tsc -p tsconfig.json
 *   node dist/bench/fourierft-step.js [--rounds 5] [--steps 5] [--batch 4] [--tokens 48]
 *
 * "auto" is what peftkit does (per layer the cheaper of the two DFT-matrix routes); "factored" and
 * "dense" force one route on every layer (FOURIER_ROUTE_OVERRIDE, read when the step is traced).
 */
import { join } from "node:path";
import { AutoModelForCausalLM } from "../src/models/auto.js";
import { FOURIER_ROUTE_OVERRIDE, type FourierRoute } from "../src/tuners/fourierft/index.js";
import { PeftModel } from "../src/tuners/peft-model.js";
import { PeftTrainer } from "../src/tuners/train.js";
import { PACKAGE_ROOT } from "../src/util/paths.js";
import { Rng } from "../src/util/rng.js";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ""), process.argv[i + 1]);
const ROUNDS = Number(args.get("rounds") ?? 5);
const STEPS = Number(args.get("steps") ?? 5);
const BATCH = Number(args.get("batch") ?? 4);
const TOKENS = Number(args.get("tokens") ?? 48);

interface Case {
  label: string;
  config: Record<string, unknown>;
  route: FourierRoute | null;
}

const FT = { peftType: "FOURIERFT", targetModules: "all-linear", scaling: 150 };
const CASES: Case[] = [
  { label: "lora r=8", config: { peftType: "LORA", r: 8, loraAlpha: 16, targetModules: "all-linear" }, route: null },
  { label: "fourierft n=1000 auto", config: { ...FT, nFrequency: 1000 }, route: null },
  { label: "fourierft n=1000 factored", config: { ...FT, nFrequency: 1000 }, route: "factored" },
  { label: "fourierft n=1000 dense", config: { ...FT, nFrequency: 1000 }, route: "dense" },
  { label: "fourierft n=200 auto", config: { ...FT, nFrequency: 200 }, route: null },
  { label: "fourierft n=200 dense", config: { ...FT, nFrequency: 200 }, route: "dense" },
];

async function main(): Promise<void> {
  const rng = new Rng(3);
  const ids = Array.from({ length: BATCH }, () => Array.from({ length: TOKENS }, () => 2 + Math.floor(rng.next() * 4000)));
  const trainers: { c: Case; t: PeftTrainer; times: number[]; release: () => Promise<void> }[] = [];
  for (const c of CASES) {
    const model = await AutoModelForCausalLM.fromPretrained(join(PACKAGE_ROOT, "models/wordnet-llama"));
    const peft = PeftModel.create(model, c.config, { seed: 1 });
    FOURIER_ROUTE_OVERRIDE.route = c.route;
    const t = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    await t.train({ inputIds: ids, labels: ids }, { lr: 1e-4 });
    FOURIER_ROUTE_OVERRIDE.route = null;
    trainers.push({ c, t, times: [], release: () => model.release() });
  }
  for (let r = 0; r < ROUNDS; r++)
    for (const x of trainers) {
      const t0 = process.cpuUsage();
      for (let s = 0; s < STEPS; s++) await x.t.train({ inputIds: ids, labels: ids }, { lr: 1e-4 });
      const d = process.cpuUsage(t0);
      x.times.push((d.user + d.system) / 1e3 / STEPS);
    }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const lora = median(trainers[0].times);
  console.log(`wordnet-llama, batch ${BATCH}×${TOKENS} tokens, ${ROUNDS} alternating rounds × ${STEPS} steps; CPU ms per step`);
  for (const x of trainers) {
    const m = median(x.times);
    console.log(`${x.c.label.padEnd(28)} ${m.toFixed(1).padStart(8)}   ×${(m / lora).toFixed(2)} of LoRA`);
    await x.t.release();
    await x.release();
  }
}

await main();
