#!/usr/bin/python3
"""Generate HF PEFT LoHa and LoKr adapter folders for the tiny golden checkpoints, with expected logits.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_lycoris_goldens.py
Reads test/golden/models/<base>/ (make_goldens.py) and writes
test/golden/lycoris/<case>/{adapter_config.json, adapter_model.safetensors, golden.safetensors, meta.json}
and test/golden/lycoris/factorization.json.

Nothing here runs PEFT (it cannot be installed): the math below is our own plain-torch reading of PEFT v0.20.0's
sources (semantics only, nothing copied): tuners/loha/{config,layer,model}.py, tuners/lokr/{config,layer,model}.py,
tuners/lycoris_utils.py (LycorisConfig, LycorisLayer.merge), utils/other.py (get_pattern_key),
utils/save_and_load.py (keys: "base_model.model.<module>.<param>" with the adapter name stripped; LoHa/LoKr tensors
are ParameterDict entries, so no ".weight"). Forwards and the file layout come from make_peft_goldens.py /
ref_models.py. Output is deterministic.

LoHa (LoHaLayer.get_delta_weight, HadaWeight.forward):  dW = ((w1a @ w1b) * (w2a @ w2b)) * alpha/r,
  hada_w1_a [out, r], hada_w1_b [r, in], hada_w2_a [out, r], hada_w2_b [r, in] (nn.Linear).
LoKr (LoKrLayer.update_layer / get_delta_weight, make_kron):  dW = kron(w1, w2) * alpha/r with
  (in_m, in_n) = factorization(in, decompose_factor), (out_l, out_k) = factorization(out, decompose_factor),
  w1 [out_l, in_m] full unless decompose_both and r < max(out_l, in_m)/2 (then lokr_w1_a [out_l, r] @ lokr_w1_b
  [r, in_m]), w2 [out_k, in_n] full unless r < max(out_k, in_n)/2 (then lokr_w2_a @ lokr_w2_b). The scale is
  alpha/r in every case (update_layer sets scaling = alpha / r before choosing the shapes).
Both layers add F.linear(x, dW) to the base output (eval: no rank/module dropout); merge adds dW to the weight.
"""
import json
import math
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as P  # noqa: E402  (forwards, configs' common fields, checks, writer)
import ref_models as R  # noqa: E402
from common import check, maxdiff  # noqa: E402

ROOT = P.ROOT
OUT = os.path.join(ROOT, "test", "golden", "lycoris")
# make_peft_goldens.write_case writes under its module-level OUT and records sizes in REPORT.
P.OUT = OUT
LLAMA_TARGETS = P.LLAMA_TARGETS


# ---------------------------------------------------------------- configs as PEFT writes them


def lycoris_fields():
    # LycorisConfig + the fields LoHaConfig and LoKrConfig both declare, with their defaults
    return {"alpha": 8, "alpha_pattern": {}, "exclude_modules": None, "init_weights": True, "layers_pattern": None,
            "layers_to_transform": None, "module_dropout": 0.0, "modules_to_save": None, "r": 8, "rank_dropout": 0.0,
            "rank_pattern": {}, "target_modules": None, "use_effective_conv2d": False}


def loha_config(base, **over):
    cfg = P.common_fields("LOHA", "CAUSAL_LM", base)
    cfg.update(lycoris_fields())
    return P.apply_over(cfg, over)


def lokr_config(base, **over):
    cfg = P.common_fields("LOKR", "CAUSAL_LM", base)
    cfg.update(lycoris_fields())
    cfg.update({"decompose_both": False, "decompose_factor": -1, "rank_dropout_scale": False})
    return P.apply_over(cfg, over)


# ---------------------------------------------------------------- PEFT's shape rules


def factorization(dimension, factor=-1):
    """tuners/lokr/layer.py factorization(): (factor, dim/factor) if factor > 0 divides dim (in that order);
    else walk divisors m = 2, 3, ... while m < n and m <= factor (factor -1 = no bound), smaller first."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


FACTORIZATION_TABLE = [
    (d, f)
    for d in (1, 2, 7, 12, 16, 32, 36, 48, 64, 96, 127, 128, 256, 768, 1000, 3072, 4096, 11008, 14336)
    for f in (-1, 0, -2, 1, 2, 3, 4, 5, 8, 16, 32, 64, 1000)
]


def layer_params(cfg, name, out_f, in_f):
    rk = P.pattern_key(cfg["rank_pattern"], name)
    ak = P.pattern_key(cfg["alpha_pattern"], name)
    r = cfg["rank_pattern"][rk] if rk is not None else cfg["r"]
    alpha = cfg["alpha_pattern"][ak] if ak is not None else cfg["alpha"]
    return {"r": r, "alpha": alpha, "scaling": alpha / r, "in": in_f, "out": out_f}


def lokr_shape(cfg, l):
    in_m, in_n = factorization(l["in"], cfg["decompose_factor"])
    out_l, out_k = factorization(l["out"], cfg["decompose_factor"])
    r = l["r"]
    use_w1 = not (cfg["decompose_both"] and r < max(out_l, in_m) / 2)
    use_w2 = not (r < max(out_k, in_n) / 2)
    return {"out_l": out_l, "out_k": out_k, "in_m": in_m, "in_n": in_n, "use_w1": use_w1, "use_w2": use_w2}


# ---------------------------------------------------------------- random "trained" adapters


def kaiming(gen, shape):
    # kaiming_uniform_(a=sqrt(5)) of a 2-D tensor: U(+-1/sqrt(size(1)))
    b = 1.0 / math.sqrt(shape[1])
    return gen.uniform(shape, -b, b)


def random_loha(gen, layers, amp):
    t = {}
    for n, l in layers.items():
        r, i, o = l["r"], l["in"], l["out"]
        # every factor non-zero (a trained adapter; PEFT's init zeroes hada_w2_b), scaled up so the effect is visible
        t[f"{n}.hada_w1_a"] = kaiming(gen, (o, r)) * amp
        t[f"{n}.hada_w1_b"] = kaiming(gen, (r, i)) * amp
        t[f"{n}.hada_w2_a"] = kaiming(gen, (o, r)) * amp
        t[f"{n}.hada_w2_b"] = kaiming(gen, (r, i)) * amp
    return t


def random_lokr(gen, cfg, layers, amp):
    t, shapes = {}, {}
    for n, l in layers.items():
        s = lokr_shape(cfg, l)
        shapes[n] = s
        r = l["r"]
        if s["use_w1"]:
            t[f"{n}.lokr_w1"] = kaiming(gen, (s["out_l"], s["in_m"])) * amp
        else:
            t[f"{n}.lokr_w1_a"] = kaiming(gen, (s["out_l"], r)) * amp
            t[f"{n}.lokr_w1_b"] = kaiming(gen, (r, s["in_m"])) * amp
        if s["use_w2"]:
            t[f"{n}.lokr_w2"] = kaiming(gen, (s["out_k"], s["in_n"])) * amp
        else:
            t[f"{n}.lokr_w2_a"] = kaiming(gen, (s["out_k"], r)) * amp
            t[f"{n}.lokr_w2_b"] = kaiming(gen, (r, s["in_n"])) * amp
    return t, shapes


# ---------------------------------------------------------------- delta weights (PEFT's get_delta_weight, eval)


def loha_delta(A, n, l, dtype):
    g = lambda k: A(f"{n}.{k}").to(dtype)  # noqa: E731
    return ((g("hada_w1_a") @ g("hada_w1_b")) * (g("hada_w2_a") @ g("hada_w2_b"))) * l["scaling"]


def lokr_delta(A, n, l, s, dtype):
    g = lambda k: A(f"{n}.{k}").to(dtype)  # noqa: E731
    w1 = g("lokr_w1") if s["use_w1"] else g("lokr_w1_a") @ g("lokr_w1_b")
    w2 = g("lokr_w2") if s["use_w2"] else g("lokr_w2_a") @ g("lokr_w2_b")
    return torch.kron(w1, w2) * l["scaling"]


def delta_hook(layers, delta_of, weight_of):
    """lin(path, x, dtype): base(x) + F.linear(x, dW), as LoHa/LoKr Linear.forward in eval mode."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        y = x @ w.t()
        if path in layers:
            y = y + x @ delta_of(path, dtype).t()
        return y + bias if bias is not None else y

    return lin


# ---------------------------------------------------------------- cases


def make_case(case, base, kind, over, description, amp):
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    config = (loha_config if kind == "loha" else lokr_config)(base, **over)
    names, shp = P.llama_linear_modules(mcfg, W)
    layers = {n: layer_params(config, n, *shp[n]) for n in names if P.matches_target(config["target_modules"], n)}
    check(layers, f"{case}: no target")
    if kind == "loha":
        t = random_loha(gen, layers, amp)
        shapes = None
    else:
        t, shapes = random_lokr(gen, config, layers, amp)
    A = P.Tracked(t)
    if kind == "loha":
        delta_of = lambda path, dtype: loha_delta(A, path, layers[path], dtype)  # noqa: E731
    else:
        delta_of = lambda path, dtype: lokr_delta(A, path, layers[path], shapes[path], dtype)  # noqa: E731
    lin = delta_hook(layers, delta_of, lambda p: W[p + ".weight"])
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: adapter tensors never read: {A.unused()}")
    l64 = P.llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin)
    checks = P.common_checks(case, logits, l64, bg["logits"], bg["logits"], P.llama_forward(mcfg, W, ids, mask), mask)
    # merged (LycorisLayer.merge: weight += get_delta_weight) through the independent reference forward
    M = dict(W)
    for n in layers:
        M[n + ".weight"] = W[n + ".weight"] + delta_of(n, torch.float32)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged ({checks['merged_vs_unmerged']})")
    per_layer = {}
    for n, l in layers.items():
        d = delta_of(n, torch.float64)
        entry = {"r": l["r"], "alpha": l["alpha"], "scaling": l["scaling"], "in": l["in"], "out": l["out"],
                 "delta_rank": int(torch.linalg.matrix_rank(d))}
        if kind == "loha":
            # the Hadamard product reaches beyond rank r (up to r^2): a plain low-rank reading would be wrong
            entry["rank_bound_r2"] = min(l["r"] ** 2, l["in"], l["out"])
        else:
            entry.update(shapes[n])
        per_layer[n] = entry
    if kind == "loha":
        check(any(e["delta_rank"] > e["r"] for e in per_layer.values()), f"{case}: no LoHa delta exceeds rank r")
        # the scale is alpha/r: the same factors scaled by alpha alone would differ visibly
    else:
        # kron(w2, w1) (the factors swapped) has the same [out, in] shape; it must give other logits
        def swapped_delta(p, dt):
            w1, w2 = _factors(A, p, shapes[p], dt)
            return torch.kron(w2, w1) * layers[p]["scaling"]

        alt = P.llama_forward(mcfg, W, ids, mask, lin=delta_hook(layers, swapped_delta, lambda p: W[p + ".weight"]))
        checks["kron_factor_order_error"] = maxdiff(alt, logits, mask)
        check(checks["kron_factor_order_error"] > 1e-2, f"{case}: kron(w2, w1) indistinguishable from kron(w1, w2)")
    meta = P.base_meta(case, base, bmeta, description, True, {"layers": per_layer, "self_checks": checks})
    P.write_case(case, config, P.saved(t), P.decoder_golden(bg, logits), meta)


def _factors(A, n, s, dtype):
    g = lambda k: A.t[f"{n}.{k}"].to(dtype)  # noqa: E731  (diagnostic: does not mark tensors as used)
    w1 = g("lokr_w1") if s["use_w1"] else g("lokr_w1_a") @ g("lokr_w1_b")
    w2 = g("lokr_w2") if s["use_w2"] else g("lokr_w2_a") @ g("lokr_w2_b")
    return w1, w2


def case_loha():
    over = {"r": 4, "alpha": 8, "target_modules": sorted(LLAMA_TARGETS),
            "rank_pattern": {"o_proj": 2}, "alpha_pattern": {"mlp\\.down_proj": 4}}
    make_case("loha_llama", "llama_basic", "loha", over, (
        "LoHa r=4, alpha=8 on every linear layer of llama_basic, rank_pattern {o_proj: 2}, alpha_pattern "
        "{mlp\\.down_proj: 4}; every factor random (hada_w2_b too, unlike PEFT's init). dW = ((w1a@w1b) * "
        "(w2a@w2b)) * alpha/r added to each layer's output as F.linear(x, dW); merged weight W + dW (checked). "
        "Keys '<module>.hada_w1_a' [out, r], 'hada_w1_b' [r, in], 'hada_w2_a' [out, r], 'hada_w2_b' [r, in]."),
        amp=1.6)


def case_lokr():
    over = {"r": 8, "alpha": 4, "target_modules": sorted(LLAMA_TARGETS)}
    make_case("lokr_llama", "llama_basic", "lokr", over, (
        "LoKr r=8, alpha=4 (scale 0.5 although every factor is full) on every linear layer of llama_basic. "
        "factorization(32) = (4, 8), factorization(64) = (8, 8); r >= max(out_k, in_n)/2 so lokr_w1 [out_l, in_m] and "
        "lokr_w2 [out_k, in_n] are full. dW = kron(w1, w2) * alpha/r."),
        amp=1.5)


def case_lokr_decomposed():
    over = {"r": 1, "alpha": 2, "target_modules": sorted(LLAMA_TARGETS), "decompose_both": True, "decompose_factor": 8,
            "rank_pattern": {"o_proj": 4}}
    make_case("lokr_decompose_both", "llama_gqa_tied", "lokr", over, (
        "LoKr r=1, alpha=2, decompose_both, decompose_factor=8 on every linear layer of llama_gqa_tied (q_proj "
        "[64, 32], k/v [32, 32], o_proj [32, 64], gate/up [64, 32], down [32, 64]), rank_pattern {o_proj: 4}. "
        "factorization(32, 8) = (8, 4) (factor first, not sorted), factorization(64, 8) = (8, 8). r=1 is below "
        "max/2 of both sides: lokr_w1_a/_b and lokr_w2_a/_b; o_proj's r=4 is not below max/2 = 4, so it "
        "has full lokr_w1 [8, 8] and lokr_w2 [4, 8] (meta layers: use_w1/use_w2 per module). dW = kron(w1_a@w1_b, w2_a@w2_b) * alpha/r."),
        amp=0.7)


def write_factorization_table():
    rows = [[d, f, *factorization(d, f)] for d, f in FACTORIZATION_TABLE]
    for d, f, m, n in rows:
        check(m * n == d, f"factorization{(d, f)} = {(m, n)}")
    # the docstring's examples
    check(factorization(256) == (16, 16) and factorization(128) == (8, 16) and factorization(127) == (1, 127)
          and factorization(128, 4) == (4, 32), "factorization docstring examples")
    head = json.dumps({"source": f"huggingface/peft {P.PEFT_TAG} src/peft/tuners/lokr/layer.py factorization(), "
                                 "re-implemented in Python", "columns": ["dimension", "factor", "m", "n"]})[:-1]
    with open(os.path.join(OUT, "factorization.json"), "w") as f:
        f.write(head + ', "rows": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]}\n")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    case_loha()
    case_lokr()
    case_lokr_decomposed()
    write_factorization_table()
    total = 0
    for name, size in P.REPORT:
        total += size
        print(f"{name:36s} {size:8d} bytes")
    print(f"{'total':36s} {total:8d} bytes")
    check(total < 512 * 1024, "LyCORIS goldens over 512 KB")


if __name__ == "__main__":
    main()
