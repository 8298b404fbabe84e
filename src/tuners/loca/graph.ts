/**
 * LoCA's ΔW in the graph, with the authors' backward (TL-UESTC/LoCA,
 * peft/src/peft/tuners/loca/layer.py, IdctWithIndexGrad):
 *
 *   p = clip(ℓ, 0, 0.999)·(d − 1) per axis (continuous), (u, v) = round(p),
 *   ΔW_raw = iDCT2(S) = C_outᵀ·S·C_in with S[u_i, v_i] += a_i,
 *   K = DCT2(∂L/∂ΔW_raw) = C_out·G·C_inᵀ,
 *   ∂L/∂a_i = K[u_i, v_i],
 *   ∂L/∂p_row,i = clamp(½·a_i·(K[u_i+1, v_i] − K[u_i−1, v_i]), −1, 1)  (neighbours clamped to the
 *   matrix), the same along columns; autodiff then carries ∂L/∂p through ·(d − 1) and the clip to
 *   ℓ, as torch does with the authors' lo_clip. The rounding itself has no derivative: the
 *   location gradient is the authors' finite-difference estimate, not ∂L/∂ℓ.
 *
 * Forward and backward each come in two forms that compute the same values, picked by cost:
 * - "gather": ΔW = (C_out[u, :]ᵀ·diag(a))·C_in[v, :] costs B·out·in; the five K entries per i come
 *   from P = C_out[[u; u−1; u+1], :]·G (3B·out·in) and row dot products with C_in[v(±1), :].
 * - "dense": S scattered, C_outᵀ·S·C_in and K = C_out·G·C_inᵀ cost out·in·(out + in).
 * "auto" takes gather when B < out + in (forward) or 3B < out + in (backward).
 */
import { concat, constant, type Tensor, where, zeros } from "../../engine/trace/tensor.js";
import { customVjp } from "../../engine/trace/trace.js";
import { dctBasisTensor } from "./dct.js";

export type LocaForm = "gather" | "dense" | "auto";

export interface LocaForms {
  forward?: LocaForm;
  backward?: LocaForm;
}

/** The clip bound of the continuous locations (the authors' 0.999). */
export const LOCATION_MAX = 0.999;

function basis(n: number, like: Tensor): Tensor {
  return constant(dctBasisTensor(n, like.dtype === "f64" ? "f64" : "f32"));
}

/** Integer positions of continuous ones (round half to even, as torch.round). */
const toIndex = (p: Tensor): Tensor => p.round().cast("i64");

/**
 * ΔW_raw [out, in] of coefficients a [B] at continuous locations ℓ [2, B]; multiply by the scale
 * outside, as the authors do, so their gradient clamp sees α·∂L/∂ΔW.
 */
export function locaDeltaWeight(a: Tensor, loc: Tensor, dOut: number, dIn: number, forms: LocaForms = {}): Tensor {
  const b = a.shape[0] as number;
  const lc = loc.clamp(0, LOCATION_MAX);
  const pRow = lc.select(0, 0).mul(dOut - 1);
  const pCol = lc.select(0, 1).mul(dIn - 1);
  const fwdForm = pick(forms.forward, b, dOut + dIn);
  const bwdForm = pick(forms.backward, 3 * b, dOut + dIn);
  const idct = customVjp(
    "loca_idct",
    (coef, pr, pc) => {
      const cOut = basis(dOut, coef);
      const cIn = basis(dIn, coef);
      const u = toIndex(pr);
      const v = toIndex(pc);
      if (fwdForm === "gather") return [cOut.gather(u, 0).mul(coef.unsqueeze(-1)).transpose().matmul(cIn.gather(v, 0))];
      const s = zeros([dOut * dIn], coef.dtype)
        .scatterAdd(u.mul(dIn).add(v), coef, 0)
        .reshape([dOut, dIn]);
      return [cOut.transpose().matmul(s).matmul(cIn)];
    },
    ([coef, pr, pc], _outs, [g]) => {
      if (!g) return [null, null, null];
      const cOut = basis(dOut, coef);
      const cIn = basis(dIn, coef);
      const u = toIndex(pr);
      const v = toIndex(pc);
      const uDown = where(u.gt(0), u.sub(1), 0);
      const uUp = where(u.lt(dOut - 1), u.add(1), dOut - 1);
      const vDown = where(v.gt(0), v.sub(1), 0);
      const vUp = where(v.lt(dIn - 1), v.add(1), dIn - 1);
      let k: (rows: Tensor, cols: Tensor, which: 0 | 1 | 2) => Tensor;
      if (bwdForm === "dense") {
        const flat = cOut
          .matmul(g)
          .matmul(cIn.transpose())
          .reshape([dOut * dIn]);
        k = (rows, cols) => flat.gather(rows.mul(dIn).add(cols), 0);
      } else {
        // Rows u, u−1, u+1 of C_out·G, then each entry as a dot product with a row of C_in.
        const p = cOut.gather(concat([u, uDown, uUp], 0), 0).matmul(g);
        const part = [p.slice(0, 0, b), p.slice(0, b, 2 * b), p.slice(0, 2 * b, 3 * b)];
        k = (_rows, cols, which) => part[which].mul(cIn.gather(cols, 0)).sum(-1);
      }
      const half = coef.mul(0.5);
      const gradA = k(u, v, 0);
      const gradRow = half.mul(k(uUp, v, 2).sub(k(uDown, v, 1))).clamp(-1, 1);
      const gradCol = half.mul(k(u, vUp, 0).sub(k(u, vDown, 0))).clamp(-1, 1);
      return [gradA, gradRow, gradCol];
    },
  );
  return idct(a, pRow, pCol)[0];
}

function pick(form: LocaForm | undefined, gatherCost: number, denseCost: number): "gather" | "dense" {
  if (form === "gather" || form === "dense") return form;
  return gatherCost < denseCost ? "gather" : "dense";
}
