#!/usr/bin/python3
"""Golden adapter folders for HF PEFT's OFT and BOFT, with expected logits, and BOFT's permutation table.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_oft_goldens.py
Writes test/golden/peft/<case>/ (same layout as make_peft_goldens.py) for the cases below and
test/golden/boft-permutations.json.

PEFT is not installed or imported. The math is our own plain-torch re-derivation of PEFT v0.20.0's sources
(semantics only, nothing copied): tuners/oft/{config,layer}.py (OFTRotationModule._pytorch_skew_symmetric,
_cayley_batch, _project_batch, forward, get_weight; Linear.merge; OFTLayer.update_layer,
adjust_oft_parameters), tuners/boft/{config,layer}.py (BOFTLayer.update_layer, block_butterfly_perm,
perm2mat, cayley_batch; Linear.forward with the CUDA extension's per-factor block diagonal, merge),
utils/save_and_load.py (keys: "<module>.oft_R.weight", "<module>.boft_R", "<module>.boft_s").
The forward passes come from make_peft_goldens.py / ref_models.py. Output is deterministic.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as G  # noqa: E402  (sets torch's deterministic mode)
from common import check, maxdiff  # noqa: E402

OUT = G.OUT
LLAMA_TARGETS = G.LLAMA_TARGETS


def base_config(peft_type, base, task_type, fields, over):
    cfg = G.common_fields(peft_type, task_type, base)
    cfg.update(fields)
    return G.apply_over(cfg, over)


def oft_config(base, task_type, **over):
    return base_config("OFT", base, task_type, {
        "r": 0, "oft_block_size": 32, "module_dropout": 0.0, "target_modules": None, "fan_in_fan_out": False,
        "bias": "none", "exclude_modules": None, "init_weights": True, "layers_to_transform": None,
        "layers_pattern": None, "modules_to_save": None, "coft": False, "eps": 6e-5, "block_share": False,
        "use_cayley_neumann": True, "num_cayley_neumann_terms": 5,
    }, over)


def boft_config(base, task_type, **over):
    return base_config("BOFT", base, task_type, {
        "boft_block_size": 4, "boft_block_num": 0, "boft_n_butterfly_factor": 1, "target_modules": None,
        "exclude_modules": None, "boft_dropout": 0.0, "fan_in_fan_out": False, "bias": "none",
        "modules_to_save": None, "init_weights": True, "layers_to_transform": None, "layers_pattern": None,
    }, over)


# ---------------------------------------------------------------- OFT (PEFT 0.20.0)


def adjust_oft_parameters(in_features, params):
    if params < in_features:
        higher = params
        while higher <= in_features and in_features % higher != 0:
            higher += 1
    else:
        return in_features
    lower = params
    while lower > 1 and in_features % lower != 0:
        lower -= 1
    return lower if (params - lower) <= (higher - params) else higher


def oft_layout(cfg, in_features):
    r, b = cfg["r"], cfg["oft_block_size"]
    if r == 0:
        if in_features % b != 0 or b > in_features:
            b = adjust_oft_parameters(in_features, b)
        r = in_features // b
    else:
        if in_features % r != 0 or r > in_features:
            r = adjust_oft_parameters(in_features, r)
        b = in_features // r
    return r, b


def skew(vec, b):
    rows, cols = torch.triu_indices(b, b, 1)
    m = torch.zeros(vec.shape[0], b, b, dtype=vec.dtype)
    m[:, rows, cols] = vec
    return m - m.transpose(-2, -1)


def oft_cayley(vec, b, neumann, terms):
    q = skew(vec, b)
    n = q.shape[0]
    if neumann:
        r = torch.eye(b, dtype=q.dtype).repeat(n, 1, 1)
        if terms > 1:
            r = r + 2.0 * q
            if terms > 2:
                p = q @ q
                r = r + 2.0 * p
                for _ in range(3, terms - 1):
                    p = p @ q
                    r = r + 2.0 * p
                r = r + p @ q
        return r
    eye = torch.eye(b, dtype=q.dtype).expand(n, b, b)
    return torch.linalg.solve(eye + q, eye - q, left=False)


def coft_project(vec, b, eps):
    q = skew(vec, b)
    eps = eps * 1 / torch.sqrt(torch.tensor(q.shape[0], dtype=torch.float32))
    norm = torch.norm(q, dim=(1, 2), keepdim=True)
    out = torch.where(norm <= eps, q, eps * (q / norm))
    rows, cols = torch.triu_indices(b, b, 1)
    return out[:, rows, cols]


def oft_blocks(cfg, vec, b):
    if cfg["coft"]:
        vec = coft_project(vec, b, cfg["eps"])
    return oft_cayley(vec, b, cfg["use_cayley_neumann"], cfg["num_cayley_neumann_terms"])


def oft_hook(cfg, layers, A, weight_of):
    """Linear.forward: x -> x·R (per block, einsum '...rk,rkc->...rc'), then the base layer."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        if path in layers:
            r, b = layers[path]
            R = oft_blocks(cfg, A(f"{path}.oft_R.weight").to(dtype), b)
            if cfg["block_share"]:
                R = R.repeat(r, 1, 1)
            x = torch.einsum("...rk,rkc->...rc", x.reshape(*x.shape[:-1], r, b), R).reshape(x.shape)
        y = x @ w.t()
        return y + bias if bias is not None else y

    return lin


def oft_merged(cfg, W, layers, t):
    M = dict(W)
    for path, (r, b) in layers.items():
        R = oft_blocks(cfg, t[f"{path}.oft_R.weight"], b)
        blocks = [R[0 if cfg["block_share"] else i] for i in range(r)]
        M[path + ".weight"] = (torch.block_diag(*blocks) @ W[path + ".weight"].t()).t()
    return M


# ---------------------------------------------------------------- BOFT (PEFT 0.20.0)


def block_butterfly_perm(n, b, r=3, n_butterfly_factor=1):
    if n_butterfly_factor == 0:
        return torch.arange(n)
    check(b * r * 2 <= n, "Invalid number of blocks!")
    block_size = int(n // b)
    indices = torch.arange(n)

    def sort_block(b, r):
        step = b / r
        initial_order = torch.arange(b)
        sorted_order = torch.full((b,), -1, dtype=torch.long)  # PEFT: torch.empty
        evens = torch.arange(0, step, 2)
        odds = torch.arange(1, step, 2)
        for i, pos in enumerate(torch.cat((evens, odds), dim=0)):
            sorted_order[int(i * r): int(i * r + r)] = initial_order[int(pos * r): int(pos * r + r)]
        check(bool((sorted_order >= 0).all()), "undefined butterfly order")
        return sorted_order

    sorted_order = sort_block(block_size, r)
    for i in range(0, n, block_size):
        tmp = indices[i:i + block_size]
        indices[i:i + block_size] = tmp[sorted_order]
    return indices


def perm2mat(indices):
    n = len(indices)
    p = torch.zeros((n, n))
    for i, idx in enumerate(indices):
        p[i, idx] = 1
    return p


def boft_layout(cfg, in_features):
    """update_layer's derivation (with the extension built: the config's factor is used); None if PEFT raises."""
    size, num, k = cfg["boft_block_size"], cfg["boft_block_num"], cfg["boft_n_butterfly_factor"] - 1
    try:
        if size == 0:
            check(in_features % num == 0, "divisible by block_num")
            if k != 0:
                check(k <= int(math.log2(num)), "factor vs block_num")
                check(num % (2 ** k) == 0, "block_num multiple of 2^k")
            size = in_features // num
        else:
            check(in_features % size == 0, "divisible by block_size")
            if k != 0:
                check(in_features >= size * 2 ** k and in_features % (size * 2 ** k) == 0, "in vs size·2^k")
            num = in_features // size
        if k != 0:
            check(num % 2 == 0 and size % 2 == 0, "even")
        perms = [block_butterfly_perm(in_features, int(num / (2 ** i)), int(size / 2), k) for i in range(k + 1)]
    except AssertionError:
        return None
    return {"factors": k + 1, "block_num": num, "block_size": size, "perms": perms}


def boft_matrix(layout, R):
    """Linear.get_delta_weight with FastBlockDiag: M = B_{m-1}···B_0, B_i = P_i·blockdiag(cayley(R_i))·P_iᵀ."""
    m, D, b, _ = R.shape
    data = R.reshape(m * D, b, b)
    s = 0.5 * (data - data.transpose(1, 2))
    eye = torch.eye(b, dtype=R.dtype).unsqueeze(0).expand(m * D, b, b)
    orth = torch.linalg.solve(eye + s, eye - s, left=False).reshape(m, D, b, b)
    P = torch.stack([perm2mat(p) for p in layout["perms"]]).to(R.dtype)
    bd = torch.stack([torch.block_diag(*orth[i]) for i in range(m)])
    batch = P @ bd @ P.transpose(1, 2)
    M = batch[0]
    for i in range(1, m):
        M = batch[i] @ M
    return M


def boft_hook(layers, A, weight_of):
    """Linear.forward: x @ M through the base layer, bias removed, scaled by boft_s, bias added back."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        if path not in layers:
            y = x @ w.t()
            return y + bias if bias is not None else y
        M = boft_matrix(layers[path], A(f"{path}.boft_R").to(dtype))
        y = (x @ M) @ w.t()
        y = y * A(f"{path}.boft_s").to(dtype).squeeze(-1)
        return y + bias if bias is not None else y

    return lin


def boft_merged(W, layers, t):
    M = dict(W)
    for path, layout in layers.items():
        rot = boft_matrix(layout, t[f"{path}.boft_R"])
        M[path + ".weight"] = (rot @ W[path + ".weight"].t()).t() * t[f"{path}.boft_s"]
    return M


# ---------------------------------------------------------------- cases


def llama_layers(cfg, W, mcfg, layout):
    names, shapes = G.llama_linear_modules(mcfg, W)
    return {n: layout(cfg, shapes[n][1]) for n in names if G.matches_target(cfg["target_modules"], n)}


def finish_llama(case, base, mcfg, bmeta, W, bg, config, t, hook, merged, description, extra):
    A = G.Tracked(t)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = G.llama_forward(mcfg, W, ids, mask, lin=hook(A))
    check(not A.unused(), f"{case}: unused {A.unused()}")
    l64 = G.llama_forward(mcfg, W, ids, mask, torch.float64, lin=hook(G.Tracked(t)))
    checks = G.common_checks(case, logits, l64, bg["logits"], bg["logits"], G.llama_forward(mcfg, W, ids, mask), mask)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    m = G.R.llama_like_forward(mcfg, G.R.Weights(merged), ids, mask, arange)
    checks["merged_vs_unmerged"] = maxdiff(m, logits, mask)
    check(checks["merged_vs_unmerged"] < G.MERGE_TOL, f"{case}: merged != unmerged ({checks['merged_vs_unmerged']})")
    checks.update(extra)
    meta = G.base_meta(case, base, bmeta, description, True, {"self_checks": checks})
    G.write_case(case, config, G.saved(t), G.decoder_golden(bg, logits), meta)


def case_oft(case, description, over, std, shrink=()):
    base = "llama_basic"
    mcfg, bmeta, W, bg = G.load_base(base)
    gen = G.Gen(case)
    config = oft_config(base, "CAUSAL_LM", **over)
    layers = llama_layers(config, W, mcfg, oft_layout)
    t = {}
    for path, (r, b) in layers.items():
        v = gen.normal((1 if config["block_share"] else r, b * (b - 1) // 2), std)
        if any(path.endswith(s) for s in shrink):
            v = v * 1e-4  # inside COFT's ball: the projection leaves it alone
        t[f"{path}.oft_R.weight"] = v
    extra = {}
    if config["coft"]:
        moved = [p for p, (r, b) in layers.items()
                 if not torch.equal(coft_project(t[f"{p}.oft_R.weight"], b, config["eps"]), t[f"{p}.oft_R.weight"])]
        check(0 < len(moved) < len(layers), "COFT golden must project some layers and leave others")
        extra["coft_projected_layers"] = len(moved)
    if not config["use_cayley_neumann"]:
        worst = 0.0
        for p, (r, b) in layers.items():
            R = oft_blocks(config, t[f"{p}.oft_R.weight"].double(), b)
            worst = max(worst, float((R.transpose(1, 2) @ R - torch.eye(b, dtype=torch.float64)).abs().max()))
        check(worst < 1e-12, f"exact Cayley not orthogonal: {worst}")
        extra["exact_cayley_max_orthogonality_error_f64"] = worst
    finish_llama(case, base, mcfg, bmeta, W, bg, config, t,
                 lambda A: oft_hook(config, layers, A, lambda p: W[p + ".weight"]),
                 oft_merged(config, W, layers, t), description, extra)


def case_boft_llama():
    case, base = "boft_llama", "llama_basic"
    mcfg, bmeta, W, bg = G.load_base(base)
    gen = G.Gen(case)
    config = boft_config(base, "CAUSAL_LM", boft_block_size=4, boft_n_butterfly_factor=2,
                         target_modules=sorted(LLAMA_TARGETS))
    layers = llama_layers(config, W, mcfg, boft_layout)
    t = {}
    for path, lay in layers.items():
        check(lay is not None, path)
        t[f"{path}.boft_R"] = gen.normal((lay["factors"], lay["block_num"], lay["block_size"], lay["block_size"]), 0.3)
        out = W[path + ".weight"].shape[0]
        t[f"{path}.boft_s"] = 1.0 + gen.normal((out, 1), 0.1)
    worst = max(float((M.T @ M - torch.eye(M.shape[0], dtype=torch.float64)).abs().max())
                for M in (boft_matrix(lay, t[f"{p}.boft_R"].double()) for p, lay in layers.items()))
    check(worst < 1e-12, f"BOFT matrix not orthogonal: {worst}")
    finish_llama(case, base, mcfg, bmeta, W, bg, config, t, lambda A: boft_hook(layers, A, lambda p: W[p + ".weight"]),
                 boft_merged(W, layers, t),
                 "BOFT boft_block_size=4, boft_n_butterfly_factor=2 on every linear layer of llama_basic; random "
                 "boft_R [2, D, 4, 4] (skew part used) and boft_s. y = (W·(x·M))⊙s with M = B_1·B_0, "
                 "B_i = P_i·blockdiag(Cayley(R_i))·P_iᵀ (PEFT with its CUDA extension, i.e. the config's factor).",
                 {"boft_matrix_max_orthogonality_error_f64": worst})


def case_boft_bert():
    case, base = "boft_bert_seq_cls", "bert_seq_cls"
    mcfg, bmeta, W, bg = G.load_base(base)
    gen = G.Gen(case)
    config = boft_config(base, "SEQ_CLS", boft_block_size=0, boft_block_num=8, boft_n_butterfly_factor=3, bias="all",
                         target_modules=["dense", "query", "value"], modules_to_save=["classifier", "classifier", "score"])
    names = [f"bert.encoder.layer.{i}.{m}" for i in range(mcfg["num_hidden_layers"])
             for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                       "intermediate.dense", "output.dense")] + ["bert.pooler.dense"]
    layers = {n: boft_layout(config, W[n + ".weight"].shape[1]) for n in names if G.matches_target(config["target_modules"], n)}
    t = {}
    for path, lay in layers.items():
        check(lay is not None, path)
        t[f"{path}.boft_R"] = gen.normal((lay["factors"], lay["block_num"], lay["block_size"], lay["block_size"]), 0.3)
        t[f"{path}.boft_s"] = 1.0 + gen.normal((W[path + ".weight"].shape[0], 1), 0.1)
    nl, H = bmeta["num_labels"], mcfg["hidden_size"]
    head_w = W["classifier.weight"] + gen.normal((nl, H), 0.5)
    head_b = W["classifier.bias"] + gen.normal((nl,), 0.5)
    # bias="all": every bias but the classifier's (a modules_to_save copy) is trained and saved, under the
    # state-dict name: "<module>.base_layer.bias" inside a BOFT layer, "<module>.bias" elsewhere.
    base_W = W
    W = dict(W)
    bias_keys = {}
    for name in sorted(k for k in W if k.endswith(".bias") and not k.startswith("classifier.")):
        W[name] = W[name] + gen.normal(tuple(W[name].shape), 0.2)
        path = name[: -len(".bias")]
        bias_keys[name] = f"{path}.base_layer.bias" if path in layers else name
    check(len(bias_keys) > len(layers), "biases outside the BOFT layers are trained too")
    ids, tt, mask = bg["input_ids"], bg["token_type_ids"], bg["attention_mask"]
    A = G.Tracked(t)
    hook = lambda A: boft_hook(layers, A, lambda p: W[p + ".weight"])  # noqa: E731
    logits = G.bert_seq_cls_forward(mcfg, W, ids, tt, mask, lin=hook(A), classifier=(head_w, head_b))
    check(not A.unused(), f"{case}: unused {A.unused()}")
    l64 = G.bert_seq_cls_forward(mcfg, W, ids, tt, mask, torch.float64, lin=hook(G.Tracked(t)), classifier=(head_w, head_b))
    checks = G.common_checks(case, logits, l64, bg["logits"], bg["logits"], G.bert_seq_cls_forward(mcfg, base_W, ids, tt, mask), None)
    M = boft_merged(W, layers, t)
    M["classifier.weight"], M["classifier.bias"] = head_w, head_b
    checks["merged_vs_unmerged"] = maxdiff(G.bert_seq_cls_forward(mcfg, M, ids, tt, mask), logits)
    check(checks["merged_vs_unmerged"] < G.MERGE_TOL, f"{case}: merged != unmerged")
    no_bias = G.bert_seq_cls_forward(mcfg, base_W, ids, tt, mask, lin=boft_hook(layers, G.Tracked(t), lambda p: W[p + ".weight"]),
                                     classifier=(head_w, head_b))
    checks["effect_of_trained_biases"] = maxdiff(no_bias, logits)
    check(checks["effect_of_trained_biases"] > 5e-2, "the trained biases make no difference")
    adapter = G.saved(t)
    for name, key in bias_keys.items():
        adapter["base_model.model." + key] = W[name]
    adapter["base_model.model.classifier.weight"] = head_w
    adapter["base_model.model.classifier.bias"] = head_b
    golden = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "logits": logits.contiguous(),
              "logits_base": bg["logits"].contiguous()}
    meta = G.base_meta(case, base, bmeta, (
        "BOFT boft_block_num=8, boft_n_butterfly_factor=3 on query, value and every '*.dense' layer of bert_seq_cls "
        "(biased layers: PEFT scales the output without its bias, (W·x·M)⊙s + b; merged W' = diag(s)·W·Mᵀ, bias "
        "unchanged), bias='all' (every bias trained and saved: '<module>.base_layer.bias' in BOFT layers, "
        "'<module>.bias' elsewhere, e.g. LayerNorms), with the trained classifier saved as modules_to_save."), True, {
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "compare": {"logits": {"valid": None}},
            "self_checks": checks,
        })
    G.write_case(case, config, adapter, golden, meta)


def permutation_table():
    """(in_features, block_num, block_size, n_butterfly_factor) → PEFT's permutation per factor, or null if PEFT raises."""
    rows = []
    for n in (8, 16, 24, 32, 48, 64):
        for size in (2, 4, 8):
            for factor in (1, 2, 3, 4):
                lay = boft_layout({"boft_block_size": size, "boft_block_num": 0, "boft_n_butterfly_factor": factor}, n)
                rows.append({"in_features": n, "boft_block_size": size, "boft_block_num": 0,
                             "boft_n_butterfly_factor": factor,
                             "perms": None if lay is None else [p.tolist() for p in lay["perms"]]})
        for num in (2, 4, 8):
            for factor in (2, 3):
                lay = boft_layout({"boft_block_size": 0, "boft_block_num": num, "boft_n_butterfly_factor": factor}, n)
                rows.append({"in_features": n, "boft_block_size": 0, "boft_block_num": num,
                             "boft_n_butterfly_factor": factor,
                             "perms": None if lay is None else [p.tolist() for p in lay["perms"]]})
    # each permutation is a bijection, and factor 0 is the identity
    for r in rows:
        for p in r["perms"] or []:
            check(sorted(p) == list(range(r["in_features"])), "not a permutation")
        if r["perms"]:
            check(r["perms"][0] == list(range(r["in_features"])), "the first factor's permutation is the identity")
    check(any(r["perms"] is None for r in rows) and sum(1 for r in rows if r["perms"]) > 20, "table coverage")
    path = os.path.join(os.path.dirname(OUT), "boft-permutations.json")
    with open(path, "w") as f:
        f.write(json.dumps({"source": "PEFT v0.20.0 BOFTLayer.update_layer / block_butterfly_perm, re-derived in "
                                      "scripts/goldens/make_oft_goldens.py", "rows": rows}, indent=1) + "\n")


def main():
    case_oft("oft_llama", (
        "OFT oft_block_size=8 on every linear layer of llama_basic, PEFT 0.20.0's default Cayley-Neumann series "
        "(5 terms: I + 2Q + 2Q² + 2Q³ + Q⁴) of random packed skew-symmetric oft_R [r, 28]. x -> x·R per block "
        "before the frozen layer; merged W' = (R·Wᵀ)ᵀ."),
        {"oft_block_size": 8, "target_modules": sorted(LLAMA_TARGETS)}, 0.2)
    case_oft("oft_llama_exact_block_share_coft", (
        "OFT r=4 (oft_block_size 0: blocks of 8 for in 32, 16 for in 64), exact Cayley (use_cayley_neumann false: "
        "torch.linalg.solve(I+Q, I-Q, left=False)), block_share (oft_R [1, n]), coft with eps=0.5: the projection "
        "(radius eps/√1) rescales every layer's Q but v_proj's, which is inside the ball."),
        {"r": 4, "oft_block_size": 0, "use_cayley_neumann": False, "block_share": True, "coft": True, "eps": 0.5,
         "target_modules": ["down_proj", "q_proj", "v_proj"]}, 0.2, shrink=("v_proj",))
    case_boft_llama()
    case_boft_bert()
    permutation_table()
    for name, size in G.REPORT:
        print(f"{name}: {size} bytes")


if __name__ == "__main__":
    main()
