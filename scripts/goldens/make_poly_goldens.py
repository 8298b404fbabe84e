"""POLY / MHR goldens: HF PEFT's poly forward re-derived in torch (float64).

Written from the source of huggingface/peft v0.20.0, src/peft/tuners/poly/router.py
(PolyRouter.forward) and layer.py (Linear.forward); peft itself is not installed or imported.
For each case, with fixed poly_lora_A [q, s, in/q, r], poly_lora_B [q, s, r, out/q],
module_logits [n_tasks, q*s], x [bs, seq, in] and task_ids [bs]:
  L = module_logits[task_ids].view(-1, q, s)
  eval:     L = sigmoid(L)
  training: L = RelaxedBernoulli(temperature=1, logits=L).rsample(), with the uniforms u saved
            (checked here against torch.distributions with the same torch.rand draw)
  w = L / (L.sum(-1, keepdim=True) + 1e-12)
  A = einsum("bqs,qsdr->bqdr", w, poly_lora_A).reshape(bs, in, r)
  B = einsum("bqs,qsrd->bqrd", w, poly_lora_B).transpose(1, 2).reshape(bs, r, out)
  delta = x.bmm(A).bmm(B) / r
Written to test/golden/poly/golden.safetensors for src/tuners/poly/golden.test.ts.

    /usr/bin/python3 scripts/goldens/make_poly_goldens.py
"""
import os

import torch
from torch.distributions.relaxed_bernoulli import RelaxedBernoulli
from torch.distributions.utils import clamp_probs

from st_io import write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "golden", "poly", "golden.safetensors")
EPS = 1e-12


def mix(x, a, b, w, r):
    bs = x.shape[0]
    q, s, d_in, _ = a.shape
    d_out = b.shape[3]
    A = torch.einsum("bqs,qsdr->bqdr", (w, a)).reshape(bs, q * d_in, r)
    B = torch.einsum("bqs,qsrd->bqrd", (w, b)).transpose(1, 2).reshape(bs, r, q * d_out)
    return x.bmm(A).bmm(B) / r


def case(name, gen, n_tasks, q, s, r, d_in, d_out, bs, seq, task_ids, seed):
    f = dict(generator=gen, dtype=torch.float64)
    a = torch.randn(q, s, d_in // q, r, **f) * 0.5
    b = torch.randn(q, s, r, d_out // q, **f) * 0.5
    logits = torch.randn(n_tasks, q * s, **f) * 2
    x = torch.randn(bs, seq, d_in, **f)
    tid = torch.tensor(task_ids, dtype=torch.long)
    rows = logits[tid].view(-1, q, s)
    # eval: sigmoid
    p = torch.sigmoid(rows)
    w_eval = p / (p.sum(dim=-1, keepdim=True) + EPS)
    # training: torch's rsample with its own uniforms, and the closed form from those uniforms
    torch.manual_seed(seed)
    u = clamp_probs(torch.rand(rows.shape, dtype=torch.float64))
    torch.manual_seed(seed)
    sample = RelaxedBernoulli(torch.tensor(1.0, dtype=torch.float64), logits=rows).rsample()
    closed = torch.sigmoid(rows + u.log() - (-u).log1p())
    assert torch.allclose(sample, closed, atol=1e-12), (sample - closed).abs().max()
    w_train = sample / (sample.sum(dim=-1, keepdim=True) + EPS)
    return {
        f"{name}.poly_lora_A": a,
        f"{name}.poly_lora_B": b,
        f"{name}.module_logits": logits,
        f"{name}.x": x,
        f"{name}.task_ids": tid.to(torch.float64),
        f"{name}.u": u,
        f"{name}.w_eval": w_eval,
        f"{name}.w_train": w_train,
        f"{name}.delta_eval": mix(x, a, b, w_eval, r),
        f"{name}.delta_train": mix(x, a, b, w_train, r),
        f"{name}.dims": torch.tensor([n_tasks, q, s, r, d_in, d_out], dtype=torch.float64),
    }


def main():
    gen = torch.Generator().manual_seed(41)
    tensors = {}
    tensors.update(case("poly", gen, 3, 1, 4, 2, 8, 6, 3, 2, [2, 0, 1], 7))
    tensors.update(case("mhr", gen, 2, 2, 3, 2, 8, 6, 4, 3, [1, 1, 0, 1], 8))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_safetensors(OUT, {k: v.contiguous() for k, v in tensors.items()})
    print(f"wrote {os.path.relpath(OUT)} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
