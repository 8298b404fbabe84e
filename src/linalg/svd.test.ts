import assert from "node:assert/strict";
import { test } from "node:test";
import { svd } from "./svd.js";
import { frob, fromGolden, type GoldenMatrix, golden, orthoError, sub, usvt } from "./test-util.js";

test("svd matches torch.linalg.svd on the goldens: values, and vectors up to sign", () => {
  const cases = golden<{ a: GoldenMatrix; s: number[]; u: GoldenMatrix; v: GoldenMatrix }>("svd");
  assert.ok(Object.keys(cases).length >= 3);
  for (const [name, c] of Object.entries(cases)) {
    const a = fromGolden(c.a);
    const { u, s, v } = svd(a);
    const k = s.length;
    assert.equal(k, c.s.length, `${name}: number of values`);
    for (let i = 0; i < k; i++) assert.ok(Math.abs(s[i] - c.s[i]) < 1e-13 * c.s[0], `${name}: σ${i} ${s[i]} vs ${c.s[i]}`);
    assert.ok(frob(sub(usvt(u, s, v), a)) < 1e-13 * frob(a), `${name}: reconstruction`);
    assert.ok(orthoError(u) < 1e-13 && orthoError(v) < 1e-13, `${name}: orthonormal factors`);
    // Singular vectors are unique up to sign only for a distinct, non-zero value.
    const gu = fromGolden(c.u);
    const gv = fromGolden(c.v);
    for (let j = 0; j < k; j++) {
      const distinct = c.s[j] > 1e-10 * c.s[0] && c.s.every((x, i) => i === j || Math.abs(x - c.s[j]) > 1e-8 * c.s[0]);
      if (!distinct) continue;
      let du = 0;
      let dv = 0;
      for (let i = 0; i < u.rows; i++) du += u.data[i * k + j] * gu.data[i * k + j];
      for (let i = 0; i < v.rows; i++) dv += v.data[i * k + j] * gv.data[i * k + j];
      assert.ok(
        Math.abs(Math.abs(du) - 1) < 1e-11 && Math.abs(Math.abs(dv) - 1) < 1e-11,
        `${name}: vector ${j}: |u·u_torch| ${du}, |v·v_torch| ${dv}`,
      );
      assert.ok(Math.sign(du) === Math.sign(dv), `${name}: vector ${j}: u and v flip sign together`);
    }
  }
});
