#!/usr/bin/python3
"""Goldens for peftkit's host linear algebra (src/linalg/, exported by src/util/linalg.ts).

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_linalg_goldens.py
Writes test/golden/linalg/linalg.json (sorted keys, deterministic; small float64 matrices written
with Python's shortest round-trip repr, so they are read back bit for bit). Uses torch 1.13 and
numpy 1.24 (Debian's python3-torch); scipy is not installed, so LU comes from torch.linalg.lu
(LAPACK getrf), cross-checked against torch.lu + torch.lu_unpack.

Conventions of the file (the TypeScript side compares in them):
  - matrices are {"rows", "cols", "data"} row-major;
  - lu: perm[i] = row of A that is row i of P·A (torch's A = P·L·U, so perm[i] = argmax P[:, i]);
    partial pivoting makes L, U and perm unique for these inputs, so the test compares them directly
    (perm exactly, L and U to round-off); "steps" < min(m, n) marks a rank-deficient input whose
    later pivots are chosen among round-off, so only its first "steps" columns are compared;
  - svd / eigh: values are unique; vectors only up to sign (and only when the values are distinct),
    so the test compares |Uᵀ·U_golden| with I, or the projector, not the vectors themselves.

Self-checks (the script fails if one does not hold): P·L·U = A, torch.lu/lu_unpack agrees with
torch.linalg.lu, numpy and torch agree on singular values, eigenvalues, inverses and Cholesky factors.
"""
import json
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "test", "golden", "linalg", "linalg.json")

torch.set_default_dtype(torch.float64)
GEN = torch.Generator().manual_seed(12)


def randn(r, c):
    return torch.randn(r, c, generator=GEN, dtype=torch.float64)


def mat(t):
    t = t.detach().to(torch.float64).contiguous()
    if t.dim() == 1:
        t = t.reshape(1, -1)
    return {"rows": t.shape[0], "cols": t.shape[1], "data": [float(x) for x in t.reshape(-1).tolist()]}


def vec(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def lu_case(name, a, steps=None):
    """steps: how many elimination steps are determined (the rank); later pivots pick among round-off."""
    p, l, u = torch.linalg.lu(a)
    check(float((p @ l @ u - a).abs().max()) < 1e-12 * max(1.0, float(a.abs().max())), f"{name}: P·L·U != A")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.lu is deprecated; it is the cross-check here
        lu_data, piv = torch.lu(a.unsqueeze(0))
    p2, l2, u2 = torch.lu_unpack(lu_data, piv)
    check(torch.equal(p2[0], p) and torch.equal(l2[0], l) and torch.equal(u2[0], u), f"{name}: torch.lu_unpack differs from torch.linalg.lu")
    perm = [int(torch.argmax(p[:, i])) for i in range(a.shape[0])]
    check(torch.equal(a[perm], p.T @ a), f"{name}: perm does not match P")
    return {"a": mat(a), "perm": perm, "l": mat(l), "u": mat(u), "steps": min(a.shape) if steps is None else steps}


def lu_cases():
    low_rank = randn(7, 3) @ randn(3, 7)
    zero_col = randn(5, 5)
    zero_col[:, 2] = 0
    ints = torch.randint(-3, 4, (6, 6), generator=GEN).to(torch.float64)
    return {
        "square_6": lu_case("square_6", randn(6, 6)),
        "tall_9x5": lu_case("tall_9x5", randn(9, 5)),
        "wide_5x9": lu_case("wide_5x9", randn(5, 9)),
        "rank3_7x7": lu_case("rank3_7x7", low_rank, steps=3),
        "zero_column_5": lu_case("zero_column_5", zero_col),
        "small_ints_6": lu_case("small_ints_6", ints),
    }


def sym_with_spectrum(values):
    n = len(values)
    q, _ = torch.linalg.qr(randn(n, n))
    return q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ q.T


def eigh_cases():
    out = {}
    x = randn(6, 9)
    inputs = {
        "random_sym_7": (lambda r: (r + r.T) / 2)(randn(7, 7)),
        "covariance_rank6_9": x.T @ x,  # 9x9, PSD, rank 6
        "indefinite_known_6": sym_with_spectrum([5.0, 3.0, 1.0, -0.5, -2.0, -4.0]),
    }
    for name, a in inputs.items():
        a = (a + a.T) / 2  # exactly symmetric in float64
        w, v = torch.linalg.eigh(a)  # ascending
        wn, vn = np.linalg.eigh(a.numpy())
        check(np.abs(w.numpy() - wn).max() < 1e-12 * max(1.0, float(w.abs().max())), f"{name}: numpy and torch eigenvalues differ")
        check(float((a @ v - v @ torch.diag(w)).abs().max()) < 1e-12 * max(1.0, float(a.abs().max())), f"{name}: A V != V Λ")
        order = torch.argsort(w, descending=True)
        out[name] = {"a": mat(a), "values": vec(w[order]), "vectors": mat(v[:, order])}
    return out


def svd_cases():
    out = {}
    inputs = {"tall_8x5": randn(8, 5), "wide_4x10": randn(4, 10), "rank2_6x6": randn(6, 2) @ randn(2, 6)}
    for name, a in inputs.items():
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        sn = np.linalg.svd(a.numpy(), compute_uv=False)
        check(np.abs(s.numpy() - sn).max() < 1e-12 * float(s[0]), f"{name}: numpy and torch singular values differ")
        out[name] = {"a": mat(a), "s": vec(s), "u": mat(u), "v": mat(vh.T)}
    return out


def cholesky_cases():
    out = {}
    for name, (r, c) in {"spd_5": (9, 5), "spd_8": (12, 8)}.items():
        x = randn(r, c)
        a = x.T @ x + 0.1 * torch.eye(c)
        l = torch.linalg.cholesky(a)
        check(np.abs(np.linalg.cholesky(a.numpy()) - l.numpy()).max() < 1e-12 * float(a.abs().max()), f"{name}: numpy and torch differ")
        out[name] = {"a": mat(a), "l": mat(l)}
    return out


def inverse_cases():
    out = {}
    a = randn(6, 6)
    inv = torch.linalg.inv(a)
    check(np.abs(np.linalg.inv(a.numpy()) - inv.numpy()).max() < 1e-10 * float(inv.abs().max()), "inverse: numpy and torch differ")
    b = randn(6, 3)
    out["random_6"] = {"a": mat(a), "inverse": mat(inv), "b": mat(b), "solve": mat(torch.linalg.solve(a, b))}
    return out


def damped_inverse_cases():
    """PEFT's corda.py: fix = C + diag(ones * mean(diag C) * damp); torch.linalg.inv(fix), damp starting at 0.01."""
    out = {}
    x = randn(5, 8)  # 5 samples of 8 features: C is rank 5, singular
    c = x.T @ x / 5
    for damp in (0.01, 0.04):
        compensate = torch.diag(torch.ones(c.size(0)) * torch.mean(torch.diag(c)) * damp)
        inv = torch.linalg.inv(c + compensate)
        resid = float(torch.dist((c + compensate) @ inv, torch.eye(8)))
        out[f"covariance_rank5_8_damp_{damp}"] = {"a": mat(c), "lambda": damp, "inverse": mat(inv), "residual": resid}
    return out


def randomized_svd_cases():
    """Exactly low-rank inputs (rank <= q): the randomized SVD is then exact, whatever the random draw."""
    out = {}
    a = randn(30, 4) @ torch.diag(torch.tensor([9.0, 4.0, 2.0, 0.5])) @ randn(4, 20)
    torch.manual_seed(0)
    u, s, v = torch.svd_lowrank(a, q=6, niter=2)
    s_full = torch.linalg.svd(a).S
    check(float((s[:4] - s_full[:4]).abs().max()) < 1e-10 * float(s_full[0]), "svd_lowrank is not exact on a rank-4 input")
    out["rank4_30x20"] = {"a": mat(a), "s_lowrank_q6": vec(s), "s": vec(s_full[:6])}
    return out


def main():
    out = {
        "generator": "scripts/goldens/make_linalg_goldens.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "lu": lu_cases(),
        "eigh": eigh_cases(),
        "svd": svd_cases(),
        "cholesky": cholesky_cases(),
        "inverse": inverse_cases(),
        "damped_inverse": damped_inverse_cases(),
        "randomized_svd": randomized_svd_cases(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    text = json.dumps(out, sort_keys=True, separators=(",", ":"))
    check(len(text) < 200_000, f"golden file too large: {len(text)} bytes")
    with open(OUT, "w") as f:
        f.write(text + "\n")
    print(f"wrote {OUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
