#!/usr/bin/python3
"""Generate HF PEFT FourierFT adapter folders for the tiny golden checkpoints, with expected logits, and
torch.randperm / torch.fft.ifft2 reference values for the spectrum positions and ΔW.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_fourierft_goldens.py
Reads test/golden/models/<base>/ and writes test/golden/peft-fourierft/<case>/{adapter_config.json,
adapter_model.safetensors, golden.safetensors, meta.json} in the layout of make_peft_goldens.py (whose
forwards, config helpers and writer it reuses), plus test/golden/peft-fourierft/indices.json.

Nothing here runs PEFT (it cannot be installed): the adapter math is our own PyTorch re-derivation of
PEFT v0.20.0's sources, read in the mirror:
  tuners/fourierft/layer.py   FourierFTLayer.update_layer (indices = torch.randperm(out*in,
                              generator=torch.Generator().manual_seed(random_loc_seed))[:n_frequency],
                              stacked as [idx // in, idx % in]), get_delta_weight (dense spectrum scattered,
                              torch.fft.ifft2(dense).real * scaling), FourierFTLinear.forward / merge
  tuners/fourierft/model.py   _create_and_replace: n_frequency_pattern keys matched with re.match(rf".*\\.{key}$")
  utils/save_and_load.py      get_peft_model_state_dict, generic branch: keys containing "fourierft_", i.e.
                              "<module>.fourierft_spectrum" (adapter name removed); the indices are a plain
                              dict, not saved
torch.randperm and torch.fft.ifft2 themselves are torch's (what PEFT calls), so the positions and ΔW here are
torch's own values. Output is deterministic.
"""
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_peft_goldens as P  # noqa: E402
import ref_models as R  # noqa: E402
from common import check, maxdiff  # noqa: E402

P.OUT = os.path.join(P.ROOT, "test", "golden", "peft-fourierft")


def fourierft_config(base, **over):
    cfg = P.common_fields("FOURIERFT", "CAUSAL_LM", base)
    cfg.update({"bias": "none", "exclude_modules": None, "fan_in_fan_out": False, "init_weights": False,
                "layers_pattern": None, "layers_to_transform": None, "modules_to_save": None, "n_frequency": 1000,
                "n_frequency_pattern": {}, "random_loc_seed": 777, "scaling": 150.0, "target_modules": None})
    return P.apply_over(cfg, over)


def indices(out_f, in_f, n, seed):
    """FourierFTLayer.update_layer: randperm on a fresh CPU generator, first n, split into rows and columns."""
    idx = torch.randperm(out_f * in_f, generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([idx // in_f, idx % in_f], dim=0)


def delta_weight(spectrum, idx, out_f, in_f, scaling):
    """get_delta_weight: float32 dense spectrum, ifft2, real part, times scaling."""
    dense = torch.zeros(out_f, in_f)
    dense[idx[0, :], idx[1, :]] = spectrum.float()
    return torch.fft.ifft2(dense).real * scaling


def frequency_of(cfg, name):
    """_create_and_replace's n_frequency for a module name."""
    pats = list(cfg["n_frequency_pattern"].keys())
    key = next(filter(lambda k: re.match(rf".*\.{k}$", name), pats), name)
    return cfg["n_frequency_pattern"].get(key, cfg["n_frequency"])


def fourier_hook(layers, A, weight_of, cfg, fan_in_fan_out):
    """FourierFTLinear.forward: base(x) + F.linear(x, ΔW)."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        y = x @ w if fan_in_fan_out else x @ w.t()
        if bias is not None:
            y = y + bias
        if path not in layers:
            return y
        l = layers[path]
        d = delta_weight(A(f"{path}.fourierft_spectrum"), l["idx"], l["out"], l["in"], cfg["scaling"])
        return y + x @ d.to(dtype).t()

    return lin


def make_layers(cfg, shapes, names):
    layers = {}
    for n in names:
        if P.matches_target(cfg["target_modules"], n):
            out_f, in_f = shapes[n]
            k = frequency_of(cfg, n)
            layers[n] = {"out": out_f, "in": in_f, "n": k, "idx": indices(out_f, in_f, k, cfg["random_loc_seed"])}
    return layers


def random_spectra(gen, layers, std):
    return {f"{n}.fourierft_spectrum": gen.normal((l["n"],), std) for n, l in layers.items()}


def case_llama():
    case, base = "fourierft_llama", "llama_basic"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    config = fourierft_config(base, n_frequency=100, scaling=20.0, random_loc_seed=2024,
                              n_frequency_pattern={"down_proj": 300, "model.layers.1.self_attn.v_proj": 7},
                              target_modules=["down_proj", "q_proj", "v_proj"])
    names, shapes = P.llama_linear_modules(mcfg, W)
    layers = make_layers(config, shapes, names)
    check({l["n"] for l in layers.values()} == {100, 300, 7}, "both pattern forms must take effect")
    t = random_spectra(gen, layers, 1.0)
    A = P.Tracked(t)
    lin = fourier_hook(layers, A, lambda p: W[p + ".weight"], config, False)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.llama_forward(mcfg, W, ids, mask), mask)
    M = dict(W)
    for n, l in layers.items():
        M[n + ".weight"] = W[n + ".weight"] + delta_weight(t[f"{n}.fourierft_spectrum"], l["idx"], l["out"], l["in"],
                                                           config["scaling"])
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    meta = P.base_meta(case, base, bmeta, (
        "FourierFT n_frequency=100, scaling=20, random_loc_seed=2024 on down_proj, q_proj, v_proj of llama_basic, "
        "n_frequency_pattern {down_proj: 300 (regex key), model.layers.1.self_attn.v_proj: 7 (a full module name: "
        "re.match(r'.*\\.<key>$') fails, the dict lookup by name hits)}. The folder holds only "
        "'<module>.fourierft_spectrum' [n] (random N(0,1)); positions = torch.randperm(out*in, "
        "generator=manual_seed(2024))[:n] as (idx // in, idx % in), regenerated at load. Each layer adds "
        "x ΔWᵀ with ΔW = ifft2(dense spectrum).real * scaling; merged W + ΔW, checked equal."),
        True, {"self_checks": checks})
    P.write_case(case, config, P.saved(t), P.decoder_golden(bg, logits), meta)


def case_gpt2():
    case, base = "fourierft_gpt2", "gpt2"
    mcfg, bmeta, W, bg = P.load_base(base)
    gen = P.Gen(case)
    config = fourierft_config(base, n_frequency=200, scaling=40.0, fan_in_fan_out=True,
                              target_modules=["c_attn", "mlp.c_proj"])
    names, shapes = [], {}
    for i in range(mcfg["n_layer"]):
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            n = f"transformer.h.{i}.{m}"
            fin, fout = W[f"h.{i}.{m}.weight"].shape  # Conv1D [in, out]
            names.append(n)
            shapes[n] = (fout, fin)
    layers = make_layers(config, shapes, names)
    check(len(layers) == 2 * mcfg["n_layer"], "c_attn and mlp.c_proj per block")
    t = random_spectra(gen, layers, 1.0)
    A = P.Tracked(t)
    hub = (lambda p: W[p[len("transformer."):] + ".weight"])
    lin = fourier_hook(layers, A, hub, config, True)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = P.gpt2_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = P.common_checks(case, logits, P.gpt2_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                             bg["logits"], P.gpt2_forward(mcfg, W, ids, mask), mask)
    M = dict(W)
    for n, l in layers.items():
        k = n[len("transformer."):] + ".weight"
        # merge: transpose(ΔW, fan_in_fan_out) into Conv1D's [in, out]
        M[k] = W[k] + delta_weight(t[f"{n}.fourierft_spectrum"], l["idx"], l["out"], l["in"], config["scaling"]).t()
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.gpt2_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < P.MERGE_TOL, f"{case}: merged != unmerged {checks}")
    # another seed puts the frequencies elsewhere, so a loader must regenerate them from this seed
    other_cfg = dict(config, random_loc_seed=778)
    other_layers = make_layers(other_cfg, shapes, names)
    other = P.gpt2_forward(mcfg, W, ids, mask, lin=fourier_hook(other_layers, P.Tracked(t), hub, other_cfg, True))
    checks["other_seed_difference"] = maxdiff(other, logits, mask)
    check(checks["other_seed_difference"] > 1e-2, "the positions make no difference")
    golden = P.decoder_golden(bg, logits)
    golden["logits_other_seed"] = other.contiguous()
    meta = P.base_meta(case, base, bmeta, (
        "FourierFT n_frequency=200, scaling=40, random_loc_seed=777 (PEFT's default), fan_in_fan_out=true on gpt2's "
        "c_attn and mlp.c_proj (Conv1D [in, out]; in/out features from the weight's shape as PEFT reads them). "
        "ΔW [out, in] = ifft2(dense spectrum).real * scaling; forward adds x ΔWᵀ, merge adds ΔWᵀ to the [in, out] "
        "weight."), True, {"self_checks": checks,
                           "compare_note": P.COMPARE_NOTE + " `logits_other_seed` = the same spectra placed with "
                                                            "random_loc_seed 778."})
    P.write_case(case, config, P.saved(t), golden, meta)


def index_goldens():
    """randperm-based positions (several sizes, draws across the generator's 624-word refill) and ifft2 ΔW."""
    out = {"torch_version": torch.__version__, "indices": [], "delta": []}
    for out_f, in_f, n, seed in ((4, 5, 20, 0), (32, 32, 100, 777), (64, 32, 700, 2024), (256, 688, 1000, 777),
                                 (7, 3, 5, 2 ** 33 + 1)):
        idx = indices(out_f, in_f, n, seed)
        out["indices"].append({"out": out_f, "in": in_f, "n": n, "seed": seed, "rows": idx[0].tolist(),
                               "cols": idx[1].tolist()})
    gen = P.Gen("fourierft_delta")
    for out_f, in_f, n, seed, scaling in ((6, 10, 7, 3, 150.0), (12, 5, 60, 11, 2.5)):
        idx = indices(out_f, in_f, n, seed)
        s = gen.normal((n,), 1.0)
        d = delta_weight(s, idx, out_f, in_f, scaling)
        out["delta"].append({"out": out_f, "in": in_f, "n": n, "seed": seed, "scaling": scaling,
                             "spectrum": [float(x) for x in s], "delta": [float(x) for x in d.flatten()]})
    path = os.path.join(P.OUT, "indices.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    P.REPORT.append(("indices.json", os.path.getsize(path)))


def main():
    import shutil
    if os.path.isdir(P.OUT):
        shutil.rmtree(P.OUT)
    os.makedirs(P.OUT)
    case_llama()
    case_gpt2()
    index_goldens()
    total = 0
    for name, size in P.REPORT:
        total += size
        print(f"{name:36s} {size:8d} bytes")
    print(f"{'total':36s} {total:8d} bytes")


if __name__ == "__main__":
    main()
