import assert from "node:assert/strict";
import { resolve } from "node:path";
import { test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { matrix } from "../../util/linalg.js";
import { maxDiff } from "../ia3/testing.js";
import { ldu } from "./index.js";

// scripts/goldens/make_loldu_goldens.py: the authors' algorithm (torch.linalg.lu, D = diag(U),
// U / D, first r in pivot order, residual and effective weight) in float64.
const { tensors } = readSafetensors(resolve(REPO_ROOT, "test/golden/loldu/golden.safetensors"));
const f64 = (k: string) => tensors[k].data as Float64Array;

for (const name of ["tall", "wide"]) {
  test(`LoLDU factors and W_eff match the authors' algorithm in torch (${name})`, () => {
    const [rows, cols] = tensors[`${name}.w`].shape;
    const r = tensors[`${name}.z0`].shape[0];
    const f = ldu(matrix(rows, cols, f64(`${name}.w`)), r, name);
    assert.ok(maxDiff(f.l, f64(`${name}.p_l_r`)) < 1e-6, "P·L_r");
    assert.ok(maxDiff(f.u, f64(`${name}.u_r`)) < 1e-5, "U_r");
    assert.ok(maxDiff(f.z0, f64(`${name}.z0`)) < 1e-6, "z0");
    // W_eff = W + P·L_r·diag(s·z − s0·z0)·U_r, the delta form peftkit stores.
    const z = f64(`${name}.z`);
    const s = f64(`${name}.s`)[0];
    const s0 = f64(`${name}.s0`)[0];
    const w = f64(`${name}.w`);
    const got = Float64Array.from(w);
    for (let o = 0; o < rows; o++)
      for (let j = 0; j < r; j++) {
        const c = f.l[o * r + j] * (s * z[j] - s0 * f.z0[j]);
        for (let i = 0; i < cols; i++) got[o * cols + i] += c * f.u[j * cols + i];
      }
    const d = maxDiff(got, f64(`${name}.w_eff`));
    assert.ok(d < 1e-5, `W_eff: ${d}`);
  });
}
