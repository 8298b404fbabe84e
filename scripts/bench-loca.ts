/**
 * Times LoCA's ΔW and its backward in the two forms of src/tuners/loca/graph.ts on ONNX Runtime:
 * "gather" (basis rows picked per coefficient, B·out·in) and "dense" (the scattered spectrum times
 * the full DCT matrices, out·in·(out + in)), for one layer and a batch of activations.
 *
 *   npx tsc -p tsconfig.json
 *   node dist/scripts/bench-loca.js [--d 768] [--b 100,1000] [--tokens 512] [--reps 5]
 *
 * Prints the median wall milliseconds of a forward + backward (gradients of a and ℓ) per form.
 */
import { parseArgs } from "node:util";
import { valueAndGrad } from "../src/engine/autodiff/grad.js";
import { compileGraph } from "../src/engine/exec/backend.js";
import { hostTensor } from "../src/engine/ir/host.js";
import type { Tensor } from "../src/engine/trace/tensor.js";
import { spec, trace } from "../src/engine/trace/trace.js";
import { type LocaForm, locaDeltaWeight } from "../src/tuners/loca/graph.js";
import { fillNormal, fillUniform, Rng } from "../src/util/rng.js";

const { values: o } = parseArgs({
  options: {
    d: { type: "string", default: "768" },
    b: { type: "string", default: "100,1000" },
    tokens: { type: "string", default: "512" },
    reps: { type: "string", default: "5" },
  },
});
const d = Number(o.d);
const n = Number(o.tokens);
const reps = Number(o.reps);
const rng = new Rng(1);

for (const b of (o.b as string).split(",").map(Number)) {
  const inputs = [
    hostTensor("f32", [b], fillNormal(b, 0.01, rng)),
    hostTensor("f32", [2, b], fillUniform(2 * b, 0, 1, rng)),
    hostTensor("f32", [n, d], fillNormal(n * d, 1, rng)),
  ];
  for (const [fwd, bwd] of [
    ["gather", "gather"],
    ["dense", "dense"],
    ["gather", "dense"],
    ["dense", "gather"],
  ] as [LocaForm, LocaForm][]) {
    const g = trace(
      (a: Tensor, loc: Tensor, x: Tensor) => {
        const loss = (aa: Tensor, ll: Tensor, xx: Tensor) =>
          xx
            .matmul(locaDeltaWeight(aa, ll, d, d, { forward: fwd, backward: bwd }).transpose())
            .square()
            .sum();
        const [v, grads] = valueAndGrad(loss, [0, 1])(a, loc, x);
        return [v, ...grads];
      },
      [spec("f32", [b]), spec("f32", [2, b]), spec("f32", [n, d])],
    );
    const exe = await compileGraph(g);
    await exe.run(inputs);
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      await exe.run(inputs);
      times.push(performance.now() - t0);
    }
    await exe.release();
    times.sort((x, y) => x - y);
    console.log(`d=${d} B=${b} tokens=${n} forward ${fwd} backward ${bwd}: ${times[Math.floor(reps / 2)].toFixed(1)} ms`);
  }
}
