"""LoLDU goldens from the authors' algorithm (SKDDJ/LoLDU minloldu/loldu.py), re-derived in torch.

For a tall and a wide matrix W (float64): torch.linalg.lu gives W = P·L·U; D = diag(U) and
U = U / D (their ldu_decomposition); L_r = L[:, :r], z0 = D[:r], U_r = U[:r] (their
get_residual_matrix); the frozen residual W − s0·P·L_r·diag(z0)·U_r with s0 = alpha / r; and the
effective weight for trained values z, s: residual + s·P·L_r·diag(z)·U_r (their loldu_forward
adds this to the residual through the parametrisation). Written to test/golden/loldu/golden.safetensors
with the inputs, so src/tuners/loldu/golden.test.ts can compare peftkit's factors and delta.

    /usr/bin/python3 scripts/goldens/make_loldu_goldens.py
"""
import os

import torch

from st_io import write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "golden", "loldu", "golden.safetensors")


def case(name, rows, cols, r, alpha, gen):
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    p, l, u = torch.linalg.lu(w)
    d = torch.diagonal(u)
    u = u / d.unsqueeze(-1)
    lr, zr, ur = l[:, :r], d[:r], u[:r]
    s0 = alpha / r
    residual = w - s0 * p @ lr @ torch.diag(zr) @ ur
    z = zr * (1 + 0.3 * torch.randn(r, generator=gen, dtype=torch.float64))
    s = torch.tensor(0.7 * s0, dtype=torch.float64)
    w_eff = residual + s * p @ lr @ torch.diag(z) @ ur
    # Self-check: at z = z0, s = s0 the weight is W again.
    assert torch.allclose(residual + s0 * p @ lr @ torch.diag(zr) @ ur, w, atol=1e-12)
    return {
        f"{name}.w": w,
        f"{name}.p_l_r": p @ lr,
        f"{name}.u_r": ur,
        f"{name}.z0": zr,
        f"{name}.z": z,
        f"{name}.s": s.reshape(1),
        f"{name}.s0": torch.tensor([s0], dtype=torch.float64),
        f"{name}.w_eff": w_eff,
    }


def main():
    gen = torch.Generator().manual_seed(16)
    tensors = {}
    tensors.update(case("tall", 9, 6, 4, 2.0, gen))
    tensors.update(case("wide", 5, 8, 3, 1.0, gen))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_safetensors(OUT, {k: v.contiguous() for k, v in tensors.items()})
    print(f"wrote {os.path.relpath(OUT)} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
