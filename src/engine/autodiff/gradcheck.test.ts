import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { interpret } from "../exec/reference/interpreter.js";
import { ALL_OPS, type OpName } from "../ir/ops.js";
import { customVjp, trace } from "../trace/trace.js";
import { GRAD_CASES, type GradCase, rand } from "./cases.js";
import { valueAndGrad } from "./grad.js";
import { gradCheck } from "./gradcheck.js";
import { noGrad, VJP_RULES, type VjpRule } from "./rules.js";

const TOL = 1e-6;

/** Ops whose outputs are bool/int or that have no inputs: autodiff never calls their rule. */
const NEVER_ASKED: OpName[] = [
  "lt",
  "le",
  "gt",
  "ge",
  "eq",
  "ne",
  "and",
  "or",
  "not",
  "argmax",
  "iota",
  "constant",
  "random_uniform",
  "random_normal",
];

function opsOf(c: GradCase): Set<OpName> {
  const xs = c.inputs();
  const g = trace(
    (...ts) => c.f(...ts),
    xs.map((x) => ({ dtype: x.dtype, shape: x.shape })),
  );
  return new Set(g.nodes.map((n) => n.op));
}

function caseFails(c: GradCase): boolean {
  // Two independent draws: a broken rule fails on essentially any input, a sound one on none.
  for (let i = 0; i < 2; i++) {
    if (gradCheck(c.f, c.inputs()).maxRelError > TOL) return true;
  }
  return false;
}

describe("gradient checks (f64 interpreter, central differences)", () => {
  for (const c of GRAD_CASES) {
    test(c.name, () => {
      const r = gradCheck(c.f, c.inputs());
      assert.ok(r.maxRelError <= TOL, `${c.name}: relative errors ${r.relErrors.map((e) => e.toExponential(2)).join(", ")}`);
    });
  }

  test("stop_gradient blocks exactly the detached path", () => {
    const x = rand([3, 4]);
    const g = trace(
      (t) => {
        const [, [dx]] = valueAndGrad((u) => u.mul(u.stopGradient()).sum())(t);
        return dx;
      },
      [{ dtype: "f64", shape: [3, 4] }],
    );
    const [dx] = interpret(g, [x], { precision: "f64" });
    // d/dx Σ x·sg(x) = sg(x) = x, not 2x.
    assert.deepEqual(Array.from(dx.data as Float64Array), Array.from(x.data as Float64Array));
  });

  test("custom_vjp: a correct hand-written backward passes the gradient check", () => {
    const softplus = customVjp(
      "softplus",
      (x) => [x.exp().add(1).log()],
      ([x], _outs, [g]) => [g ? g.mul(x.sigmoid()) : null],
    );
    const r = gradCheck((x) => softplus(x)[0].mul(x), [rand([3, 4])]);
    assert.ok(r.maxRelError <= TOL, `rel err ${r.maxRelError}`);
  });

  test("custom_vjp: a straight-through estimator gives its own gradient, not the true one", () => {
    const ste = customVjp(
      "ste_round",
      (x) => [x.mul(4).round().div(4)],
      (_p, _o, [g]) => [g],
    );
    const x = rand([2, 5]);
    const g = trace((t) => valueAndGrad((u) => ste(u)[0].mul(u).sum())(t)[1][0], [{ dtype: "f64", shape: [2, 5] }]);
    const [dx] = interpret(g, [x], { precision: "f64" });
    const xs = x.data as Float64Array;
    // d/dx [q(x)·x] with dq/dx := 1 is x + q(x).
    const want = Array.from(xs, (v) => v + Math.round(v * 4) / 4);
    Array.from(dx.data as Float64Array).forEach((v, i) => {
      assert.ok(Math.abs(v - want[i]) < 1e-12);
    });
  });

  test("custom_vjp: residual outputs reach the backward and the body is not differentiated", () => {
    let bwdCalls = 0;
    const lowRank = customVjp(
      "xa",
      (x, a) => {
        const xa = x.matmul(a);
        return [xa.mul(2), xa];
      },
      ([x, a], [, xa], [g]) => {
        bwdCalls++;
        assert.ok(xa, "residual missing");
        return [g ? g.mul(2).matmul(a.transpose()) : null, g ? x.transpose().matmul(g.mul(2)) : null];
      },
    );
    const r = gradCheck((x, a) => lowRank(x, a)[0], [rand([3, 4]), rand([4, 2])]);
    assert.ok(r.maxRelError <= TOL);
    assert.ok(bwdCalls > 0);
  });
});

describe("derivative rule coverage", () => {
  const covered = new Set<OpName>();
  for (const c of GRAD_CASES) for (const op of opsOf(c)) covered.add(op);
  // Exercised by the dedicated tests above rather than by GRAD_CASES.
  covered.add("stop_gradient");
  covered.add("custom_vjp");

  test("every primitive appears in at least one gradient check", () => {
    const missing = ALL_OPS.filter((op) => !covered.has(op));
    assert.deepEqual(missing, [], `primitives without a gradient check: ${missing.join(", ")}`);
  });

  test("every primitive has exactly one rule", () => {
    assert.deepEqual(Object.keys(VJP_RULES).sort(), [...ALL_OPS].sort());
  });

  // Breaking any one rule must make some gradient check fail (the tests can fail).
  const mutable = (Object.keys(VJP_RULES) as OpName[]).filter((op) => op !== "custom_vjp" && op !== "stop_gradient");
  test("mutation: scaling the output of any one rule breaks a gradient check", () => {
    const undetected: string[] = [];
    const invokedOps: OpName[] = [];
    for (const op of mutable) {
      const original: VjpRule = VJP_RULES[op];
      const cases = GRAD_CASES.filter((c) => opsOf(c).has(op));
      let invoked = false;
      const broken: VjpRule = (ctx, cts) => {
        invoked = true;
        const res = original(ctx, cts);
        // A rule that returns no gradient is broken by returning one.
        return res.map((r, i) => {
          if (r) return r.mul(1.25);
          const x = ctx.inputs[i];
          return ctx.needs[i] ? x.mul(0).add(0.5) : null;
        });
      };
      (VJP_RULES as Record<string, VjpRule>)[op] = broken;
      try {
        const detected = cases.some((c) => caseFails(c));
        if (invoked) {
          invokedOps.push(op);
          if (!detected) undetected.push(op);
        }
      } finally {
        (VJP_RULES as Record<string, VjpRule>)[op] = original;
      }
    }
    assert.deepEqual(undetected, [], `broken rules no gradient check noticed: ${undetected.join(", ")}`);
    // Every rule that autodiff can ever call was broken once and caught.
    const unreachable = mutable.filter((op) => !invokedOps.includes(op));
    assert.deepEqual(unreachable.sort(), [...NEVER_ASKED].sort());
  });

  test("ops with bool or integer outputs use the no-gradient rule", () => {
    // Their outputs carry no cotangent, so autodiff never calls these rules and the mutation test
    // cannot reach them: they must be the shared empty rule.
    for (const op of NEVER_ASKED) {
      assert.equal(VJP_RULES[op], noGrad, op);
    }
  });
});
