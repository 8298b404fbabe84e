#!/usr/bin/python3
"""Golden values for CorDA (LoRA with init_lora_weights="corda"), re-derived in plain torch.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_corda_goldens.py
Reads test/golden/models/llama_basic/ and writes test/golden/corda_llama/{golden.safetensors, meta.json}.

PEFT is not installed; the math below is our own reading of PEFT v0.20.0's sources (nothing copied):
- tuners/lora/corda.py calib_cov_distribution's forward hook: per forward call (one sequence, batch 1),
  x = input.squeeze(0).float(); x = x / max(x).abs(); covariance += xᵀx; sample_count += 1; then
  covariance /= sample_count;
- collect_eigens_for_layer: damp = 0.01; C̃ = C + diag(ones · mean(diag C) · damp), doubled while
  ‖C̃·inv(C̃) − I‖ (torch.dist, Frobenius) >= 0.05; U, S, Vh = svd(W·C̃); V = (Vh·inv(C̃))ᵀ;
- crop_corda_eigens: "ipm" keeps [:r], "kpm" keeps [-r:];
- layer.py corda_init: S /= scaling; lora_A = Vᵀ·√S (rows), lora_B = U·√S (columns);
  weight = W − scaling·lora_B·lora_A.
PEFT computes in float32; the golden factors are computed in float64 (the same formulas) so they are not
limited by float32 SVD error, and the script checks that float32 gives the same residual within 1e-4.
The calibration forwards use make_peft_goldens.llama_forward (our re-implementation of transformers'
Llama) with a linear hook that records the inputs of the two target layers.
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as P  # noqa: E402
from common import SeededGen, check  # noqa: E402
from st_io import write_safetensors  # noqa: E402

# Outside test/golden/peft/, which make_peft_goldens.py deletes and rewrites.
OUT = os.path.join(P.ROOT, "test", "golden", "corda_llama")
LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
R_RANK = 3
ALPHA = 6
LENGTHS = [9, 6, 11, 8, 10, 7, 12, 9]

torch.set_grad_enabled(False)


class Gen(SeededGen):
    base_seed = 2406  # arXiv 2406.05223


def hooked_covariances(cfg, W, seqs):
    """PEFT's hook over one forward per sequence; returns {layer: C} (float64) and the sample count."""
    cov = {p: 0 for p in LAYERS}
    count = {p: 0 for p in LAYERS}

    def lin(path, x, dtype, bias=None):
        if path in LAYERS:
            inp = x.squeeze(0).float()
            inp = inp / torch.max(inp).abs()
            cov[path] = cov[path] + (inp.t().double() @ inp.double())
            count[path] += 1
        return x @ W[path + ".weight"].to(dtype).t()

    for s in seqs:
        ids = s[None]
        P.llama_forward(cfg, W, ids, torch.ones_like(ids), lin=lin)
    return {p: cov[p] / count[p] for p in LAYERS}, len(seqs)


def corda_factors(w, c, r, mode, scaling, dtype):
    w = w.to(dtype)
    c = c.to(dtype)
    n = c.shape[0]
    damp = 0.01
    while True:
        fix = c + torch.diag(torch.ones(n, dtype=dtype) * torch.mean(torch.diag(c)) * damp)
        inv = torch.linalg.inv(fix)
        if torch.dist(fix @ inv, torch.eye(n, dtype=dtype)).item() < 0.05:
            break
        damp *= 2
    u, s, vh = torch.linalg.svd(w @ fix, full_matrices=False)
    v = (vh @ inv).t()
    k = s.shape[0]
    # W = U·S·V̂ᵀ exactly
    check(float(((u * s) @ v.t() - w).abs().max()) < (1e-9 if dtype == torch.float64 else 1e-3), "W = U S V̂ᵀ")
    sl = slice(0, r) if mode == "ipm" else slice(k - r, k)
    u, s, v = u[:, sl], s[sl], v[:, sl]
    s = s / scaling
    a = v.t() * s.sqrt().view(-1, 1)
    b = u * s.sqrt()
    residual = w - scaling * b @ a
    return a, b, residual, damp


def main():
    cfg, _meta, W, _golden = P.load_base("llama_basic")
    gen = Gen("corda_llama")
    vocab = cfg["vocab_size"]
    seqs = [gen.ints(3, vocab, (n,)) for n in LENGTHS]
    covs, samples = hooked_covariances(cfg, W, seqs)
    T = max(LENGTHS)
    ids = torch.zeros(len(seqs), T, dtype=torch.int64)
    mask = torch.zeros(len(seqs), T, dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    scaling = ALPHA / R_RANK
    report = {}
    for p in LAYERS:
        out[f"cov.{p}"] = covs[p].float()
        w = W[p + ".weight"]
        for mode in ("ipm", "kpm"):
            a, b, res, damp = corda_factors(w, covs[p], R_RANK, mode, scaling, torch.float64)
            a32, b32, res32, _ = corda_factors(w, covs[p], R_RANK, mode, scaling, torch.float32)
            d = float((res32.double() - res).abs().max())
            check(d < 1e-4, f"{p} {mode}: float32 residual differs by {d}")
            check(float((res + scaling * b @ a - w.double()).abs().max()) < 1e-6, "residual + s·B·A = W")
            out[f"{mode}.{p}.lora_A"] = a.float()
            out[f"{mode}.{p}.lora_B"] = b.float()
            out[f"{mode}.{p}.residual"] = res.float()
            report[f"{mode}.{p}"] = {"damp": damp, "float32_residual_maxdiff": d}
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    write_safetensors(os.path.join(OUT, "golden.safetensors"), out)
    meta = {
        "description": "CorDA on llama_basic: PEFT's calibration hook over one forward per sequence, then "
        "collect_eigens_for_layer / crop_corda_eigens / corda_init for ipm and kpm (float64)",
        "base": "llama_basic",
        "layers": LAYERS,
        "r": R_RANK,
        "lora_alpha": ALPHA,
        "samples": samples,
        "peft_tag": P.PEFT_TAG,
        "checks": report,
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
