#!/usr/bin/python3
"""Adapter folders of peftkit's own HUT, SOKA and LORA_SB types on the tiny golden checkpoints, with
expected logits computed here in plain PyTorch.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_kron_goldens.py
Reads test/golden/models/<base>/ and writes test/golden/kron/<case>/{adapter_config.json,
adapter_model.safetensors, golden.safetensors, meta.json}; src/tuners/soka/goldens.test.ts loads each
folder with PeftModel.fromPretrained and compares its logits, unmerged and merged, at atol 1e-4.

The adapter math is written from the method definitions (docs/methods/{hut,soka,lora_sb}.md), not from
peftkit's code: HUT W' = W ⊙ (1 + s·B·A); SoKA ΔW = Σ U_k ⊗ V_k − Σ U⁰_k ⊗ V⁰_k with torch.kron;
LoRA-SB ΔW = s·B·R·A. The tensors are random "trained" values (not the methods' initialisations), so
every term matters. GPT-2's Conv1D weights are [in, out]: the adapters work on the logical [out, in]
weight, so the stored weight receives ΔWᵀ. The forwards are make_peft_goldens.py's reference forwards
with a hook on the linear layers; merged logits go through ref_models' forward on W + ΔW.
"""
import json
import math
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as P  # noqa: E402
import ref_models as R  # noqa: E402
from common import SeededGen, check, maxdiff  # noqa: E402
from st_io import read_safetensors, write_safetensors  # noqa: E402

OUT = os.path.join(P.ROOT, "test", "golden", "kron")
ATOL = 1e-4


class Gen(SeededGen):
    base_seed = 8642


def config_of(peft_type, base, **fields):
    c = P.common_fields(peft_type, "CAUSAL_LM", base)
    c.update({"exclude_modules": None, "layers_pattern": None, "layers_to_transform": None, "modules_to_save": None})
    c.update(fields)
    return c


def write(case, config, adapter, golden, meta):
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), adapter, {"format": "pt"})
    write_safetensors(os.path.join(d, "golden.safetensors"), golden)
    meta = dict(meta, adapter_keys={k: list(v.shape) for k, v in sorted(adapter.items())})
    with open(os.path.join(d, "meta.json"), "w") as f:
        f.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for fn, src in (("adapter_model.safetensors", adapter), ("golden.safetensors", golden)):
        back, _ = read_safetensors(os.path.join(d, fn))
        check(set(back) == set(src) and all(torch.equal(back[k], src[k]) for k in src), f"{case}/{fn} does not read back")


def modules(base, cfg, W, targets):
    """Targeted module paths -> (logical out, in, stored weight key)."""
    out = {}
    if base == "gpt2":
        for i in range(cfg["n_layer"]):
            for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                if m.split(".")[-1] in targets:
                    key = f"h.{i}.{m}.weight"
                    i_, o_ = W[key].shape
                    out[f"transformer.h.{i}.{m}"] = (o_, i_, key)
    else:
        names, shapes = P.llama_linear_modules(cfg, W)
        for n in names:
            if n.split(".")[-1] in targets:
                o_, i_ = shapes[n]
                out[n] = (o_, i_, n + ".weight")
    return out


def run_case(case, base, config, targets, make_tensors, delta_of, description):
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = Gen(case)
    mods = modules(base, mcfg, W, targets)
    check(mods, f"{case}: no module")
    t = make_tensors(gen, mods)
    fif = base == "gpt2"

    def logical(key, dtype):
        w = W[key].to(dtype)
        return w.t() if fif else w

    def lin(path, x, dtype, bias=None):
        if path in mods:
            _, _, key = mods[path]
            w = logical(key, dtype) + delta_of(path, {k: v.to(dtype) for k, v in t.items()}, logical(key, dtype))
        else:
            key = (path[len("transformer."):] if fif else path) + ".weight"
            w = logical(key, dtype)
        y = x @ w.t()
        return y + bias if bias is not None else y

    fwd = P.gpt2_forward if fif else P.llama_forward
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = fwd(mcfg, W, ids, mask, lin=lin)
    l64 = fwd(mcfg, W, ids, mask, torch.float64, lin=lin)
    d64 = maxdiff(logits, l64, mask)
    check(d64 < 1e-5, f"{case}: float32 vs float64 {d64}")
    effect = maxdiff(logits, bg["logits"], mask)
    check(effect > 5e-2, f"{case}: the adapter barely changes the logits ({effect})")
    # Merged: W + ΔW (ΔWᵀ into GPT-2's [in, out]) through the independent reference forward.
    M = dict(W)
    for path, (_, _, key) in mods.items():
        d = delta_of(path, {k: v.double() for k, v in t.items()}, logical(key, torch.float64))
        M[key] = (W[key].double() + (d.t() if fif else d)).float()
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    merged = (R.gpt2_forward if fif else R.llama_like_forward)(mcfg, R.Weights(M), ids, mask, arange)
    dm = maxdiff(merged, logits, mask)
    check(dm < 2e-5, f"{case}: merged != unmerged ({dm})")
    meta = {
        "case": case,
        "base_model": base,
        "description": description,
        "atol": ATOL,
        "compare_note": "PeftModel.fromPretrained(base, folder) on input_ids + attention_mask; compare logits where "
                        "valid == 1, unmerged and after mergeAdapter().",
        "self_checks": {"float64_max_abs_diff": d64, "adapter_effect_max_abs": effect, "merged_vs_unmerged": dm},
    }
    golden = {
        "input_ids": ids,
        "attention_mask": mask,
        "valid": mask.to(torch.uint8),
        "logits": logits.contiguous(),
    }
    write(case, config, P.saved(t), golden, meta)


# ---------------------------------------------------------------- HUT: W' = W ⊙ (1 + s·B·A)


def hut_case(case, base, targets, r, alpha):
    def tensors(gen, mods):
        t = {}
        for path, (o_, i_, _) in mods.items():
            t[f"{path}.hut_A.weight"] = gen.uniform((r, i_), -1 / math.sqrt(i_), 1 / math.sqrt(i_))
            t[f"{path}.hut_B.weight"] = gen.normal((o_, r), 1.0)
        return t

    def delta(path, t, w):
        return (alpha / r) * w * (t[f"{path}.hut_B.weight"] @ t[f"{path}.hut_A.weight"])

    config = config_of("HUT", base, r=r, hut_alpha=alpha, init_hut_weights=True, target_modules=targets)
    run_case(case, base, config, targets, tensors, delta,
             f"HUT r={r}, hut_alpha={alpha} on {targets}: W' = W ⊙ (1 + s·B·A), s = alpha/r, B·A on the logical "
             "[out, in] weight; random A, B.")


# ---------------------------------------------------------------- SoKA: ΔW = Σ U_k ⊗ V_k − Σ U⁰_k ⊗ V⁰_k


def soka_case(case, base, targets, r, m, n):
    def tensors(gen, mods):
        t = {}
        for path, (o_, i_, _) in mods.items():
            p, q = o_ // m, i_ // n
            check(o_ % m == 0 and i_ % n == 0, f"{case}: factors do not divide {path}")
            for name, shape in (("soka_U", (r, m, n)), ("soka_V", (r, p, q)), ("soka_U0", (r, m, n)), ("soka_V0", (r, p, q))):
                t[f"{path}.{name}"] = gen.normal(shape, 0.3)
        return t

    def delta(path, t, w):
        d = torch.zeros_like(w)
        for k in range(r):
            d = d + torch.kron(t[f"{path}.soka_U"][k], t[f"{path}.soka_V"][k])
            d = d - torch.kron(t[f"{path}.soka_U0"][k], t[f"{path}.soka_V0"][k])
        return d

    config = config_of("SOKA", base, r=r, factor_out=m, factor_in=n, energy_threshold=None, init_soka_weights=True,
                       target_modules=targets)
    run_case(case, base, config, targets, tensors, delta,
             f"SoKA r={r}, factor_out={m}, factor_in={n} on {targets}: ΔW = Σ kron(U_k, V_k) − Σ kron(U⁰_k, V⁰_k) "
             "(torch.kron) on the logical [out, in] weight; random factors, U ≠ U⁰.")


# ---------------------------------------------------------------- LoRA-SB: ΔW = s·B·R·A


def lora_sb_case(case, base, targets, r, alpha):
    def tensors(gen, mods):
        t = {}
        for path, (o_, i_, _) in mods.items():
            t[f"{path}.lora_sb_A.weight"] = gen.normal((r, i_), 1 / math.sqrt(i_))
            t[f"{path}.lora_sb_B.weight"] = gen.normal((o_, r), 1 / math.sqrt(o_))
            t[f"{path}.lora_sb_R.weight"] = gen.normal((r, r), 1.0)
        return t

    def delta(path, t, w):
        return (alpha / r) * (t[f"{path}.lora_sb_B.weight"] @ t[f"{path}.lora_sb_R.weight"] @ t[f"{path}.lora_sb_A.weight"])

    config = config_of("LORA_SB", base, r=r, lora_alpha=alpha, eta=1e-3, target_modules=targets)
    run_case(case, base, config, targets, tensors, delta,
             f"LoRA-SB r={r}, lora_alpha={alpha} on {targets}: ΔW = s·B·R·A with a full (non-diagonal) R; random B, A, R.")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    hut_case("hut_llama", "llama_basic", ["q_proj", "v_proj", "down_proj"], 3, 6)
    hut_case("hut_gpt2_conv1d", "gpt2", ["c_attn", "c_fc"], 2, 2)
    soka_case("soka_gpt2_conv1d", "gpt2", ["c_attn", "c_fc"], 2, 8, 4)
    soka_case("soka_llama", "llama_basic", ["q_proj", "gate_proj"], 3, 4, 4)
    lora_sb_case("lora_sb_llama", "llama_basic", ["q_proj", "v_proj", "up_proj"], 4, 8)
    lora_sb_case("lora_sb_gpt2_conv1d", "gpt2", ["c_attn"], 3, 3)
    total = 0
    for name in sorted(os.listdir(OUT)):
        size = sum(os.path.getsize(os.path.join(OUT, name, f)) for f in os.listdir(os.path.join(OUT, name)))
        total += size
        print(f"{name:24s} {size:8d} bytes")
    check(total < 512 * 1024, "kron goldens over 512 kB")


if __name__ == "__main__":
    main()
