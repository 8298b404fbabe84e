#!/usr/bin/python3
"""HF PEFT AdaLoRA adapter folders for the tiny golden checkpoints, with expected logits, and a run of
AdaLoRA's rank allocator on fixed tensors and gradients.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_adalora_goldens.py   (after make_goldens.py)
Writes test/golden/peft-adalora/<case>/{adapter_config.json, adapter_model.safetensors, golden.safetensors,
meta.json} in the layout of make_peft_goldens.py (whose forwards, config helpers and writer it reuses) and
test/golden/peft-adalora/allocator.json.

Nothing here runs PEFT (it cannot be installed): the math is our own PyTorch re-derivation of PEFT v0.20.0's
sources, read in the mirror:
  tuners/adalora/config.py   AdaLoraConfig fields and defaults (LoraConfig's fields inherited)
  tuners/adalora/layer.py    SVDLinear.forward / get_delta_weight: x @ (A * E).T @ B.T * scaling / (ranknum + 1e-5),
                             scaling = lora_alpha, ranknum = init_r (a float32 tensor; never saved);
                             RankAllocator: budget_schedule, update_ipt, _element_score, _combine_ipt,
                             mask_to_budget (torch.kthvalue), mask_using_rank_pattern
  tuners/adalora/model.py    update_and_allocate (the three phases), resize_modules_by_rank_pattern (ranknum kept),
                             resize_state_dict_by_rank_pattern
  utils/save_and_load.py     ADALORA: "lora_" keys, adapter name stripped, rank_pattern keys stripped of it, tensors
                             cut to the pattern's triplets
Output is deterministic.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as P  # noqa: E402
import ref_models as R  # noqa: E402
from common import check, maxdiff  # noqa: E402

P.OUT = os.path.join(P.ROOT, "test", "golden", "peft-adalora")


def adalora_config(base, **over):
    cfg = P.lora_config(base, "CAUSAL_LM")
    cfg["peft_type"] = "ADALORA"
    # AdaLoraConfig.rank_pattern (default None) replaces LoraConfig's; the rest are AdaLoRA's own fields.
    cfg.update({"rank_pattern": None, "target_r": 8, "init_r": 12, "tinit": 0, "tfinal": 0, "deltaT": 1,
                "beta1": 0.85, "beta2": 0.85, "orth_reg_weight": 0.5, "total_step": 100})
    return P.apply_over(cfg, over)


# ---------------------------------------------------------------- the layer (tuners/adalora/layer.py)


def ranknum_plus_eps(init_r, dtype):
    # ranknum is a float32 Parameter filled with float(r); forward adds 1e-5 to it (a float32 op)
    return torch.tensor([float(init_r)], dtype=torch.float32).to(dtype) + 1e-5


def adalora_hook(layers, A, weight_of, init_r, alpha, fan_in_fan_out=False):
    """SVDLinear.forward (eval: no dropout): base(x) + (x @ (A*E).T @ B.T) * scaling / (ranknum + 1e-5)."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        y = x @ w if fan_in_fan_out else x @ w.t()
        if bias is not None:
            y = y + bias
        if path not in layers:
            return y
        a = A(f"{path}.lora_A").to(dtype)
        e = A(f"{path}.lora_E").to(dtype)
        b = A(f"{path}.lora_B").to(dtype)
        return y + (x @ (a * e).t() @ b.t()) * alpha / ranknum_plus_eps(init_r, dtype)

    return lin


def delta_weight(t, path, init_r, alpha, fan_in_fan_out):
    """get_delta_weight: transpose(B @ (A * E), fan_in_fan_out) * scaling / (ranknum + 1e-5)."""
    d = t[f"{path}.lora_B"] @ (t[f"{path}.lora_A"] * t[f"{path}.lora_E"])
    return (d.t() if fan_in_fan_out else d) * alpha / ranknum_plus_eps(init_r, torch.float32)


def random_full(gen, layers, init_r, std=0.3):
    """A 'trained' adapter at init_r: A, B random, E random and nonzero everywhere (pruned E too: a save between masking steps)."""
    t = {}
    for name, l in layers.items():
        t[f"{name}.lora_A"] = gen.normal((init_r, l["in"]), std)
        t[f"{name}.lora_E"] = gen.normal((init_r, 1), 1.0)
        t[f"{name}.lora_B"] = gen.normal((l["out"], init_r), std)
    return t


def resize_by_pattern(t, pattern):
    """resize_state_dict_by_rank_pattern: E and A keep rows, B keeps columns where the mask is True."""
    out = dict(t)
    for key, bits in pattern.items():
        m = key[: -len(".lora_E")]
        idx = torch.tensor(bits, dtype=torch.bool)
        out[f"{m}.lora_E"] = t[f"{m}.lora_E"][idx]
        out[f"{m}.lora_A"] = t[f"{m}.lora_A"][idx]
        out[f"{m}.lora_B"] = t[f"{m}.lora_B"][:, idx]
    return out


def case_llama_pruned():
    case, base = "adalora_llama_pruned", "llama_basic"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    init_r, alpha = 6, 16
    targets = ["o_proj", "q_proj", "v_proj"]
    names, shapes = P.llama_linear_modules(mcfg, W)
    layers = {n: {"in": shapes[n][1], "out": shapes[n][0]} for n in names if P.matches_target(targets, n)}
    full = random_full(gen, layers, init_r)
    # the rank pattern after training: kept counts 4, 2, 0 (an emptied layer), 6 (nothing dropped), ...
    keeps = [[True, False, True, True, False, True], [False, False, True, False, True, False],
             [False] * 6, [True] * 6, [False, True, False, False, False, False], [True, True, False, True, True, True]]
    pattern = {f"{n}.lora_E": keeps[i % len(keeps)] for i, n in enumerate(sorted(layers))}
    config = adalora_config(base, init_r=init_r, target_r=3, lora_alpha=alpha, target_modules=targets,
                            tinit=10, tfinal=20, deltaT=5, total_step=200, rank_pattern=pattern)
    t = resize_by_pattern(full, pattern)
    A = P.Tracked(t)
    lin = adalora_hook(layers, A, lambda p: W[p + ".weight"], init_r, alpha)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.llama_forward(mcfg, W, ids, mask), mask)
    # zeroing the dropped singular values of the full tensors computes the same thing
    zeroed = dict(full)
    for key, bits in pattern.items():
        zeroed[key] = full[key] * torch.tensor(bits, dtype=torch.float32).view(-1, 1)
    same = P.llama_forward(mcfg, W, ids, mask, lin=adalora_hook(layers, P.Tracked(zeroed), lambda p: W[p + ".weight"],
                                                                init_r, alpha))
    checks["full_with_zeroed_E_vs_pruned"] = maxdiff(same, logits, mask)
    check(checks["full_with_zeroed_E_vs_pruned"] < 1e-5, "pruned != zeroed")
    # a loader that divided by the kept rank instead of init_r would differ
    per_layer = {}
    for key, bits in pattern.items():
        per_layer[key[: -len(".lora_E")]] = max(sum(bits), 1)

    def kept_hook(path, x, dtype, bias=None):
        y = x @ W[path + ".weight"].to(dtype).t()
        if path not in layers:
            return y
        a, e, b = (t[f"{path}.lora_{p}"].to(dtype) for p in "AEB")
        return y + (x @ (a * e).t() @ b.t()) * alpha / (per_layer[path] + 1e-5)

    other = P.llama_forward(mcfg, W, ids, mask, lin=kept_hook)
    checks["kept_rank_scaling_difference"] = maxdiff(other, logits, mask)
    check(checks["kept_rank_scaling_difference"] > 1e-2, "the scaling choice makes no difference")
    M = dict(W)
    for n in layers:
        M[n + ".weight"] = W[n + ".weight"] + delta_weight(t, n, init_r, alpha, False)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    golden = P.decoder_golden(bg, logits)
    golden["logits_kept_rank_scaling"] = other.contiguous()
    meta = P.base_meta(case, base, bmeta, (
        f"AdaLoRA init_r={init_r}, lora_alpha={alpha}, target_modules o_proj, q_proj, v_proj of llama_basic, with a "
        "rank_pattern (keys '<module>.lora_E', adapter name stripped; lists of booleans of length init_r) keeping "
        "4, 2, 0, 6, 1, 5 triplets by module in sorted order. Tensors are cut to the pattern as "
        "resize_state_dict_by_rank_pattern does ('base_model.model.<module>.lora_A' [k, in], '.lora_E' [k, 1], "
        "'.lora_B' [out, k], no '.weight'; k = 0 gives empty tensors). Each layer adds "
        "(x @ (A*E).T @ B.T) * lora_alpha / (init_r + 1e-5): PEFT keeps ranknum = init_r when it resizes on load. "
        "`logits_kept_rank_scaling` divides by the kept rank instead (wrong)."),
        True, {"self_checks": checks, "init_r": init_r,
               "compare_note": P.COMPARE_NOTE + " `logits_kept_rank_scaling`: what dividing by the kept rank gives."})
    P.write_case(case, config, P.saved(t), golden, meta)


def case_gpt2():
    case, base = "adalora_gpt2_fan_in_fan_out", "gpt2"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    init_r, alpha = 4, 8
    config = adalora_config(base, init_r=init_r, target_r=2, lora_alpha=alpha, fan_in_fan_out=True,
                            target_modules=["c_attn"], total_step=50)
    layers = {}
    for i in range(mcfg["n_layer"]):
        n = f"transformer.h.{i}.attn.c_attn"
        fin, fout = W[f"h.{i}.attn.c_attn.weight"].shape  # Conv1D [in, out]
        layers[n] = {"in": fin, "out": fout}
    t = random_full(gen, layers, init_r, 0.15)
    A = P.Tracked(t)
    hub = (lambda p: W[p[len("transformer."):] + ".weight"])
    lin = adalora_hook(layers, A, hub, init_r, alpha, fan_in_fan_out=True)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.gpt2_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.gpt2_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.gpt2_forward(mcfg, W, ids, mask), mask)
    M = dict(W)
    for n in layers:
        k = n[len("transformer."):] + ".weight"
        M[k] = W[k] + delta_weight(t, n, init_r, alpha, True)
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.gpt2_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    meta = P.base_meta(case, base, bmeta, (
        f"AdaLoRA init_r={init_r}, lora_alpha={alpha}, fan_in_fan_out=true on gpt2's c_attn (Conv1D [in, out]); no "
        "rank_pattern (rank_pattern null): full init_r tensors. A [r, in], E [r, 1], B [out, r] in logical sizes; "
        "the merged delta is transposed into the Conv1D layout."),
        True, {"self_checks": checks})
    P.write_case(case, config, P.saved(t), P.decoder_golden(bg, logits), meta)


# ---------------------------------------------------------------- the rank allocator (layer.py RankAllocator)


def budget_schedule(step, c, init_bgt, target_bgt):
    if step <= c["tinit"]:
        return init_bgt, False
    if step > c["total_step"] - c["tfinal"]:
        return target_bgt, True
    mul_coeff = 1 - (step - c["tinit"]) / (c["total_step"] - c["tfinal"] - c["tinit"])
    return int((init_bgt - target_bgt) * (mul_coeff ** 3) + target_bgt), step % c["deltaT"] == 0


class Allocator:
    """RankAllocator + AdaLoraModel.update_and_allocate on a dict of named float32 tensors."""

    def __init__(self, c, modules):
        self.c, self.modules = c, modules
        self.init_bgt = c["init_r"] * len(modules)
        self.target_bgt = c["target_r"] * len(modules)
        self.reset_ipt()
        self.rank_pattern = None

    def reset_ipt(self):
        self.ipt, self.exp_avg_ipt, self.exp_avg_unc = {}, {}, {}

    def update_ipt(self, params, grads):
        for n, p in params.items():
            if n not in self.ipt:
                self.ipt[n] = torch.zeros_like(p)
                self.exp_avg_ipt[n] = torch.zeros_like(p)
                self.exp_avg_unc[n] = torch.zeros_like(p)
            self.ipt[n] = (p * grads[n]).abs()
            self.exp_avg_ipt[n] = self.c["beta1"] * self.exp_avg_ipt[n] + (1 - self.c["beta1"]) * self.ipt[n]
            self.exp_avg_unc[n] = (self.c["beta2"] * self.exp_avg_unc[n]
                                   + (1 - self.c["beta2"]) * (self.ipt[n] - self.exp_avg_ipt[n]).abs())

    def score(self, n):
        return self.exp_avg_ipt[n] * self.exp_avg_unc[n]

    def mask_to_budget(self, params, budget):
        triplet, all_score = {}, []
        for m in self.modules:
            comb_a = torch.mean(self.score(f"{m}.lora_A"), dim=1, keepdim=True)
            comb_b = torch.mean(self.score(f"{m}.lora_B"), dim=0, keepdim=False).view(-1, 1)
            ipt_ab = torch.cat([comb_a, comb_b], dim=1).sum(dim=1)
            s = self.score(f"{m}.lora_E").view(-1) + ipt_ab.view(-1)
            triplet[m] = s.view(-1, 1)
            all_score.append(s.view(-1))
        thr = torch.kthvalue(torch.cat(all_score), k=self.init_bgt - budget)[0].item()
        pattern = {}
        for m in self.modules:
            params[f"{m}.lora_E"].masked_fill_(triplet[m] <= thr, 0.0)
            pattern[m] = (~(triplet[m] <= thr)).view(-1).tolist()
        return pattern, thr

    def mask_using_rank_pattern(self, params):
        for m in self.modules:
            params[f"{m}.lora_E"].masked_fill_(~torch.tensor(self.rank_pattern[m]).unsqueeze(-1), 0.0)

    def update_and_allocate(self, params, grads, g):
        c = self.c
        final = c["total_step"] - c["tfinal"]
        rec = {"global_step": g}
        if g < final:
            self.update_ipt(params, grads)
            budget, mask = budget_schedule(g, c, self.init_bgt, self.target_bgt)
            if mask:
                self.rank_pattern, rec["threshold"] = self.mask_to_budget(params, budget)
        elif g == final:
            budget, _ = budget_schedule(g, c, self.init_bgt, self.target_bgt)
            self.rank_pattern, rec["threshold"] = self.mask_to_budget(params, budget)
            self.reset_ipt()
        else:
            budget = self.target_bgt
            self.mask_using_rank_pattern(params)
        rec["budget"] = budget
        return rec


def tensor_list(t):
    return [float(v) for v in t.flatten().tolist()]


def allocator_case():
    """Two layers (A [4, 5], E [4, 1], B [3, 4]); fresh random parameters and gradients at each of 12 updates."""
    gen = P.Gen("adalora_allocator")
    c = {"init_r": 4, "target_r": 2, "tinit": 1, "tfinal": 3, "total_step": 10, "deltaT": 2, "beta1": 0.85,
         "beta2": 0.7}
    modules = ["layers.0.q", "layers.1.q"]
    shapes = {"lora_A": (4, 5), "lora_E": (4, 1), "lora_B": (3, 4)}
    alloc = Allocator(c, modules)
    steps = []
    for g in range(12):
        params, grads = {}, {}
        for m in modules:
            for p, s in shapes.items():
                params[f"{m}.{p}"] = gen.normal(s, 0.5)
                grads[f"{m}.{p}"] = gen.normal(s, 0.5)
        before = {k: v.clone() for k, v in params.items()}
        rec = alloc.update_and_allocate(params, grads, g)
        check(all(torch.equal(before[k], params[k]) for k in params if not k.endswith("lora_E")), "only E changes")
        steps.append({
            **rec,
            "tensors": {k: tensor_list(v) for k, v in before.items()},
            "gradients": {k: tensor_list(v) for k, v in grads.items()},
            "e_after": {k: tensor_list(params[k]) for k in params if k.endswith("lora_E")},
            "rank_pattern": alloc.rank_pattern,
            "kept": None if alloc.rank_pattern is None else sum(sum(b) for b in alloc.rank_pattern.values()),
        })
    # every masking step keeps exactly its budget (random scores have no ties)
    for s in steps:
        if "threshold" in s:
            check(s["kept"] == s["budget"], f"step {s['global_step']}: kept {s['kept']} != budget {s['budget']}")
    return {"config": c, "modules": modules, "shapes": {k: list(v) for k, v in shapes.items()}, "steps": steps}


def schedule_tables():
    """budget_schedule(step) for a few configs, every step 0 … total_step + 1 (Python floats, int())."""
    out = []
    for c in ({"tinit": 0, "tfinal": 0, "total_step": 7, "deltaT": 1, "init_bgt": 24, "target_bgt": 16},
              {"tinit": 3, "tfinal": 4, "total_step": 20, "deltaT": 3, "init_bgt": 12 * 14, "target_bgt": 8 * 14},
              {"tinit": 200, "tfinal": 1000, "total_step": 3000, "deltaT": 10, "init_bgt": 12 * 48, "target_bgt": 2 * 48}):
        rows = [list(budget_schedule(s, c, c["init_bgt"], c["target_bgt"])) for s in range(c["total_step"] + 2)]
        out.append({"config": c, "budget_mask": rows})
    return out


def main():
    import shutil
    if os.path.isdir(P.OUT):
        shutil.rmtree(P.OUT)
    os.makedirs(P.OUT)
    case_llama_pruned()
    case_gpt2()
    with open(os.path.join(P.OUT, "allocator.json"), "w") as f:
        f.write(json.dumps({
            "source": (f"huggingface/peft {P.PEFT_TAG} ({P.PEFT_COMMIT}) tuners/adalora/layer.py RankAllocator and "
                       "model.py update_and_allocate, re-derived in PyTorch float32 (not PEFT itself)"),
            "allocator": allocator_case(),
            "schedules": schedule_tables(),
        }, sort_keys=True) + "\n")
    total = 0
    for name, size in P.REPORT:
        total += size
        print(f"{name:36s} {size:8d} bytes")
    print(f"allocator.json {os.path.getsize(os.path.join(P.OUT, 'allocator.json'))} bytes; cases {total} bytes")


if __name__ == "__main__":
    main()
