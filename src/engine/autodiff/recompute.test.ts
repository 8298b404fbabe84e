import assert from "node:assert/strict";
import { test } from "node:test";
import { interpret } from "../exec/reference/interpreter.js";
import type { HostTensor } from "../ir/host.js";
import type { Tensor } from "../trace/tensor.js";
import { checkpoint, customVjp, trace } from "../trace/trace.js";
import { rand } from "./cases.js";
import { backward } from "./grad.js";
import { onesLike } from "./rules.js";

/** A 3-layer residual MLP with one checkpoint region per layer, including a custom-VJP op. */
function net(x: Tensor, ws: Tensor[]): Tensor {
  const sm = customVjp(
    "softmax",
    (t) => [t.softmax(-1)],
    (_p, [y], [g]) => [g ? y.mul(g.sub(g.mul(y).sum(-1, true))) : null],
  );
  let h = x;
  for (const w of ws) h = checkpoint(() => h.add(sm(h.matmul(w).tanh())[0].mul(h)));
  return h.square().mean();
}

function gradGraph(recompute: boolean) {
  return trace(
    (x, a, b, c) => {
      const start = x.graph.nodes.length;
      const loss = net(x, [a, b, c]);
      return [loss, ...backward([loss], [onesLike(loss)], [a, b, c], start, { recompute })];
    },
    [
      { dtype: "f64", shape: [5, 6] },
      { dtype: "f64", shape: [6, 6] },
      { dtype: "f64", shape: [6, 6] },
      { dtype: "f64", shape: [6, 6] },
    ],
  );
}

test("gradient checkpointing recomputes each region and gives the same gradients", () => {
  const inputs: HostTensor[] = [rand([5, 6]), rand([6, 6]), rand([6, 6]), rand([6, 6])];
  const plain = gradGraph(false);
  const remat = gradGraph(true);
  // Each of the three regions is re-emitted once.
  const tanhPlain = plain.nodes.filter((n) => n.op === "tanh").length;
  const tanhRemat = remat.nodes.filter((n) => n.op === "tanh").length;
  assert.equal(tanhRemat, 2 * tanhPlain);
  const a = interpret(plain, inputs, { precision: "f64" });
  const b = interpret(remat, inputs, { precision: "f64" });
  a.forEach((t, i) => {
    const x = t.data as Float64Array;
    const y = b[i].data as Float64Array;
    x.forEach((v, j) => {
      assert.ok(Math.abs(v - y[j]) < 1e-12, `output ${i}[${j}]: ${v} vs ${y[j]}`);
    });
  });
  assert.ok((a[1].data as Float64Array).some((v) => v !== 0));
});
