#!/usr/bin/python3
"""Generate tiny random Hugging Face checkpoints and their expected outputs (golden files).

The outputs are those of ref_models.py, our own PyTorch forward passes written from transformers'
modeling code; transformers is not installed or run.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_goldens.py
Writes test/golden/models/<case>/{config.json, model.safetensors, golden.safetensors, meta.json}.
Output is deterministic (fixed torch seeds, sorted safetensors layout, sorted JSON keys).
"""
import json
import math
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nn_crosscheck  # noqa: E402
import ref_models as R  # noqa: E402
from common import SeededGen, check, maxdiff  # noqa: E402
from st_io import read_safetensors, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "test", "golden", "models")
# Written as config.json's "transformers_version" (HF checkpoints record one); transformers is not run.
TF_VERSION = "4.46.3"
ATOL = 1e-4
# Float32 goldens must agree with a float64 run far inside ATOL, so that a correct
# implementation with a different summation order cannot fail by rounding alone.
F64_TOL = 1e-5
BASE_SEED = 1234

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

REPORT = []




class Gen(SeededGen):
    base_seed = BASE_SEED

    def lin(self, out, inp):
        # scale 1/sqrt(fan_in) keeps activations O(1), so the nonlinearities matter and
        # logits are large enough for atol 1e-4 to be a real test
        return self.normal((out, inp), 1.0 / math.sqrt(inp))

    def norm(self, n):
        return 1.0 + self.normal((n,), 0.2)

    def bias(self, n, std=0.1):
        return self.normal((n,), std)



# ---------------------------------------------------------------- writing


def write_case(name, config, weights, golden, meta):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_safetensors(os.path.join(d, "model.safetensors"), weights)
    write_safetensors(os.path.join(d, "golden.safetensors"), golden)
    meta = dict(meta)
    meta["golden_keys"] = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                           for k, v in sorted(golden.items())}
    with open(os.path.join(d, "meta.json"), "w") as f:
        f.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    # read back with our own reader: bit-exact round trip, and the files are what we meant
    for fn, src in (("model.safetensors", weights), ("golden.safetensors", golden)):
        back, md = read_safetensors(os.path.join(d, fn))
        check(md == {"format": "pt"}, f"{name}/{fn}: metadata {md}")
        check(set(back) == set(src), f"{name}/{fn}: key set changed")
        for k in src:
            check(back[k].dtype == src[k].dtype and torch.equal(back[k], src[k]), f"{name}/{fn}: {k} differs")
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    check(size <= 300 * 1024, f"{name}: {size} bytes > 300 KB")
    REPORT.append((name, size))


def assert_all_used(name, W, ignore=()):
    left = W.unused(ignore)
    check(not left, f"{name}: weights never read by the forward: {left}")


# ---------------------------------------------------------------- decoder inputs

B_DEC, T_DEC = 3, 10
LEFT_PAD, RIGHT_PAD = 3, 2


def decoder_inputs(gen, vocab, pad_id):
    ids = gen.ints(3, vocab, (B_DEC, T_DEC))
    mask = torch.ones(B_DEC, T_DEC, dtype=torch.int64)
    mask[1, :LEFT_PAD] = 0  # left-padded row, as batched generation pads
    mask[2, T_DEC - RIGHT_PAD :] = 0  # right-padded row
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
    return ids, mask


def mask_positions(mask):
    # what generate() feeds (cumsum - 1); padded slots clamped to 0 (transformers fills 1 there,
    # which cannot change any unpadded position's output)
    return (torch.cumsum(mask, dim=1) - 1).clamp(min=0)


def decoder_goldens(name, cfg, W, fwd, ids, mask):
    """Plain-forward goldens + mask-position goldens + independent consistency checks."""
    B, T = ids.shape
    arange = torch.arange(T)[None].expand(B, T)
    posm = mask_positions(mask)
    logits = fwd(W, ids, mask, arange, torch.float32)
    logits_mp = fwd(W, ids, mask, posm, torch.float32)
    valid = mask.bool()
    d64 = max(maxdiff(logits, fwd(W, ids, mask, arange, torch.float64), valid),
              maxdiff(logits_mp, fwd(W, ids, mask, posm, torch.float64), valid))
    check(d64 < F64_TOL, f"{name}: float32 vs float64 {d64}")
    # each padded row, at its real tokens, must equal that row run alone without padding
    ones = lambda n: torch.ones(1, n, dtype=torch.int64)  # noqa: E731
    r1 = ids[1:2, LEFT_PAD:]
    alone1 = fwd(W, r1, ones(r1.shape[1]), torch.arange(r1.shape[1])[None], torch.float32)
    dl = maxdiff(logits_mp[1:2, LEFT_PAD:], alone1)
    check(dl < 1e-5, f"{name}: left-padded row with mask positions != unpadded run ({dl})")
    dshift = maxdiff(logits[1:2, LEFT_PAD:], alone1)
    if cfg.get("model_type") == "gpt2":
        # absolute learned positions: shifting them changes the output
        check(dshift > 1e-3, f"{name}: arange vs mask positions indistinguishable ({dshift})")
    else:
        # rotary attention depends only on position differences, so a constant shift of every
        # real token's position leaves the outputs unchanged up to rounding
        check(dshift < 1e-5, f"{name}: rope output not shift-invariant ({dshift})")
    r2 = ids[2:3, : T - RIGHT_PAD]
    alone2 = fwd(W, r2, ones(r2.shape[1]), torch.arange(r2.shape[1])[None], torch.float32)
    dr = maxdiff(logits[2:3, : T - RIGHT_PAD], alone2)
    check(dr < 1e-5, f"{name}: right-padded row != unpadded run ({dr})")
    golden = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids_mask": posm,
        "logits": logits.contiguous(),
        "logits_mask_positions": logits_mp.contiguous(),
        "valid": mask.to(torch.uint8),
    }
    checks = {"float64_max_abs_diff": d64, "left_pad_vs_unpadded": dl, "right_pad_vs_unpadded": dr,
              "arange_vs_mask_positions_on_left_pad_row": dshift}
    return golden, checks


DECODER_OUTPUTS = {
    "logits": {"valid": "valid", "position_ids": "arange(T) for every row (plain forward, no position_ids passed)"},
    "logits_mask_positions": {"valid": "valid",
                              "position_ids": "position_ids_mask = (cumsum(attention_mask) - 1).clamp(min=0)"},
}
DECODER_NOTE = ("`logits` is a plain forward(input_ids, attention_mask) with position_ids = arange(T) for every row, "
                "exactly what transformers does when position_ids is not passed (left-padded rows therefore start "
                "their real tokens at position 3). `logits_mask_positions` passes position_ids_mask, as generate() "
                "does. Compare only where valid == 1: for a left-padded row the padded query positions see no key at "
                "all and their outputs depend on the attention backend. With rotary embeddings the two agree at valid positions up "
                "to rounding (attention depends only on position differences); with GPT-2's learned absolute "
                "positions they differ.")


# ---------------------------------------------------------------- llama family


def llama_config(model_type="llama", hidden=32, heads=4, kv_heads=4, head_dim=None, inter=64, vocab=256,
                 tie=False, rope_theta=10000.0, rope_scaling=None, max_pos=128, extra=None):
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[model_type]
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "max_position_embeddings": max_pos,
        "num_attention_heads": heads,
        "num_hidden_layers": 2,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": rope_scaling,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tie,
        "torch_dtype": "float32",
        "transformers_version": TF_VERSION,
        "use_cache": True,
        "vocab_size": vocab,
    }
    if model_type == "llama":
        cfg.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
                    "head_dim": head_dim or hidden // heads})
    if extra:
        cfg.update(extra)
    return cfg


def llama_weights(cfg, gen):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    I, V = cfg["intermediate_size"], cfg["vocab_size"]
    # a tied table doubles as the output projection: keep logits O(1) rather than O(sqrt(H))
    W = {"model.embed_tokens.weight": gen.normal((V, H), 0.35 if cfg["tie_word_embeddings"] else 1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        W[p + "input_layernorm.weight"] = gen.norm(H)
        W[p + "self_attn.q_proj.weight"] = gen.lin(nh * hd, H)
        W[p + "self_attn.k_proj.weight"] = gen.lin(nkv * hd, H)
        W[p + "self_attn.v_proj.weight"] = gen.lin(nkv * hd, H)
        W[p + "self_attn.o_proj.weight"] = gen.lin(H, nh * hd)
        if cfg["model_type"] == "qwen2":
            W[p + "self_attn.q_proj.bias"] = gen.bias(nh * hd, 0.5)
            W[p + "self_attn.k_proj.bias"] = gen.bias(nkv * hd, 0.5)
            W[p + "self_attn.v_proj.bias"] = gen.bias(nkv * hd, 0.5)
        W[p + "post_attention_layernorm.weight"] = gen.norm(H)
        W[p + "mlp.gate_proj.weight"] = gen.lin(I, H)
        W[p + "mlp.up_proj.weight"] = gen.lin(I, H)
        W[p + "mlp.down_proj.weight"] = gen.lin(H, I)
    W["model.norm.weight"] = gen.norm(H)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = gen.lin(V, H)
    return W


def make_llama_case(name, cfg, description, extra_checks=None, generate=False, atol=ATOL):
    gen = Gen(name)
    weights = llama_weights(cfg, gen)
    W = R.Weights(weights)

    def fwd(Wx, ids, mask, pos, dtype, **kw):
        return R.llama_like_forward(cfg, Wx, ids, mask, pos, dtype, **kw)

    ids, mask = decoder_inputs(gen, cfg["vocab_size"], cfg["eos_token_id"])
    golden, checks = decoder_goldens(name, cfg, W, fwd, ids, mask)
    assert_all_used(name, W)
    # KV-cache, token-at-a-time decoding must reproduce the full causal forward
    inc = R.llama_like_incremental(cfg, W, ids[0:1])
    d = maxdiff(inc, golden["logits"][0])
    check(d < 1e-5, f"{name}: incremental decoding differs from full forward ({d})")
    checks["incremental_vs_full"] = d
    if cfg["num_key_value_heads"] != cfg["num_attention_heads"]:
        arange = torch.arange(T_DEC)[None].expand(B_DEC, T_DEC)
        loop = fwd(W, ids, mask, arange, torch.float32, gqa="loop")
        d = maxdiff(loop, golden["logits"], mask)
        check(d < 1e-6, f"{name}: repeat_kv path != per-head explicit kv index ({d})")
        checks["gqa_expand_vs_loop"] = d
    if "lm_head.weight" not in weights:
        check(cfg["tie_word_embeddings"], f"{name}: lm_head missing but not tied")
    if extra_checks:
        checks.update(extra_checks(W, golden, fwd))
    meta = {
        "architecture": cfg["architectures"][0],
        "model_type": cfg["model_type"],
        "description": description,
        "atol": atol,
        "rtol": 0.0,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": DECODER_OUTPUTS,
        "position_ids": DECODER_NOTE,
        "weights": {"key_prefix": "", "tied_word_embeddings": cfg["tie_word_embeddings"],
                    "lm_head_in_file": "lm_head.weight" in weights, "ignore_keys": []},
        "self_checks": checks,
    }
    if generate:
        g_ids, g_out, margins = greedy_generate(cfg, W, gen, prompt_len=5, new_tokens=10)
        golden["generate_input_ids"] = g_ids
        golden["generate_output_ids"] = g_out
        meta["generate"] = {
            "input": "generate_input_ids",
            "output": "generate_output_ids",
            "max_new_tokens": 10,
            "do_sample": False,
            "note": ("greedy argmax over the last position's logits; output holds prompt + 10 new tokens (as "
                     "generate() returns); no EOS stopping (eos_token_id never produced / ignored); computed by a "
                     "full forward over the whole sequence at every step"),
            "min_top1_top2_margin": margins,
        }
    write_case(name, cfg, weights, golden, meta)
    on_disk, _ = read_safetensors(os.path.join(OUT, name, "model.safetensors"))
    check(("lm_head.weight" in on_disk) == (not cfg["tie_word_embeddings"]), f"{name}: lm_head presence wrong")
    return weights, golden


def greedy_generate(cfg, W, gen, prompt_len, new_tokens):
    seq = gen.ints(3, cfg["vocab_size"], (1, prompt_len))
    prompt = seq.clone()
    margin = float("inf")
    for _ in range(new_tokens):
        T = seq.shape[1]
        lg = R.llama_like_forward(cfg, W, seq, torch.ones(1, T, dtype=torch.int64), torch.arange(T)[None])[0, -1]
        top = torch.topk(lg, 2).values
        margin = min(margin, float(top[0] - top[1]))
        nxt = int(torch.argmax(lg))
        check(nxt != cfg["eos_token_id"], "greedy run produced EOS; pick another prompt")
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    check(margin > 1e-2, f"greedy margin too small ({margin}); argmax could flip on rounding")
    # the KV-cache path picks the same tokens
    inc = R.llama_like_incremental(cfg, W, seq)
    check(torch.equal(inc[prompt_len - 1 : -1].argmax(-1), seq[0, prompt_len:]), "incremental greedy differs")
    return prompt, seq, margin


def window_checks(cfg):
    """The window matters at T_DEC, and its boundary is where sliding_allowed puts it: a window of
    T_DEC keys equals full attention at every position, a window of T_DEC - 1 does not."""
    def run(W, golden, fwd):
        ids, mask = golden["input_ids"], golden["attention_mask"]
        arange = torch.arange(T_DEC)[None].expand(B_DEC, T_DEC)
        full = fwd(W, ids, mask, arange, torch.float32, ignore_window=True)
        d_full = maxdiff(full, golden["logits"], mask)
        check(d_full > 1e-2, f"sliding window does not change logits ({d_full})")
        windows = R.layer_windows(cfg)
        widest = dict(cfg, sliding_window=T_DEC)
        d_t = maxdiff(R.llama_like_forward(widest, W, ids, mask, arange), full, mask)
        check(d_t < 1e-6, f"a window of T keys differs from full attention ({d_t})")
        narrower = dict(cfg, sliding_window=T_DEC - 1)
        last = torch.zeros_like(mask)
        last[0, T_DEC - 1] = 1  # only the last query of the unpadded row loses a key (key 0)
        d_t1 = maxdiff(R.llama_like_forward(narrower, W, ids, mask, arange), full, last)
        check(d_t1 > 1e-3, f"a window of T - 1 keys does not change the last position ({d_t1})")
        d_t1_rest = maxdiff(R.llama_like_forward(narrower, W, ids, mask, arange)[0, : T_DEC - 1], full[0, : T_DEC - 1])
        check(d_t1_rest < 1e-6, f"a window of T - 1 keys changes earlier positions ({d_t1_rest})")
        return {"layer_windows": windows, "window_vs_full_attention": d_full, "window_T_vs_full": d_t,
                "window_T_minus_1_last_position_change": d_t1, "window_T_minus_1_earlier_positions": d_t1_rest}
    return run


def llama3_checks(cfg):
    def run(W, golden, fwd):
        scaled, _ = R.rope_inv_freq(cfg)
        plain, _ = R.rope_inv_freq(cfg, ignore_scaling=True)
        ratio = plain / scaled
        same = int((ratio == 1).sum())
        full = int(((ratio - cfg["rope_scaling"]["factor"]).abs() < 1e-5).sum())
        mid = len(ratio) - same - full
        check(same > 0 and full > 0 and mid > 0,
              f"llama3 rope must leave some, scale some fully and blend some frequencies: {ratio.tolist()}")
        ids, mask = golden["input_ids"], golden["attention_mask"]
        arange = torch.arange(T_DEC)[None].expand(B_DEC, T_DEC)
        d = maxdiff(fwd(W, ids, mask, arange, torch.float32, ignore_rope_scaling=True), golden["logits"], mask)
        check(d > 1e-2, f"llama3 scaling does not change logits enough ({d})")
        return {"rope_inv_freq_default": plain.tolist(), "rope_inv_freq_llama3": scaled.tolist(),
                "rope_freqs_unchanged_fully_scaled_blended": [same, full, mid],
                "logits_change_vs_unscaled_rope": d}
    return run


def linear_rope_checks(W, golden, fwd):
    ids, mask = golden["input_ids"], golden["attention_mask"]
    arange = torch.arange(T_DEC)[None].expand(B_DEC, T_DEC)
    d = maxdiff(fwd(W, ids, mask, arange, torch.float32, ignore_rope_scaling=True), golden["logits"], mask)
    check(d > 1e-2, f"linear rope scaling does not change logits ({d})")
    return {"logits_change_vs_unscaled_rope": d}


# ---------------------------------------------------------------- GPT-2


def gpt2_config():
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 255,
        "embd_pdrop": 0.1,
        "eos_token_id": 255,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-5,
        "model_type": "gpt2",
        "n_ctx": 64,
        "n_embd": 32,
        "n_head": 4,
        "n_inner": None,
        "n_layer": 2,
        "n_positions": 64,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": TF_VERSION,
        "use_cache": True,
        "vocab_size": 256,
    }


def gpt2_weights(cfg, gen):
    H, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    I = cfg["n_inner"] or 4 * H
    W = {"wte.weight": gen.normal((V, H), 0.35), "wpe.weight": gen.normal((P, H), 0.35)}
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        W[p + "ln_1.weight"] = gen.norm(H)
        W[p + "ln_1.bias"] = gen.bias(H)
        # Conv1D stores [in, out]: the transpose of nn.Linear
        W[p + "attn.c_attn.weight"] = gen.lin(3 * H, H).t().contiguous()
        W[p + "attn.c_attn.bias"] = gen.bias(3 * H)
        W[p + "attn.c_proj.weight"] = gen.lin(H, H).t().contiguous()
        W[p + "attn.c_proj.bias"] = gen.bias(H)
        W[p + "ln_2.weight"] = gen.norm(H)
        W[p + "ln_2.bias"] = gen.bias(H)
        W[p + "mlp.c_fc.weight"] = gen.lin(I, H).t().contiguous()
        W[p + "mlp.c_fc.bias"] = gen.bias(I)
        W[p + "mlp.c_proj.weight"] = gen.lin(H, I).t().contiguous()
        W[p + "mlp.c_proj.bias"] = gen.bias(H)
    W["ln_f.weight"] = gen.norm(H)
    W["ln_f.bias"] = gen.bias(H)
    return W


def make_gpt2_cases():
    name = "gpt2"
    cfg = gpt2_config()
    gen = Gen(name)
    core = gpt2_weights(cfg, gen)
    P = cfg["n_positions"]
    # Layout 1 (openai-community/gpt2 on the hub): bare GPT2Model names, no lm_head, and the
    # legacy causal-mask buffer h.{i}.attn.bias [1, 1, n_positions, n_positions] saved as data.
    hub = dict(core)
    tril = torch.tril(torch.ones(P, P, dtype=torch.float32))[None, None]
    for i in range(cfg["n_layer"]):
        hub[f"h.{i}.attn.bias"] = tril.clone()
    hub_ignore = [f"h.{i}.attn.bias" for i in range(cfg["n_layer"])]
    # Layout 2 (GPT2LMHeadModel.save_pretrained with transformers >= 4.3x): 'transformer.' prefix,
    # tied lm_head.weight dropped, no mask buffers.
    saved = {"transformer." + k: v for k, v in core.items()}

    ids, mask = decoder_inputs(gen, cfg["vocab_size"], cfg["eos_token_id"])
    W = R.Weights(hub)

    def fwd(Wx, i, m, pos, dtype):
        return R.gpt2_forward(cfg, Wx, i, m, pos, dtype)

    golden, checks = decoder_goldens(name, cfg, W, fwd, ids, mask)
    assert_all_used(name, W, hub_ignore)
    # the c_attn weight really is [in, out]
    check(list(hub["h.0.attn.c_attn.weight"].shape) == [cfg["n_embd"], 3 * cfg["n_embd"]], "Conv1D layout")
    # the prefixed layout computes the same thing
    W2 = R.Weights(saved, prefix="transformer.")
    d = maxdiff(fwd(W2, ids, mask, torch.arange(T_DEC)[None].expand(B_DEC, T_DEC), torch.float32), golden["logits"])
    check(d == 0.0, "prefixed layout differs")
    assert_all_used("gpt2_prefixed", W2)
    check(not any(k.endswith("lm_head.weight") for k in list(hub) + list(saved)), "tied lm_head present")
    gpt2_note = DECODER_NOTE + (" GPT-2's plain forward likewise uses arange positions into wpe; only generate() "
                                "derives them from the attention mask.")
    for case, weights, prefix, ignore, desc in (
        (name, hub, "", hub_ignore,
         "GPT2LMHeadModel in the openai-community/gpt2 hub layout: GPT2Model names without 'transformer.', "
         "Conv1D weights [in, out], lm_head tied to wte (no lm_head.weight), plus the legacy h.{i}.attn.bias causal-mask "
         "buffers (F32 [1,1,n_positions,n_positions]) that a loader must ignore."),
        ("gpt2_prefixed", saved, "transformer.", [],
         "Same weights and goldens as gpt2, in the layout GPT2LMHeadModel.save_pretrained writes today: "
         "'transformer.' prefix, no lm_head.weight (tied), no mask buffers."),
    ):
        meta = {
            "architecture": "GPT2LMHeadModel",
            "model_type": "gpt2",
            "description": desc,
            "atol": ATOL,
            "rtol": 0.0,
            "inputs": ["input_ids", "attention_mask"],
            "outputs": DECODER_OUTPUTS,
            "position_ids": gpt2_note,
            "weights": {"key_prefix": prefix, "tied_word_embeddings": True, "lm_head_in_file": False,
                        "ignore_keys": ignore, "conv1d_layout": "[in, out]"},
            "self_checks": checks,
        }
        write_case(case, cfg, weights, dict(golden), meta)


# ---------------------------------------------------------------- BERT / RoBERTa

B_ENC, T_ENC = 3, 10
ENC_LEFT, ENC_RIGHT = 2, 3


def labels(n):
    return {str(i): f"LABEL_{i}" for i in range(n)}, {f"LABEL_{i}": i for i in range(n)}


def bert_config(arch, num_labels=None):
    cfg = {
        "architectures": [arch],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 64,
        "model_type": "bert",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": TF_VERSION,
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": 128,
    }
    if num_labels:
        cfg["id2label"], cfg["label2id"] = labels(num_labels)
    return cfg


def roberta_config(num_labels):
    cfg = bert_config("RobertaForSequenceClassification", num_labels)
    cfg.update({"model_type": "roberta", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
                "layer_norm_eps": 1e-5, "max_position_embeddings": 64 + 2, "type_vocab_size": 1})
    return cfg


def encoder_weights(cfg, gen, prefix, pooler):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    W = {
        prefix + "embeddings.word_embeddings.weight": gen.normal((V, H)),
        prefix + "embeddings.position_embeddings.weight": gen.normal((cfg["max_position_embeddings"], H), 0.5),
        prefix + "embeddings.token_type_embeddings.weight": gen.normal((cfg["type_vocab_size"], H), 0.5),
        prefix + "embeddings.LayerNorm.weight": gen.norm(H),
        prefix + "embeddings.LayerNorm.bias": gen.bias(H),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"{prefix}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            W[p + f"attention.self.{n}.weight"] = gen.lin(H, H)
            W[p + f"attention.self.{n}.bias"] = gen.bias(H)
        W[p + "attention.output.dense.weight"] = gen.lin(H, H)
        W[p + "attention.output.dense.bias"] = gen.bias(H)
        W[p + "attention.output.LayerNorm.weight"] = gen.norm(H)
        W[p + "attention.output.LayerNorm.bias"] = gen.bias(H)
        W[p + "intermediate.dense.weight"] = gen.lin(I, H)
        W[p + "intermediate.dense.bias"] = gen.bias(I)
        W[p + "output.dense.weight"] = gen.lin(H, I)
        W[p + "output.dense.bias"] = gen.bias(H)
        W[p + "output.LayerNorm.weight"] = gen.norm(H)
        W[p + "output.LayerNorm.bias"] = gen.bias(H)
    if pooler:
        W[prefix + "pooler.dense.weight"] = gen.lin(H, H)
        W[prefix + "pooler.dense.bias"] = gen.bias(H)
    return W


def encoder_inputs(gen, vocab, cls_id, sep_id, pad_id, two_segments):
    """Rows: full; left-padded by ENC_LEFT; right-padded by ENC_RIGHT. [CLS] a.. [SEP] (b.. [SEP])."""
    ids = torch.full((B_ENC, T_ENC), pad_id, dtype=torch.int64)
    tt = torch.zeros(B_ENC, T_ENC, dtype=torch.int64)
    mask = torch.zeros(B_ENC, T_ENC, dtype=torch.int64)
    for r, (start, n) in enumerate(((0, T_ENC), (ENC_LEFT, T_ENC - ENC_LEFT), (0, T_ENC - ENC_RIGHT))):
        body = gen.ints(5, vocab, (n,))
        body[0] = cls_id
        body[-1] = sep_id
        tt_row = torch.zeros(n, dtype=torch.int64)
        if two_segments:
            cut = n // 2
            body[cut - 1] = sep_id
            tt_row[cut:] = 1
        ids[r, start : start + n] = body
        tt[r, start : start + n] = tt_row
        mask[r, start : start + n] = 1
    return ids, tt, mask


ENC_NOTE = ("BERT: position_ids = arange(T) for every row, also for the left-padded row (transformers does not shift "
            "them). Pooled outputs (pooler_output, sequence-classification logits) read token 0 even when it is a pad "
            "token, as transformers does; every row of them is compared. Token-level outputs are compared where "
            "valid == 1 (padded positions are also deterministic for encoders, but not meaningful).")


def encoder_nn_check(cfg, W, ids, tt, mask, pos, seq):
    x = (W("embeddings.word_embeddings.weight")[ids] + W("embeddings.token_type_embeddings.weight")[tt]
         + W("embeddings.position_embeddings.weight")[pos])
    x = torch.nn.functional.layer_norm(x, x.shape[-1:], W("embeddings.LayerNorm.weight"),
                                       W("embeddings.LayerNorm.bias"), cfg["layer_norm_eps"])
    ref = nn_crosscheck.bert_layers(cfg, W, x, mask)
    d = maxdiff(ref, seq, mask)
    check(d < 1e-5, f"encoder differs from torch.nn.TransformerEncoderLayer ({d})")
    return d


def make_bert_cases():
    specs = [
        ("bert_base_model", "BertModel", None, "", True),
        ("bert_seq_cls", "BertForSequenceClassification", 3, "bert.", True),
        ("bert_token_cls", "BertForTokenClassification", 5, "bert.", False),
    ]
    for name, arch, nl, prefix, pooler in specs:
        cfg = bert_config(arch, nl)
        gen = Gen(name)
        weights = encoder_weights(cfg, gen, prefix, pooler)
        H = cfg["hidden_size"]
        if nl:
            weights["classifier.weight"] = gen.lin(nl, H)
            weights["classifier.bias"] = gen.bias(nl)
        ids, tt, mask = encoder_inputs(gen, cfg["vocab_size"], cls_id=2, sep_id=3, pad_id=0, two_segments=True)
        ignore = []
        if name == "bert_seq_cls":
            # checkpoints saved before transformers 4.31 carry this (then persistent) buffer
            ignore = [prefix + "embeddings.position_ids"]
            weights[ignore[0]] = torch.arange(cfg["max_position_embeddings"], dtype=torch.int64)[None]
        W = R.Weights(weights, prefix)
        Wroot = R.Weights(weights)

        def run(i, t, m, dtype):
            pos = torch.arange(i.shape[1])[None].expand_as(i)
            seq = R.bert_encoder(cfg, W, i, t, m, pos, dtype)
            out = {}
            if name == "bert_base_model":
                out["last_hidden_state"] = seq
                out["pooler_output"] = R.bert_pooler(W, seq, dtype)
            elif name == "bert_seq_cls":
                pooled = R.bert_pooler(W, seq, dtype)
                out["logits"] = R.linear(pooled, Wroot("classifier.weight").to(dtype), Wroot("classifier.bias").to(dtype))
            else:
                out["logits"] = R.linear(seq, Wroot("classifier.weight").to(dtype), Wroot("classifier.bias").to(dtype))
            return out, seq

        out, seq = run(ids, tt, mask, torch.float32)
        out64, _ = run(ids, tt, mask, torch.float64)
        dnn = encoder_nn_check(cfg, W, ids, tt, mask, torch.arange(T_ENC)[None].expand_as(ids), seq)
        token_level = {"last_hidden_state", } if name == "bert_base_model" else ({"logits"} if name == "bert_token_cls" else set())
        d64 = max(maxdiff(out[k], out64[k], mask if k in token_level else None) for k in out)
        check(d64 < F64_TOL, f"{name}: float32 vs float64 {d64}")
        used = W.used | Wroot.used
        left = sorted(set(weights) - used - set(ignore))
        check(not left, f"{name}: unused weights {left}")
        # right-padded row at its real tokens == the row run alone
        n2 = T_ENC - ENC_RIGHT
        _, seq_alone = run(ids[2:3, :n2], tt[2:3, :n2], torch.ones(1, n2, dtype=torch.int64), torch.float32)
        dr = maxdiff(seq[2:3, :n2], seq_alone)
        check(dr < 1e-5, f"{name}: right padding changes real tokens ({dr})")
        # token types matter
        out_tt0, _ = run(ids, torch.zeros_like(tt), mask, torch.float32)
        dtt = max(maxdiff(out[k], out_tt0[k]) for k in out)
        check(dtt > 1e-2, f"{name}: token_type_ids have no effect ({dtt})")
        golden = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "valid": mask.to(torch.uint8)}
        golden.update({k: v.contiguous() for k, v in out.items()})
        outputs = {k: {"valid": "valid" if k in token_level else None} for k in out}
        meta = {
            "architecture": arch,
            "model_type": "bert",
            "description": f"{arch} ({'no pooler' if not pooler else 'with pooler'}), weights prefix '{prefix}'"
                           + (", plus a legacy I64 embeddings.position_ids buffer to ignore." if ignore else "."),
            "atol": ATOL,
            "rtol": 0.0,
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "outputs": outputs,
            "position_ids": ENC_NOTE,
            "weights": {"key_prefix": prefix, "ignore_keys": ignore},
            "self_checks": {"float64_max_abs_diff": d64, "right_pad_vs_unpadded": dr, "vs_torch_nn_layers": dnn,
                            "token_type_effect": dtt},
        }
        if nl:
            meta["num_labels"] = nl
        write_case(name, cfg, weights, golden, meta)


def make_roberta_case():
    name = "roberta_seq_cls"
    nl = 3
    cfg = roberta_config(nl)
    gen = Gen(name)
    weights = encoder_weights(cfg, gen, "roberta.", pooler=False)
    H = cfg["hidden_size"]
    weights["classifier.dense.weight"] = gen.lin(H, H)
    weights["classifier.dense.bias"] = gen.bias(H)
    weights["classifier.out_proj.weight"] = gen.lin(nl, H)
    weights["classifier.out_proj.bias"] = gen.bias(nl)
    pad = cfg["pad_token_id"]
    ids, _, mask = encoder_inputs(gen, cfg["vocab_size"], cls_id=cfg["bos_token_id"], sep_id=cfg["eos_token_id"],
                                  pad_id=pad, two_segments=False)
    W = R.Weights(weights, "roberta.")
    Wroot = R.Weights(weights)

    def run(i, m, dtype):
        pos = R.roberta_position_ids(i, pad)
        seq = R.bert_encoder(cfg, W, i, torch.zeros_like(i), m, pos, dtype)
        x = torch.tanh(R.linear(seq[:, 0], Wroot("classifier.dense.weight").to(dtype),
                                Wroot("classifier.dense.bias").to(dtype)))
        return R.linear(x, Wroot("classifier.out_proj.weight").to(dtype),
                        Wroot("classifier.out_proj.bias").to(dtype)), seq

    logits, seq = run(ids, mask, torch.float32)
    d64 = maxdiff(logits, run(ids, mask, torch.float64)[0])
    dnn = encoder_nn_check(cfg, W, ids, torch.zeros_like(ids), mask, R.roberta_position_ids(ids, pad), seq)
    check(d64 < F64_TOL, f"{name}: float32 vs float64 {d64}")
    left = sorted(set(weights) - (W.used | Wroot.used))
    check(not left, f"{name}: unused weights {left}")
    pos = R.roberta_position_ids(ids, pad)
    check(int(pos[1, ENC_LEFT]) == pad + 1 and int(pos[1, 0]) == pad, "roberta positions")
    # RoBERTa's positions skip pad tokens, so even the LEFT-padded row's real tokens equal an unpadded run
    n1 = T_ENC - ENC_LEFT
    _, alone = run(ids[1:2, ENC_LEFT:], torch.ones(1, n1, dtype=torch.int64), torch.float32)
    dl = maxdiff(seq[1:2, ENC_LEFT:], alone)
    check(dl < 1e-5, f"{name}: left-padded row != unpadded run ({dl})")
    golden = {"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous(),
              "position_ids_expected": pos}
    meta = {
        "architecture": "RobertaForSequenceClassification",
        "model_type": "roberta",
        "description": ("RobertaForSequenceClassification: no pooler; head = dense + tanh + out_proj on token 0; "
                        "position ids derived from input_ids (padding_idx = pad_token_id = 1)."),
        "atol": ATOL,
        "rtol": 0.0,
        "num_labels": nl,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": {"logits": {"valid": None}},
        "position_ids": ("position_ids = cumsum(input_ids != 1) * (input_ids != 1) + 1, computed from input_ids, not "
                         "from attention_mask: pads sit at index 1 and real tokens start at 2 even in the left-padded "
                         "row (stored as position_ids_expected, for information; not a model input). token_type_ids "
                         "are all 0 (type_vocab_size 1). The left-padded row's logits read token 0, which is a pad "
                         "token there."),
        "weights": {"key_prefix": "roberta.", "ignore_keys": []},
        "self_checks": {"float64_max_abs_diff": d64, "left_pad_vs_unpadded_hidden": dl, "vs_torch_nn_layers": dnn},
    }
    write_case(name, cfg, weights, golden, meta)


MLM_NAMES = {
    "roberta": {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias",
                "embeddings": "roberta.embeddings.word_embeddings.weight"},
    "bert": {"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
             "bias": "cls.predictions.bias", "embeddings": "bert.embeddings.word_embeddings.weight"},
}


def make_mlm_case(model_type):
    """RobertaForMaskedLM / BertForMaskedLM, saved as transformers saves them: the decoder's weight and bias
    are tied (to the word embeddings and to the head's bias) and so absent from the checkpoint."""
    name = f"{model_type}_mlm"
    arch = "RobertaForMaskedLM" if model_type == "roberta" else "BertForMaskedLM"
    if model_type == "roberta":
        cfg = roberta_config(None)
        cfg["architectures"] = [arch]
    else:
        cfg = bert_config(arch)
    cfg["tie_word_embeddings"] = True
    gen = Gen(name)
    prefix = model_type + "."
    weights = encoder_weights(cfg, gen, prefix, pooler=False)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    n = MLM_NAMES[model_type]
    weights[n["dense"] + ".weight"] = gen.lin(H, H)
    weights[n["dense"] + ".bias"] = gen.bias(H)
    weights[n["norm"] + ".weight"] = gen.norm(H)
    weights[n["norm"] + ".bias"] = gen.bias(H)
    weights[n["bias"]] = gen.bias(V)
    # Smaller word embeddings keep the tied decoder's logits O(1), so float32 rounding stays well below atol 1e-5.
    weights[n["embeddings"]] = gen.normal((V, H), 0.25)
    pad = cfg["pad_token_id"]
    cls_id, sep_id = (0, 2) if model_type == "roberta" else (1, 2)
    ids, _, mask = encoder_inputs(gen, V, cls_id=cls_id, sep_id=sep_id, pad_id=pad, two_segments=False)
    W = R.Weights(weights, prefix)
    Wroot = R.Weights(weights)
    eps = cfg["layer_norm_eps"]

    def run(i, m, dtype):
        pos = R.roberta_position_ids(i, pad) if model_type == "roberta" else \
            torch.arange(i.shape[1]).unsqueeze(0).expand_as(i)
        seq = R.bert_encoder(cfg, W, i, torch.zeros_like(i), m, pos, dtype)
        return R.mlm_head(Wroot, seq, n, eps, dtype)

    logits = run(ids, mask, torch.float32)
    d64 = maxdiff(logits, run(ids, mask, torch.float64))
    check(d64 < F64_TOL, f"{name}: float32 vs float64 {d64}")
    left = sorted(set(weights) - (W.used | Wroot.used))
    check(not left, f"{name}: unused weights {left}")
    golden = {"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous(), "valid": mask}
    meta = {
        "architecture": arch,
        "model_type": model_type,
        "description": (f"{arch}: encoder + masked-LM head (dense, exact GELU, LayerNorm, decoder = word embeddings^T "
                        "+ head bias). The checkpoint omits the tied decoder weight and bias, as transformers saves it."),
        "atol": 1e-5,
        "rtol": 0.0,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": {"logits": {"valid": "valid"}},
        "weights": {"key_prefix": prefix, "ignore_keys": []},
        "self_checks": {"float64_max_abs_diff": d64},
    }
    write_case(name, cfg, weights, golden, meta)


# ---------------------------------------------------------------- ViT


def make_vit_case():
    name = "vit_cls"
    nl = 4
    cfg = {
        "architectures": ["ViTForImageClassification"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 8,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 32,
        "image_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "model_type": "vit",
        "num_attention_heads": 4,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 8,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": TF_VERSION,
    }
    cfg["id2label"], cfg["label2id"] = labels(nl)
    gen = Gen(name)
    H, I, P, C = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"], cfg["num_channels"]
    n_patches = (cfg["image_size"] // P) ** 2
    weights = {
        "vit.embeddings.cls_token": gen.normal((1, 1, H)),
        "vit.embeddings.position_embeddings": gen.normal((1, n_patches + 1, H), 0.5),
        "vit.embeddings.patch_embeddings.projection.weight": gen.normal((H, C, P, P), 1.0 / math.sqrt(C * P * P)),
        "vit.embeddings.patch_embeddings.projection.bias": gen.bias(H),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"vit.encoder.layer.{i}."
        weights[p + "layernorm_before.weight"] = gen.norm(H)
        weights[p + "layernorm_before.bias"] = gen.bias(H)
        for n in ("query", "key", "value"):
            weights[p + f"attention.attention.{n}.weight"] = gen.lin(H, H)
            weights[p + f"attention.attention.{n}.bias"] = gen.bias(H)
        weights[p + "attention.output.dense.weight"] = gen.lin(H, H)
        weights[p + "attention.output.dense.bias"] = gen.bias(H)
        weights[p + "layernorm_after.weight"] = gen.norm(H)
        weights[p + "layernorm_after.bias"] = gen.bias(H)
        weights[p + "intermediate.dense.weight"] = gen.lin(I, H)
        weights[p + "intermediate.dense.bias"] = gen.bias(I)
        weights[p + "output.dense.weight"] = gen.lin(H, I)
        weights[p + "output.dense.bias"] = gen.bias(H)
    weights["vit.layernorm.weight"] = gen.norm(H)
    weights["vit.layernorm.bias"] = gen.bias(H)
    weights["classifier.weight"] = gen.lin(nl, H)
    weights["classifier.bias"] = gen.bias(nl)
    pixel_values = gen.normal((2, C, cfg["image_size"], cfg["image_size"]))
    W = R.Weights(weights)
    logits = R.vit_forward(cfg, W, pixel_values)
    d64 = maxdiff(logits, R.vit_forward(cfg, W, pixel_values, torch.float64))
    check(d64 < F64_TOL, f"{name}: float32 vs float64 {d64}")
    assert_all_used(name, W)
    # the patch conv equals an explicit unfold + matmul with (c, ph, pw) flattening, raster patch order
    wconv = weights["vit.embeddings.patch_embeddings.projection.weight"]
    x = pixel_values
    Bn = x.shape[0]
    g = cfg["image_size"] // P
    patches = x.reshape(Bn, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(Bn, g * g, C * P * P)
    emb = patches @ wconv.reshape(H, -1).t() + weights["vit.embeddings.patch_embeddings.projection.bias"]
    conv = torch.nn.functional.conv2d(x, wconv, weights["vit.embeddings.patch_embeddings.projection.bias"], stride=P)
    dp = maxdiff(emb, conv.flatten(2).transpose(1, 2))
    check(dp < 1e-5, f"{name}: patch embedding as matmul differs ({dp})")
    conv_emb = conv.flatten(2).transpose(1, 2)
    xv = torch.cat([weights["vit.embeddings.cls_token"].expand(Bn, -1, -1), conv_emb], 1)
    xv = nn_crosscheck.vit_layers(cfg, W, xv + weights["vit.embeddings.position_embeddings"])
    xv = torch.nn.functional.layer_norm(xv, (H,), weights["vit.layernorm.weight"], weights["vit.layernorm.bias"],
                                        cfg["layer_norm_eps"])
    nn_logits = xv[:, 0] @ weights["classifier.weight"].t() + weights["classifier.bias"]
    dnn = maxdiff(nn_logits, logits)
    check(dnn < 1e-5, f"{name}: differs from torch.nn.TransformerEncoderLayer ({dnn})")
    golden = {"pixel_values": pixel_values, "logits": logits.contiguous()}
    meta = {
        "architecture": "ViTForImageClassification",
        "model_type": "vit",
        "description": ("ViTForImageClassification, 32x32x3 image, patch 8 (16 patches + CLS), pre-norm layers, "
                        "final vit.layernorm, classifier on the CLS token; no pooler (add_pooling_layer=False)."),
        "atol": ATOL,
        "rtol": 0.0,
        "num_labels": nl,
        "inputs": ["pixel_values"],
        "outputs": {"logits": {"valid": None}},
        "position_ids": "none: learned position_embeddings [1, 17, H] added after prepending CLS",
        "weights": {"key_prefix": "vit.", "ignore_keys": []},
        "self_checks": {"float64_max_abs_diff": d64, "patch_matmul_vs_conv": dp, "vs_torch_nn_layers": dnn},
    }
    write_case(name, cfg, weights, golden, meta)


# ---------------------------------------------------------------- main


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    make_llama_case("llama_basic", llama_config(),
                    "LlamaForCausalLM: MHA (4 heads of 8), untied lm_head, silu MLP, rms_norm_eps 1e-6, rope_theta 1e4.")
    make_llama_case("llama_gqa_tied",
                    llama_config(hidden=32, heads=4, kv_heads=2, head_dim=16, inter=64, tie=True),
                    "LlamaForCausalLM: GQA (4 query heads, 2 kv heads), explicit head_dim 16 != hidden/heads 8 "
                    "(q_proj [64,32], k/v_proj [32,32], o_proj [32,64]); tie_word_embeddings so the file has no "
                    "lm_head.weight. Also a greedy-generation golden.", generate=True)
    cfg3 = llama_config(head_dim=16, heads=2, kv_heads=2, rope_scaling={
        "factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 32, "rope_type": "llama3"})
    make_llama_case("llama_rope_llama3", cfg3,
                    "LlamaForCausalLM with Llama-3.1 rope scaling; original_max_position_embeddings 32 so that at "
                    "head_dim 16 one frequency is untouched, one is blended and six are divided by factor.",
                    extra_checks=llama3_checks(cfg3))
    make_llama_case("llama_rope_linear", llama_config(rope_scaling={"factor": 2.0, "rope_type": "linear"}),
                    "LlamaForCausalLM with linear rope scaling (inv_freq / 2).", extra_checks=linear_rope_checks)
    make_llama_case("mistral", llama_config("mistral", kv_heads=2, rope_theta=1000000.0, max_pos=512,
                                            extra={"sliding_window": None, "head_dim": None}),
                    "MistralForCausalLM: GQA 4/2, rope_theta 1e6, sliding_window null (full causal attention), "
                    "head_dim null (falls back to hidden/heads).")
    cfg_mw = llama_config("mistral", kv_heads=2, rope_theta=1000000.0, max_pos=512,
                          extra={"sliding_window": 4, "head_dim": None})
    make_llama_case("mistral_sliding_window", cfg_mw,
                    "MistralForCausalLM with sliding_window 4 on 10-token inputs: query i sees keys i-3..i "
                    "(sequence indices, padding included). Also a greedy-generation golden running past the window.",
                    extra_checks=window_checks(cfg_mw), generate=True, atol=1e-5)
    cfg_qw = llama_config("qwen2", kv_heads=2, tie=True, rope_theta=1000000.0, max_pos=512, extra={
        "max_window_layers": 1, "sliding_window": 3, "use_sliding_window": True, "bos_token_id": 254,
        "eos_token_id": 255})
    make_llama_case("qwen2_sliding_window", cfg_qw,
                    "Qwen2ForCausalLM with use_sliding_window true, sliding_window 3, max_window_layers 1: layer 0 "
                    "full attention, layer 1 windowed (no layer_types field, so the default rule applies).",
                    extra_checks=window_checks(cfg_qw), atol=1e-5)
    make_llama_case("qwen2", llama_config("qwen2", kv_heads=2, tie=True, rope_theta=1000000.0, max_pos=512, extra={
        "max_window_layers": 2, "sliding_window": 512, "use_sliding_window": False, "bos_token_id": 254,
        "eos_token_id": 255}),
                    "Qwen2ForCausalLM like Qwen2.5-0.5B: biases on q/k/v (not o), GQA 4/2, tied embeddings, "
                    "rope_theta 1e6, use_sliding_window false (sliding_window is set but unused).")
    make_gpt2_cases()
    make_bert_cases()
    make_roberta_case()
    make_mlm_case("roberta")
    make_mlm_case("bert")
    make_vit_case()
    total = 0
    for name, size in REPORT:
        total += size
        print(f"{name:20s} {size:8d} bytes")
    print(f"{'total':20s} {total:8d} bytes")
    check(total < 3 * 1024 * 1024, "total golden size over 3 MB")


if __name__ == "__main__":
    main()
