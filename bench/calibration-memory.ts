/**
 * Memory of the calibration pass against the number of batches: runs the pass (input covariances
 * of every linear layer and gradient sums and squared sums of every attention projection) over N
 * and 4N batches of a model, and prints the process's RSS after each, and its peak.
 *
 *   node --expose-gc dist/bench/calibration-memory.js [MODEL_DIR] [N]
 *
 * Each size runs in a fresh process (spawned here), so one run's peak does not hide the other's.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { runCalibration } from "../src/calibration/index.js";
import { AutoModelForCausalLM } from "../src/models/auto.js";
import { Rng } from "../src/util/rng.js";

const BATCH = 4;
const SEQ = 64;

async function child(dir: string, batches: number): Promise<void> {
  const model = await AutoModelForCausalLM.fromPretrained(dir);
  const vocab = model.config.vocab_size as number;
  const linear = model.arch.linearLayers(model.archConfig, model.head).filter((p) => p !== "lm_head");
  const rng = new Rng(1);
  function* stream() {
    for (let b = 0; b < batches; b++) {
      const ids = Array.from({ length: BATCH }, () => Array.from({ length: SEQ }, () => 2 + Math.floor(rng.next() * (vocab - 2))));
      yield { inputIds: ids, labels: ids };
    }
  }
  const mb = () => Math.round(process.memoryUsage().rss / 2 ** 20);
  let afterFirst = 0;
  const t0 = performance.now();
  const cov = await runCalibration(
    model,
    stream(),
    { layers: linear, inputCovariance: true },
    {
      onProgress: (p) => {
        if (p.batches === 1) afterFirst = mb();
      },
    },
  );
  const grads = await runCalibration(
    model,
    stream(),
    { layers: linear.filter((p) => /q_proj|v_proj/.test(p)), gradientSum: true, gradientSquareSum: true },
    {},
  );
  (globalThis as { gc?: () => void }).gc?.();
  const out = {
    batches,
    tokens: cov.tokens + grads.tokens,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    rss_after_first_batch_mb: afterFirst,
    rss_end_mb: mb(),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  await model.release();
}

const args = process.argv.slice(2);
if (args[0] === "--child") await child(args[1], Number(args[2]));
else {
  const [modelDir = "models/wordnet-llama", n = "16"] = args;
  for (const batches of [Number(n), 4 * Number(n)]) {
    const r = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url), "--child", modelDir, String(batches)], {
      encoding: "utf8",
    });
    process.stdout.write(r.stdout);
    if (r.status !== 0) process.stderr.write(r.stderr);
  }
}
