#!/usr/bin/python3
"""Generate HF PEFT HRA and VeRA adapter folders for the tiny golden checkpoints, with expected logits.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_vera_hra_goldens.py
Reads test/golden/models/<base>/ and writes test/golden/peft-vera-hra/<case>/{adapter_config.json,
adapter_model.safetensors, golden.safetensors, meta.json} in the layout of make_peft_goldens.py (whose
forwards, config helpers and writer it reuses; that script rewrites test/golden/peft/, hence a folder of our own).

Nothing here runs PEFT (it cannot be installed): the adapter math is our own PyTorch re-implementation of
PEFT v0.20.0's sources, read in the mirror:
  tuners/hra/{config,layer,model}.py   HRALinear.get_delta_weight / forward / merge
  tuners/vera/{config,layer,model}.py  vera.Linear.forward / get_delta_weight, VeraModel._find_dim,
                                       _init_vera_A_vera_B, _kaiming_init
  utils/save_and_load.py               get_peft_model_state_dict: "hra_" keys; VERA: "vera_lambda_" keys plus
                                       "base_model.vera_A" / "base_model.vera_B" when save_projection (adapter
                                       name removed)
Output is deterministic.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as P  # noqa: E402
import ref_models as R  # noqa: E402
from common import check, maxdiff  # noqa: E402

P.OUT = os.path.join(P.ROOT, "test", "golden", "peft-vera-hra")


def hra_config(base, **over):
    cfg = P.common_fields("HRA", "CAUSAL_LM", base)
    cfg.update({"apply_GS": False, "bias": "none", "exclude_modules": None, "init_weights": True,
                "layers_pattern": None, "layers_to_transform": None, "modules_to_save": None, "r": 8,
                "target_modules": None})
    return P.apply_over(cfg, over)


def vera_config(base, **over):
    cfg = P.common_fields("VERA", "CAUSAL_LM", base)
    cfg.update({"bias": "none", "d_initial": 0.1, "fan_in_fan_out": False, "init_weights": True,
                "layers_pattern": None, "layers_to_transform": None, "modules_to_save": None,
                "projection_prng_key": 0, "r": 256, "save_projection": True, "target_modules": None,
                "vera_dropout": 0.0})
    return P.apply_over(cfg, over)


# ---------------------------------------------------------------- HRA (tuners/hra/layer.py)


def hra_delta_weight(u, apply_gs, reverse=False):
    """HRALinear.get_delta_weight: the [in, in] matrix the weight is multiplied by on the right."""
    r = u.shape[1]
    if apply_gs:
        w = [(u[:, 0] / u[:, 0].norm()).view(-1, 1)]
        for i in range(1, r):
            ui = u[:, i].view(-1, 1)
            for j in range(i):
                ui = ui - (w[j].t() @ ui) * w[j]
            w.append((ui / ui.norm()).view(-1, 1))
        w = torch.cat(w, dim=1)
        return torch.eye(u.shape[0], dtype=u.dtype) - 2 * w @ w.t()
    un = u / u.norm(dim=0)
    h = torch.eye(u.shape[0], dtype=u.dtype)
    for i in (range(r - 1, -1, -1) if reverse else range(r)):
        ui = un[:, i].view(-1, 1)
        h = h - 2 * h @ ui @ ui.t()
    return h


def hra_hook(targets, A, cfg, weight_of):
    """HRALinear.forward (one active adapter): F.linear(x, W @ delta_weight, bias)."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        if path in targets:
            w = w @ hra_delta_weight(A(f"{path}.hra_u").to(dtype), cfg["apply_GS"])
        return F.linear(x, w, bias)

    return lin


def case_hra(case, apply_gs, r, target_modules, description):
    base = "llama_basic"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    config = hra_config(base, r=r, apply_GS=apply_gs, target_modules=sorted(target_modules))
    names, shapes = P.llama_linear_modules(mcfg, W)
    targets = [n for n in names if P.matches_target(config["target_modules"], n)]
    check(targets, f"{case}: no target")
    # a "trained" adapter: random vectors (PEFT's paired init would make H = I)
    t = {f"{n}.hra_u": gen.normal((shapes[n][1], r)) for n in targets}
    A = P.Tracked(t)
    lin = hra_hook(set(targets), A, config, lambda p: W[p + ".weight"])
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.llama_forward(mcfg, W, ids, mask), mask)
    # HRALinear.merge: W <- W @ delta_weight; unmerge multiplies by the reverse-order product
    M = dict(W)
    for n in targets:
        M[n + ".weight"] = W[n + ".weight"] @ hra_delta_weight(t[f"{n}.hra_u"], apply_gs)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    n0 = targets[0]
    h = hra_delta_weight(t[f"{n0}.hra_u"].double(), apply_gs)
    checks["H_orthogonality_error"] = float((h.t() @ h - torch.eye(h.shape[0], dtype=h.dtype)).abs().max())
    check(checks["H_orthogonality_error"] < 1e-12, "H is not orthogonal")
    hr = hra_delta_weight(t[f"{n0}.hra_u"].double(), apply_gs, reverse=True)
    checks["unmerge_product_error"] = float((h @ hr - torch.eye(h.shape[0], dtype=h.dtype)).abs().max())
    check(checks["unmerge_product_error"] < 1e-12, "the reverse product does not undo H")
    if not apply_gs:
        # the order matters: H_r ... H_1 is a different matrix for non-orthogonal vectors
        checks["reverse_order_difference"] = float((h - hr).abs().max())
        check(checks["reverse_order_difference"] > 1e-2, "order-insensitive")
    meta = P.base_meta(case, base, bmeta, description, True, {"self_checks": checks})
    P.write_case(case, config, P.saved(t), P.decoder_golden(bg, logits), meta)


# ---------------------------------------------------------------- VeRA (tuners/vera/{layer,model}.py)


def kaiming_init(shape, generator):
    """vera/model.py _kaiming_init: fan_in = shape[1], gain √2, bound √3·gain/√fan_in, uniform_ with the generator."""
    fan = shape[1]
    bound = math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(fan))
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def vera_projections(r, max_in, max_out, key):
    """VeraModel._init_vera_A_vera_B: one CPU generator seeded with projection_prng_key, A then B."""
    g = torch.Generator(device="cpu").manual_seed(key)
    a = kaiming_init((r, max_in), g)
    b = kaiming_init((max_out, r), g)
    return a, b


def vera_hook(layers, A, va, vb, weight_of, fan_in_fan_out):
    """vera.Linear.forward: result + λ_b * F.linear(λ_d * F.linear(x, A[:, :in]), B[:out, :])."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        y = x @ w if fan_in_fan_out else x @ w.t()
        if bias is not None:
            y = y + bias
        if path not in layers:
            return y
        l = layers[path]
        sa = va[:, :l["in"]].to(dtype)
        sb = vb[:l["out"], :].to(dtype)
        ld = A(f"{path}.vera_lambda_d").to(dtype)
        lb = A(f"{path}.vera_lambda_b").to(dtype)
        return y + lb * F.linear(ld * F.linear(x, sa), sb)

    return lin


def vera_delta(l, va, vb, lb, ld, fan_in_fan_out):
    """vera.Linear.get_delta_weight: transpose((λ_b·B[:out]) @ (λ_d·A[:, :in]), fan_in_fan_out)."""
    d = (lb.unsqueeze(-1) * vb[:l["out"], :]) @ (ld.unsqueeze(-1) * va[:, :l["in"]])
    return d.t() if fan_in_fan_out else d


def random_lambdas(gen, layers, r):
    t = {}
    for name, l in layers.items():
        t[f"{name}.vera_lambda_b"] = gen.normal((l["out"],), 0.5)
        t[f"{name}.vera_lambda_d"] = 0.1 + gen.normal((r,), 0.5)
    return t


def case_vera_llama():
    case, base = "vera_llama", "llama_basic"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    r, key = 8, 17
    config = vera_config(base, r=r, projection_prng_key=key, target_modules=["down_proj", "q_proj", "up_proj"])
    names, shapes = P.llama_linear_modules(mcfg, W)
    layers = {}
    for n in names:
        if P.matches_target(config["target_modules"], n):
            out_f, in_f = shapes[n]
            layers[n] = {"in": in_f, "out": out_f}
    # VeraModel._find_dim: the largest (out, in) over the targeted layers
    max_in = max(l["in"] for l in layers.values())
    max_out = max(l["out"] for l in layers.values())
    check(len({l["in"] for l in layers.values()}) > 1 and len({l["out"] for l in layers.values()}) > 1,
          "the case must slice both projections")
    va, vb = vera_projections(r, max_in, max_out, key)
    t = random_lambdas(gen, layers, r)
    A = P.Tracked(t)
    lin = vera_hook(layers, A, va, vb, lambda p: W[p + ".weight"], False)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.llama_forward(mcfg, W, ids, mask), mask)
    M = dict(W)
    for n, l in layers.items():
        M[n + ".weight"] = W[n + ".weight"] + vera_delta(l, va, vb, t[f"{n}.vera_lambda_b"], t[f"{n}.vera_lambda_d"], False)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    adapter = P.saved(t)
    adapter["base_model.vera_A"] = va
    adapter["base_model.vera_B"] = vb
    meta = P.base_meta(case, base, bmeta, (
        f"VeRA r={r}, projection_prng_key={key}, save_projection=true, target_modules down_proj, q_proj, up_proj of "
        f"llama_basic (in 64/32/32, out 32/32/64): shared vera_A [r, {max_in}] and vera_B [{max_out}, r] from "
        "torch.Generator('cpu').manual_seed(key) (Kaiming-uniform, A then B), saved as 'base_model.vera_A' / "
        "'base_model.vera_B'; random λ_b [out] and λ_d [r] ('<module>.vera_lambda_b/d', no '.weight'). Each layer "
        "adds λ_b * ((λ_d * (x A[:, :in]ᵀ)) B[:out]ᵀ); merged W + (λ_b B[:out]) (λ_d A[:, :in]), checked equal."),
        True, {"self_checks": checks})
    P.write_case(case, config, adapter, P.decoder_golden(bg, logits), meta)


def case_vera_gpt2_no_projection():
    case, base = "vera_gpt2_no_projection", "gpt2"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    r, key = 6, 1234
    config = vera_config(base, r=r, projection_prng_key=key, save_projection=False, fan_in_fan_out=True,
                         target_modules=["c_attn", "c_fc", "mlp.c_proj"])
    layers = {}
    for i in range(mcfg["n_layer"]):
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            n = f"transformer.h.{i}.{m}"
            if P.matches_target(config["target_modules"], n):
                fin, fout = W[f"h.{i}.{m}.weight"].shape  # Conv1D [in, out]
                layers[n] = {"in": fin, "out": fout}
    check(len(layers) == 3 * mcfg["n_layer"], "c_attn, c_fc, mlp.c_proj per block")
    max_in = max(l["in"] for l in layers.values())
    max_out = max(l["out"] for l in layers.values())
    va, vb = vera_projections(r, max_in, max_out, key)
    t = random_lambdas(gen, layers, r)
    A = P.Tracked(t)
    hub = (lambda p: W[p[len("transformer."):] + ".weight"])
    lin = vera_hook(layers, A, va, vb, hub, True)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.gpt2_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.gpt2_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.gpt2_forward(mcfg, W, ids, mask), mask)
    M = dict(W)
    for n, l in layers.items():
        k = n[len("transformer."):] + ".weight"
        M[k] = W[k] + vera_delta(l, va, vb, t[f"{n}.vera_lambda_b"], t[f"{n}.vera_lambda_d"], True)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.gpt2_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    # another key gives other projections, so a loader must regenerate them from this key
    va2, vb2 = vera_projections(r, max_in, max_out, key + 1)
    other = P.gpt2_forward(mcfg, W, ids, mask, lin=vera_hook(layers, P.Tracked(t), va2, vb2, hub, True))
    checks["other_key_difference"] = maxdiff(other, logits, mask)
    check(checks["other_key_difference"] > 1e-2, "the projections make no difference")
    golden = P.decoder_golden(bg, logits)
    golden["logits_other_key"] = other.contiguous()
    meta = P.base_meta(case, base, bmeta, (
        f"VeRA r={r}, projection_prng_key={key}, save_projection=false, fan_in_fan_out=true on gpt2's c_attn, mlp.c_fc "
        "and mlp.c_proj (Conv1D [in, out]). The folder holds only the λ vectors: PEFT regenerates vera_A "
        f"[r, {max_in}] and vera_B [{max_out}, r] with torch.Generator('cpu').manual_seed({key}) and Kaiming-uniform "
        "(A then B) when it builds the model. Merged delta is transposed into the [in, out] layout."),
        True, {"self_checks": checks,
               "compare_note": P.COMPARE_NOTE + " `logits_other_key` = the same λ with projections from key + 1."})
    P.write_case(case, config, P.saved(t), golden, meta)


def main():
    import shutil
    if os.path.isdir(P.OUT):
        shutil.rmtree(P.OUT)
    os.makedirs(P.OUT)
    case_hra("hra_llama", False, 4, ["q_proj", "v_proj", "down_proj"], (
        "HRA r=4 (apply_GS false) on q_proj, v_proj, down_proj of llama_basic; random hra_u [in, r] (saved as "
        "'base_model.model.<module>.hra_u', no '.weight'). HRALinear.forward: F.linear(x, W @ H) with "
        "H = (I - 2 û₁û₁ᵀ)(I - 2 û₂û₂ᵀ)…(I - 2 û_rû_rᵀ), û = columns over their norms. Merged W @ H, checked equal."))
    case_hra("hra_gs_llama", True, 3, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"], (
        "HRA r=3 with apply_GS on every linear layer of llama_basic; random hra_u. Gram–Schmidt (PEFT's loop) "
        "turns the columns into orthonormal Q and H = I - 2 Q Qᵀ; F.linear(x, W @ H). Merged W @ H, checked equal."))
    case_vera_llama()
    case_vera_gpt2_no_projection()
    total = 0
    for name, size in P.REPORT:
        total += size
        print(f"{name:36s} {size:8d} bytes")
    print(f"{'total':36s} {total:8d} bytes")


if __name__ == "__main__":
    main()
