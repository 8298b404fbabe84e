#!/usr/bin/python3
"""Golden values for `peftkit merge-adapters` / LoRA add_weighted_adapter (src/tuners/lora/weighted.ts).

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_merge_goldens.py
Writes test/golden/merge/merge.json. PEFT is not installed or run: this is our own torch re-derivation
of huggingface/peft's src/peft/utils/merge_utils.py (magnitude pruning with torch.topk, majority sign
mask "total"/"frequency", disjoint merge, task_arithmetic, ties, magnitude_prune) and of
src/peft/tuners/lora/model.py add_weighted_adapter (_generalized_task_arithmetic_weighted_adapter: the
rule on the As with weights sign(w·s)·sqrt|w·s| and on the Bs with sqrt|w·s|; cat; and
_svd_generalized_task_arithmetic_weighted_adapter: the rule on ΔW_i = s_i·B_i·A_i with weights w_i·s_i,
then torch.linalg.svd truncated to the new rank, B = U·diag(S), A = Vh), read from the sources of
huggingface/peft@5d602fdb. Also torch.quantile (linear interpolation) values, used by svd_clamp.

Inputs are float32 random factors (so peftkit holds them exactly) for one 32×32 layer (llama_basic's
model.layers.0.self_attn.q_proj); the math runs in float64. The svd cases give ΔW = B·A, which does
not depend on the signs LAPACK picks for the singular vectors. Output is deterministic.
"""
import json
import math
import os

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "test", "golden", "merge")

# (r, lora_alpha): scaling α/r.
ADAPTERS = {"x": (4, 8), "y": (4, 2), "z": (2, 6)}
IN = OUT_F = 32


def factors(seed, r):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(r, IN, generator=g, dtype=torch.float32) * 0.3
    b = torch.randn(OUT_F, r, generator=g, dtype=torch.float32) * 0.3
    return a.double(), b.double()


# ---- merge_utils, re-derived ----
def magnitude_pruning(t, density):
    if density >= 1:
        return t
    k = int(density * t.numel())
    mask = torch.zeros(t.numel(), dtype=t.dtype)
    mask[torch.topk(t.abs().reshape(-1), k=k, largest=True).indices] = 1
    return t * mask.reshape(t.shape)


def majority_sign_mask(stacked, method):
    sign = stacked.sign()
    mag = stacked.sum(dim=0) if method == "total" else sign.sum(dim=0)
    majority = torch.where(mag >= 0, 1.0, -1.0).to(stacked.dtype)
    return sign == majority


def disjoint_merge(weighted, mask):
    return (weighted * mask).sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)


def wview(stacked, w):
    return torch.tensor(w, dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))


def task_arithmetic(ts, w):
    s = torch.stack(ts)
    return (s * wview(s, w)).sum(dim=0)


def ties(ts, w, density, method):
    s = torch.stack([magnitude_pruning(t, density) for t in ts])
    return disjoint_merge(s * wview(s, w), majority_sign_mask(s, method))


def magnitude_prune(ts, w, density):
    return task_arithmetic([magnitude_pruning(t, density) for t in ts], w)


def rule(kind, ts, w, density, sign):
    if kind in ("linear", "svd"):
        return task_arithmetic(ts, w)
    if kind == "ties":
        return ties(ts, w, density, sign)
    if kind == "magnitude_prune":
        return magnitude_prune(ts, w, density)
    raise ValueError(kind)


# ---- add_weighted_adapter, re-derived ----
def weighted_adapter(kind, names, weights, density=None, sign="total", svd_rank=None):
    fs = {n: factors(seed, ADAPTERS[n][0]) for seed, n in enumerate(ADAPTERS, start=11)}
    scal = {n: ADAPTERS[n][1] / ADAPTERS[n][0] for n in ADAPTERS}
    if len(names) == 1:
        kind = "linear"
    if kind == "cat":
        a = torch.cat([fs[n][0] * w * scal[n] for n, w in zip(names, weights)], dim=0)
        b = torch.cat([fs[n][1] for n in names], dim=1)
        return {"a": a, "b": b}
    if kind.endswith("svd"):
        base = kind[: -len("_svd")] if kind != "svd" else "svd"
        deltas = [scal[n] * fs[n][1] @ fs[n][0] for n in names]
        d = rule(base, deltas, [w * scal[n] for n, w in zip(names, weights)], density, sign)
        rank = svd_rank or max(ADAPTERS[n][0] for n in names)
        u, s, vh = torch.linalg.svd(d, full_matrices=True)
        b = u[:, :rank] @ torch.diag(s[:rank])
        a = vh[:rank, :]
        return {"delta": b @ a, "sigma": s[:rank]}
    ws = [w * scal[n] for n, w in zip(names, weights)]
    wa = [math.sqrt(abs(x)) * (1 if x >= 0 else -1) for x in ws]
    wb = [math.sqrt(abs(x)) for x in ws]
    a = rule(kind, [fs[n][0] for n in names], wa, density, sign)
    b = rule(kind, [fs[n][1] for n in names], wb, density, sign)
    return {"a": a, "b": b}


CASES = [
    ("linear", ["x", "y"], [0.7, -1.3], {}),
    ("linear", ["x"], [-1.0], {}),  # task-vector negation, λ = 1
    ("linear", ["y"], [-0.4], {}),
    ("cat", ["x", "z"], [0.7, -1.3], {}),
    ("ties", ["x", "y"], [0.7, -1.3], {"density": 0.5}),
    ("ties", ["x", "y"], [1.0, 1.0], {"density": 0.3, "sign": "frequency"}),
    ("magnitude_prune", ["x", "y"], [0.5, 0.5], {"density": 0.4}),
    ("svd", ["x", "z"], [0.7, -1.3], {}),
    ("svd", ["x", "z"], [1.0, 1.0], {"svd_rank": 3}),
    ("ties_svd", ["x", "y"], [0.7, -1.3], {"density": 0.5}),
    ("magnitude_prune_svd", ["x", "z"], [0.5, 0.5], {"density": 0.3}),
]


def flat(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def main():
    fs = {n: factors(seed, ADAPTERS[n][0]) for seed, n in enumerate(ADAPTERS, start=11)}
    out = {
        "layer": "model.layers.0.self_attn.q_proj",
        "in_features": IN,
        "out_features": OUT_F,
        "adapters": {
            n: {"r": ADAPTERS[n][0], "lora_alpha": ADAPTERS[n][1], "a": flat(fs[n][0]), "b": flat(fs[n][1])} for n in ADAPTERS
        },
        "cases": [],
    }
    for kind, names, weights, kw in CASES:
        res = weighted_adapter(kind, names, weights, **kw)
        case = {"method": kind, "adapters": names, "weights": weights}
        case.update({k: v for k, v in kw.items()})
        case.update({k: flat(v) for k, v in res.items()})
        out["cases"].append(case)
    # Self-check: cat is exact task arithmetic of the ΔW_i; negation cancels.
    c = weighted_adapter("cat", ["x", "z"], [0.7, -1.3])
    want = 0.7 * 2 * fs["x"][1] @ fs["x"][0] - 1.3 * 3 * fs["z"][1] @ fs["z"][0]
    assert torch.allclose(c["b"] @ c["a"], want, atol=1e-12)
    n = weighted_adapter("linear", ["x"], [-1.0])
    assert torch.allclose(2 * fs["x"][1] @ fs["x"][0] + n["b"] @ n["a"], torch.zeros(OUT_F, IN, dtype=torch.float64), atol=1e-12)
    vals = torch.tensor([0.3, -1.2, 2.5, 0.0, -0.7, 1.1, 4.0, -3.3], dtype=torch.float64)
    qs = [0.0, 0.1, 0.25, 0.5, 0.77, 0.9, 0.99, 1.0]
    out["quantile"] = {"values": flat(vals), "q": qs, "torch": [float(torch.quantile(vals, q)) for q in qs]}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "merge.json"), "w") as f:
        json.dump(out, f, indent=None, sort_keys=True)
        f.write("\n")
    print("wrote", os.path.join(OUT, "merge.json"), len(out["cases"]), "cases")


if __name__ == "__main__":
    main()
