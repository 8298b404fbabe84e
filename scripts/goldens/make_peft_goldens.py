#!/usr/bin/python3
"""Generate HF PEFT adapter folders for the tiny golden checkpoints, with expected logits.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_peft_goldens.py
Reads test/golden/models/<base>/ (written by make_goldens.py) and writes
test/golden/peft/<case>/{adapter_config.json, adapter_model.safetensors, golden.safetensors, meta.json}.

Nothing here comes from running transformers or PEFT (neither is installed): the forward passes
(ref_models.py) and the adapter math below are our own PyTorch re-implementations, written from their
sources. The adapter folders are laid out as HF PEFT's `PeftModel.save_pretrained` writes them (adapter name
"default", safetensors with metadata {"format": "pt"}, keys "base_model.model.<module>.<param>" with the
adapter name stripped, prompt-learning keys bare). The adapter math follows PEFT's sources (semantics only,
nothing copied): tuners/lora/{config,layer,dora}.py, tuners/ia3/{config,layer}.py,
tuners/prompt_tuning/*, tuners/prefix_tuning/*, peft_model.py (PeftModelForCausalLM.forward, get_prompt),
utils/other.py (_prepare_prompt_learning_config, get_pattern_key, ModulesToSaveWrapper),
utils/save_and_load.py (get_peft_model_state_dict). Output is deterministic.
"""
import json
import math
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_models as R  # noqa: E402
from common import SeededGen, check, maxdiff  # noqa: E402
from st_io import read_safetensors, write_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODELS = os.path.join(ROOT, "test", "golden", "models")
OUT = os.path.join(ROOT, "test", "golden", "peft")
# The pinned PEFT release: its config fields (read from its sources by peft_config_fields.py), tag,
# commit and version. A release writes its plain __version__ as peft_version. The math was read from
# PEFT's sources at 5d602fdbf (0.20.1.dev0); between v0.20.0 and that commit tuners/lora/dora.py is
# unchanged and lora/layer.py, ia3/layer.py only gained KaSA, ZeRO-3 shapes and an error message.
PEFT_FIELDS_FILE = os.path.join(ROOT, "test", "golden", "peft-config-fields.json")
with open(PEFT_FIELDS_FILE) as _f:
    PEFT_PIN = json.load(_f)
PEFT_TAG = PEFT_PIN["peft_tag"]
PEFT_COMMIT = PEFT_PIN["peft_commit"]
PEFT_VERSION = PEFT_PIN["peft_version"]
ATOL = 1e-4
F64_TOL = 1e-5
# merged (W + ΔW through the reference forward) vs unmerged (base + adapter branch): float32 rounding only
MERGE_TOL = 2e-5
BASE_SEED = 4321

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

REPORT = []




class Gen(SeededGen):
    base_seed = BASE_SEED


def load_base(name):
    d = os.path.join(MODELS, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    weights, _ = read_safetensors(os.path.join(d, "model.safetensors"))
    golden, _ = read_safetensors(os.path.join(d, "golden.safetensors"))
    return cfg, meta, weights, golden


# ---------------------------------------------------------------- configs as PEFT writes them
#
# PeftConfigMixin.save_pretrained writes asdict(config) with sets turned into lists, as
# json.dumps(indent=2, sort_keys=True) with no trailing newline. LoraConfig.to_dict drops runtime_config.
# target_modules / exclude_modules / feedforward_modules are sets after __post_init__, so PEFT writes
# them in hash order; we write them sorted.


def common_fields(peft_type, task_type, base):
    return {
        "auto_mapping": None,
        # PEFT stores the model's name_or_path; here: the base checkpoint folder relative to the repo root
        "base_model_name_or_path": f"test/golden/models/{base}",
        "inference_mode": True,
        "peft_type": peft_type,
        "peft_version": PEFT_VERSION,
        "revision": None,
        "task_type": task_type,
    }


def lora_config(base, task_type, **over):
    cfg = common_fields("LORA", task_type, base)
    cfg.update({
        "alora_invocation_tokens": None,
        "alpha_pattern": {},
        "arrow_config": None,
        "bias": "none",
        "corda_config": None,
        "ensure_weight_tying": False,
        "eva_config": None,
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": 8,
        "lora_bias": False,
        "lora_dropout": 0.0,
        "lora_ga_config": None,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "monteclora_config": None,
        "qalora_group_size": 16,
        "r": 8,
        "rank_pattern": {},
        "target_modules": None,
        "target_parameters": None,
        "trainable_token_indices": None,
        "use_bdlora": None,
        "use_dora": False,
        "use_qalora": False,
        "use_rslora": False,
        "velora_config": None,
    })
    return apply_over(cfg, over)


def ia3_config(base, task_type, **over):
    cfg = common_fields("IA3", task_type, base)
    cfg.update({
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "feedforward_modules": None,
        "init_ia3_weights": True,
        "modules_to_save": None,
        "target_modules": None,
    })
    return apply_over(cfg, over)


def prompt_learning_fields(model_cfg, peft_type, nvt):
    """PromptLearningConfig fields as _prepare_prompt_learning_config and _setup_prompt_encoder fill them."""
    token_dim = model_cfg["hidden_size"]
    heads = model_cfg["num_attention_heads"]
    if peft_type == "PREFIX_TUNING" and "num_key_value_heads" in model_cfg:
        # GQA (PEFT #1901): the prefix holds kv heads only
        hd = model_cfg.get("head_dim") or token_dim // heads
        token_dim = hd * model_cfg["num_key_value_heads"]
        heads = model_cfg["num_key_value_heads"]
    return {
        "modules_to_save": None,
        "num_attention_heads": heads,
        "num_layers": model_cfg["num_hidden_layers"],
        "num_transformer_submodules": 1,  # 2 only for SEQ_2_SEQ_LM
        "num_virtual_tokens": nvt,
        "token_dim": token_dim,
    }


def prompt_tuning_config(base, model_cfg, nvt):
    cfg = common_fields("PROMPT_TUNING", "CAUSAL_LM", base)
    cfg.update(prompt_learning_fields(model_cfg, "PROMPT_TUNING", nvt))
    cfg.update({"prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_kwargs": None,
                "tokenizer_name_or_path": None})
    return cfg


def prefix_tuning_config(base, model_cfg, nvt):
    cfg = common_fields("PREFIX_TUNING", "CAUSAL_LM", base)
    cfg.update(prompt_learning_fields(model_cfg, "PREFIX_TUNING", nvt))
    cfg.update({"encoder_hidden_size": cfg["token_dim"], "init_weights": None, "prefix_projection": False})
    return cfg


def apply_over(cfg, over):
    for k, v in over.items():
        check(k in cfg, f"unknown config field {k}")
        cfg[k] = v
    return cfg


# Exactly the keys PEFT's save_pretrained writes for each type (dataclass fields minus what to_dict pops).
PEFT_FIELDS = {t: set(v["fields"]) for t, v in PEFT_PIN["types"].items()}


# ---------------------------------------------------------------- which modules, which r/alpha (PEFT's rules)


def matches_target(target_modules, name):
    # check_target_module_exists with a list: exact name or a dotted suffix
    return any(name == t or name.endswith("." + t) for t in target_modules)


def pattern_key(patterns, name):
    # get_pattern_key: the first pattern (in the dict's order) with re.match(rf"(.*\.)?({p})$", name)
    import re
    for p in patterns:
        if re.match(rf"(.*\.)?({p})$", name):
            return p
    return None


def lora_layers(cfg, module_names, shapes, fan_in_fan_out=False):
    """name -> dict(r, alpha, scaling, in, out) for every targeted module, in module order."""
    out = {}
    for name in module_names:
        if not matches_target(cfg["target_modules"], name):
            continue
        rk = pattern_key(cfg["rank_pattern"], name)
        ak = pattern_key(cfg["alpha_pattern"], name)
        r = cfg["rank_pattern"][rk] if rk is not None else cfg["r"]
        alpha = cfg["alpha_pattern"][ak] if ak is not None else cfg["lora_alpha"]
        scaling = alpha / math.sqrt(r) if cfg["use_rslora"] else alpha / r
        d0, d1 = shapes[name]
        fin, fout = (d0, d1) if fan_in_fan_out else (d1, d0)
        out[name] = {"r": r, "alpha": alpha, "scaling": scaling, "in": fin, "out": fout}
    return out


# ---------------------------------------------------------------- adapters as linear-layer hooks


class Tracked:
    """Adapter tensors by PEFT key (without 'base_model.model.'); records which were read."""

    def __init__(self, tensors):
        self.t = tensors
        self.used = set()

    def __call__(self, key):
        self.used.add(key)
        return self.t[key]

    def unused(self):
        return sorted(set(self.t) - self.used)


def lora_hook(layers, A, weight_of, kind="lora", fan_in_fan_out=False, detach_norm=True):
    """lin(path, x, dtype) applying LoRA / DoRA the way PEFT's Linear.forward does (eval mode, no dropout).

    detach_norm=False differentiates through DoRA's norm (not what PEFT does; a self-check only)."""

    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        base = x @ w if fan_in_fan_out else x @ w.t()
        if path not in layers:
            return base + bias if bias is not None else base
        s = layers[path]["scaling"]
        a = A(f"{path}.lora_A.weight").to(dtype)
        b = A(f"{path}.lora_B.weight").to(dtype)
        lora = (x @ a.t()) @ b.t()
        if kind == "lora":
            y = base + lora * s
            return y + bias if bias is not None else y
        # DoRA (dora.py DoraLinearLayer.forward): ‖W + s·B·A‖ per output row, detached; base_result has the
        # bias removed before scaling, and the layer adds the full base result (bias included) back
        check(not fan_in_fan_out, "DoRA golden is for nn.Linear only")
        m = A(f"{path}.lora_magnitude_vector").to(dtype)
        norm = torch.linalg.norm(w + s * (b @ a), dim=1)
        if detach_norm:
            # DoraLinearLayer.forward: weight_norm = weight_norm.detach() (DoRA paper §4.3)
            norm = norm.detach()
        scale = (m / norm).view(1, -1)
        y = base + (scale - 1) * base + scale * lora * s
        return y + bias if bias is not None else y

    return lin


def ia3_hook(targets, feedforward, A, weight_of):
    def lin(path, x, dtype, bias=None):
        w = weight_of(path).to(dtype)
        if path not in targets:
            y = x @ w.t()
        elif path in feedforward:
            # ia3_l [1, in] scales the input features
            y = (x * A(f"{path}.ia3_l").to(dtype).flatten()) @ w.t()
        else:
            # ia3_l [out, 1] scales the output (bias included, as result * ia3_scaling)
            y = x @ w.t()
            if bias is not None:
                y = y + bias
                bias = None
            y = y * A(f"{path}.ia3_l").to(dtype).flatten()
        return y + bias if bias is not None else y

    return lin


# ---------------------------------------------------------------- forwards with hooks


def llama_forward(cfg, W, ids, mask, dtype=torch.float32, lin=None, prompt=None, prefix=None, capture=None,
                  rope_start=None):
    """LlamaForCausalLM as PeftModelForCausalLM drives it.

    lin(path, x, dtype): replaces nn.Linear (LoRA, DoRA, IA3). prompt [P, H]: prompt tuning, prepended to
    inputs_embeds with ones prepended to the mask. prefix: per layer (key, value) [nkv, P, hd] placed in the
    KV cache before the real tokens (no rotary applied to them), so the real tokens' positions start at P.
    capture: list that receives each layer's post-rotary (key, value), for the KV-cache check.
    rope_start: overrides the first rotary position (diagnostics only; transformers uses the cache length).
    """
    check(cfg["model_type"] == "llama" and not cfg.get("attention_bias"), "llama without biases only")
    g = (lambda n: W[n].to(dtype))
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    L = (lambda path, x: lin(path, x, dtype)) if lin else (lambda path, x: R.linear(x, g(path + ".weight")))
    B, T = ids.shape
    x = g("model.embed_tokens.weight")[ids]
    if prompt is not None:
        x = torch.cat([prompt.to(dtype)[None].expand(B, -1, -1), x], dim=1)
        mask = torch.cat([torch.ones(B, prompt.shape[0], dtype=mask.dtype), mask], dim=1)
    Tq = x.shape[1]
    P = prefix[0][0].shape[1] if prefix else 0
    # no position_ids passed: cache_position = arange(past_len, past_len + Tq) for every row
    qpos = torch.arange(P, P + Tq)
    rpos = qpos if rope_start is None else torch.arange(rope_start, rope_start + Tq)
    cos, sin = R.rope_cos_sin(cfg, rpos[None].expand(B, Tq), dtype)
    keys_mask = torch.cat([torch.ones(B, P, dtype=mask.dtype), mask], dim=1)
    allowed = (torch.arange(P + Tq)[None, :] <= qpos[:, None])[None, None] & keys_mask.bool()[:, None, None, :]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = R.rms_norm(x, g(p + "input_layernorm.weight"), eps)
        q = L(p + "self_attn.q_proj", h).view(B, Tq, nh, hd).transpose(1, 2)
        k = L(p + "self_attn.k_proj", h).view(B, Tq, nkv, hd).transpose(1, 2)
        v = L(p + "self_attn.v_proj", h).view(B, Tq, nkv, hd).transpose(1, 2)
        q = R.apply_rope(q, cos, sin)
        k = R.apply_rope(k, cos, sin)
        if capture is not None:
            capture.append((k, v))
        if prefix:
            pk, pv = prefix[i]
            k = torch.cat([pk.to(dtype)[None].expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([pv.to(dtype)[None].expand(B, -1, -1, -1), v], dim=2)
        a = R.softmax_attend(q, R.repeat_kv(k, nh // nkv), R.repeat_kv(v, nh // nkv), allowed, hd**-0.5)
        a = a.transpose(1, 2).reshape(B, Tq, nh * hd)
        x = x + L(p + "self_attn.o_proj", a)
        h = R.rms_norm(x, g(p + "post_attention_layernorm.weight"), eps)
        m = R.silu(L(p + "mlp.gate_proj", h)) * L(p + "mlp.up_proj", h)
        x = x + L(p + "mlp.down_proj", m)
    x = R.rms_norm(x, g("model.norm.weight"), eps)
    head = g("model.embed_tokens.weight") if cfg.get("tie_word_embeddings") else g("lm_head.weight")
    return R.linear(x, head)


def gpt2_forward(cfg, W, ids, mask, dtype=torch.float32, lin=None):
    """GPT2LMHeadModel (hub layout names) with Conv1D layers routed through lin(path, x, dtype, bias)."""
    g = (lambda n: W[n].to(dtype))
    H, nh = cfg["n_embd"], cfg["n_head"]
    hd = H // nh
    eps = cfg["layer_norm_epsilon"]
    B, T = ids.shape

    def C(path, x):
        # module path (transformer.h.0.attn.c_attn) -> hub weight name (h.0.attn.c_attn.weight)
        name = path[len("transformer."):]
        if lin:
            return lin(path, x, dtype, g(name + ".bias"))
        return R.conv1d(x, g(name + ".weight"), g(name + ".bias"))

    pos = torch.arange(T)[None].expand(B, T)
    x = g("wte.weight")[ids] + g("wpe.weight")[pos]
    allowed = R.causal_allowed(mask)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        mp = f"transformer.h.{i}."
        h = R.layer_norm(x, g(p + "ln_1.weight"), g(p + "ln_1.bias"), eps)
        q, k, v = C(mp + "attn.c_attn", h).split(H, dim=-1)
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
        a = R.softmax_attend(q, k, v, allowed, hd**-0.5).transpose(1, 2).reshape(B, T, H)
        x = x + C(mp + "attn.c_proj", a)
        h = R.layer_norm(x, g(p + "ln_2.weight"), g(p + "ln_2.bias"), eps)
        x = x + C(mp + "mlp.c_proj", R.gelu_tanh(C(mp + "mlp.c_fc", h)))
    x = R.layer_norm(x, g("ln_f.weight"), g("ln_f.bias"), eps)
    return R.linear(x, g("wte.weight"))


def bert_seq_cls_forward(cfg, W, ids, tt, mask, dtype=torch.float32, lin=None, classifier=None):
    """BertForSequenceClassification; lin(path, x, dtype, bias) for the encoder's linear layers and
    classifier = (weight, bias) replacing the head (modules_to_save)."""
    g = (lambda n: W[n].to(dtype))
    eps = cfg["layer_norm_eps"]
    nh = cfg["num_attention_heads"]
    B, T = ids.shape

    def Lb(path, x):
        if lin:
            return lin(path, x, dtype, g(path + ".bias"))
        return R.linear(x, g(path + ".weight"), g(path + ".bias"))

    pos = torch.arange(T)[None].expand(B, T)
    x = (g("bert.embeddings.word_embeddings.weight")[ids] + g("bert.embeddings.token_type_embeddings.weight")[tt]
         + g("bert.embeddings.position_embeddings.weight")[pos])
    x = R.layer_norm(x, g("bert.embeddings.LayerNorm.weight"), g("bert.embeddings.LayerNorm.bias"), eps)
    ext = (1.0 - mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        H = x.shape[-1]
        hd = H // nh
        q, k, v = (Lb(p + f"attention.self.{n}", x).view(B, T, nh, hd).transpose(1, 2) for n in ("query", "key", "value"))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + ext
        a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, H)
        a = Lb(p + "attention.output.dense", a)
        x = R.layer_norm(a + x, g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"), eps)
        m = R.gelu_erf(Lb(p + "intermediate.dense", x))
        m = Lb(p + "output.dense", m)
        x = R.layer_norm(m + x, g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"), eps)
    pooled = torch.tanh(Lb("bert.pooler.dense", x[:, 0]))
    cw, cb = classifier if classifier is not None else (W["classifier.weight"], W["classifier.bias"])
    return R.linear(pooled, cw.to(dtype), cb.to(dtype))


# ---------------------------------------------------------------- writing


def write_case(name, config, adapter, golden, meta):
    """adapter: PEFT keys exactly as saved (with 'base_model.model.' where PEFT writes it)."""
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    want = PEFT_FIELDS[config["peft_type"]]
    check(set(config) == want, f"{name}: config fields differ from PEFT's dataclass: "
                               f"extra {sorted(set(config) - want)}, missing {sorted(want - set(config))}")
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))  # as PeftConfigMixin.save_pretrained: no newline
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), adapter, {"format": "pt"})
    write_safetensors(os.path.join(d, "golden.safetensors"), golden)
    meta = dict(meta)
    meta["adapter_keys"] = {k: list(v.shape) for k, v in sorted(adapter.items())}
    meta["golden_keys"] = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                           for k, v in sorted(golden.items())}
    meta["peft_source"] = f"huggingface/peft {PEFT_TAG} ({PEFT_COMMIT}), re-implemented in PyTorch"
    with open(os.path.join(d, "meta.json"), "w") as f:
        f.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for fn, src in (("adapter_model.safetensors", adapter), ("golden.safetensors", golden)):
        back, md = read_safetensors(os.path.join(d, fn))
        check(md == {"format": "pt"}, f"{name}/{fn}: metadata {md}")
        check(set(back) == set(src), f"{name}/{fn}: key set changed")
        for k in src:
            check(back[k].dtype == src[k].dtype and torch.equal(back[k], src[k]), f"{name}/{fn}: {k} differs")
    with open(os.path.join(d, "adapter_config.json")) as f:
        check(json.load(f) == config, f"{name}: config does not read back")
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    REPORT.append((name, size))


def saved(prefixless):
    return {"base_model.model." + k: v for k, v in prefixless.items()}


def decoder_golden(base_golden, logits, valid=None):
    return {
        "input_ids": base_golden["input_ids"],
        "attention_mask": base_golden["attention_mask"],
        "valid": (valid if valid is not None else base_golden["attention_mask"]).to(torch.uint8),
        "logits": logits.contiguous(),
        "logits_base": base_golden["logits"].contiguous(),
    }


COMPARE_NOTE = ("Run PeftModel.from_pretrained(base, this folder) on input_ids + attention_mask (plain forward, no "
                "position_ids) and compare `logits` where valid == 1 (per [batch, position]) at atol. `logits_base` "
                "is the base model's output for the same inputs (test/golden/models/<base>/golden.safetensors "
                "`logits`), for reference.")


def base_meta(case, base, base_meta_, description, mergeable, extra=None):
    meta = {
        "case": case,
        "base_model": base,
        "base_model_dir": f"test/golden/models/{base}",
        "architecture": base_meta_["architecture"],
        "description": description,
        "atol": ATOL,
        "rtol": 0.0,
        "inputs": ["input_ids", "attention_mask"],
        "compare": {"logits": {"valid": "valid"}},
        "compare_note": COMPARE_NOTE,
        "mergeable": mergeable,
        "base_model_name_or_path_note": ("adapter_config.json's base_model_name_or_path is the base checkpoint "
                                         "folder relative to the repository root (PEFT writes the model's "
                                         "name_or_path there; loaders must not depend on it)."),
    }
    if "num_labels" in base_meta_:
        meta["num_labels"] = base_meta_["num_labels"]
    if extra:
        meta.update(extra)
    return meta


def common_checks(name, f32, f64, base_logits, stored_base, own_base, valid, base_valid="same"):
    """float32 vs float64, own forward == stored base golden, adapter changes the output."""
    d64 = maxdiff(f32, f64, valid)
    check(d64 < F64_TOL, f"{name}: float32 vs float64 {d64}")
    dbase = maxdiff(own_base, stored_base, valid if base_valid == "same" else base_valid)
    check(dbase < 1e-5, f"{name}: own forward without adapter != base golden ({dbase})")
    dchange = maxdiff(f32, base_logits, valid) if base_logits is not None else None
    if dchange is not None:
        check(dchange > 5e-2, f"{name}: adapter barely changes the logits ({dchange})")
    return {"float64_max_abs_diff": d64, "own_forward_vs_base_golden": dbase, "adapter_effect_max_abs": dchange}


# ---------------------------------------------------------------- LoRA family on llama


LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def llama_linear_modules(cfg, W):
    names = []
    for i in range(cfg["num_hidden_layers"]):
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                  "mlp.up_proj", "mlp.down_proj"):
            names.append(f"model.layers.{i}.{m}")
    return names, {n: tuple(W[n + ".weight"].shape) for n in names}


def random_lora(gen, layers, b_std=0.25):
    """A as PEFT's Kaiming-uniform(a=√5) bound 1/√in; B random (a 'trained' adapter, not PEFT's zero init)."""
    t = {}
    for name, l in layers.items():
        bound = 1.0 / math.sqrt(l["in"])
        t[f"{name}.lora_A.weight"] = gen.uniform((l["r"], l["in"]), -bound, bound)
        t[f"{name}.lora_B.weight"] = gen.normal((l["out"], l["r"]), b_std)
    return t


def lora_merged(W, layers, t, fan_in_fan_out=False, key=lambda n: n + ".weight"):
    M = dict(W)
    for name, l in layers.items():
        delta = l["scaling"] * (t[f"{name}.lora_B.weight"] @ t[f"{name}.lora_A.weight"])
        M[key(name)] = W[key(name)] + (delta.t() if fan_in_fan_out else delta)
    return M


def make_llama_lora_case(case, base, description, cfg_over, kind="lora", b_std=0.25):
    mcfg, bmeta, W, bg = load_base(base)
    gen = Gen(case)
    config = lora_config(base, "CAUSAL_LM", **cfg_over)
    names, shapes = llama_linear_modules(mcfg, W)
    layers = lora_layers(config, names, shapes)
    check(layers, f"{case}: no target")
    t = random_lora(gen, layers, b_std)
    if kind == "dora":
        for name, l in layers.items():
            w = W[name + ".weight"]
            # a trained magnitude: PEFT starts it at ‖W + s·B·A‖ per row; perturb it so m/‖·‖ != 1
            t[f"{name}.lora_magnitude_vector"] = torch.linalg.norm(w, dim=1) * (1.0 + gen.normal((l["out"],), 0.3))
    A = Tracked(t)
    lin = lora_hook(layers, A, lambda p: W[p + ".weight"], kind=kind)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    valid = mask
    logits = llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: adapter tensors never read: {A.unused()}")
    l64 = llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin)
    own_base = llama_forward(mcfg, W, ids, mask)
    checks = common_checks(case, logits, l64, bg["logits"], bg["logits"], own_base, valid)
    # merged form through the independent reference forward (make_goldens' ref_models)
    if kind == "lora":
        M = lora_merged(W, layers, t)
    else:
        # DoRA merge: W' = (m / ‖W + s·B·A‖_row) · (W + s·B·A)
        M = dict(W)
        for name, l in layers.items():
            wp = W[name + ".weight"] + l["scaling"] * (t[f"{name}.lora_B.weight"] @ t[f"{name}.lora_A.weight"])
            M[name + ".weight"] = (t[f"{name}.lora_magnitude_vector"] / torch.linalg.norm(wp, dim=1))[:, None] * wp
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    merged = R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange)
    dm = maxdiff(merged, logits, valid)
    check(dm < MERGE_TOL, f"{case}: merged != unmerged ({dm})")
    checks["merged_vs_unmerged"] = dm
    if kind == "dora":
        # DoRA is not LoRA: dropping the magnitude rescaling must change the output
        plain = llama_forward(mcfg, W, ids, mask, lin=lora_hook(layers, Tracked(t), lambda p: W[p + ".weight"]))
        checks["dora_vs_plain_lora"] = maxdiff(plain, logits, valid)
        check(checks["dora_vs_plain_lora"] > 5e-2, f"{case}: DoRA indistinguishable from LoRA")
        # Gradients of Σ logits·cot (cot zero at padded positions) with the norm detached, as PEFT trains.
        cot = gen.normal(tuple(logits.shape)) * valid[..., None].to(torch.float32)
        grads = dora_gradients(mcfg, W, ids, mask, layers, t, cot)
        through = dora_gradients(mcfg, W, ids, mask, layers, t, cot, detach_norm=False)
        rel = {k: float((grads[k] - through[k]).norm() / grads[k].norm()) for k in grads}
        checks["grad_detached_vs_through_norm_min_rel_AB"] = min(v for k, v in rel.items() if "lora_magnitude" not in k)
        checks["grad_detached_vs_through_norm_max_rel_m"] = max(v for k, v in rel.items() if "lora_magnitude" in k)
        check(checks["grad_detached_vs_through_norm_min_rel_AB"] > 1e-3,
              f"{case}: detaching the norm does not change some A/B gradient")
        check(checks["grad_detached_vs_through_norm_max_rel_m"] < 1e-12,
              f"{case}: detaching the norm changed a magnitude gradient")
    meta = base_meta(case, base, bmeta, description, True, {
        "lora_layers": {n: {"r": l["r"], "lora_alpha": l["alpha"], "scaling": l["scaling"]} for n, l in layers.items()},
        "self_checks": checks,
    })
    golden = decoder_golden(bg, logits)
    if kind == "dora":
        golden["grad_cotangent"] = cot
        for k, g in grads.items():
            golden["grad.base_model.model." + k] = g.to(torch.float32).contiguous()
        meta["grad_note"] = ("grad.<adapter key>: d(sum(logits * grad_cotangent))/d(tensor) by torch autograd in float64 "
                             "(stored float32), with the DoRA norm ||W + s*B*A|| detached as PEFT's DoraLinearLayer does. "
                             "grad_cotangent is zero at padded positions.")
    write_case(case, config, saved(t), golden, meta)
    return layers


def dora_gradients(mcfg, W, ids, mask, layers, t, cot, detach_norm=True):
    """d(Σ logits·cot)/d(adapter tensor) in float64 by torch autograd, for every adapter tensor."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in t.items()}
    keys = sorted(leaves)
    with torch.enable_grad():
        lin = lora_hook(layers, Tracked(leaves), lambda p: W[p + ".weight"], kind="dora", detach_norm=detach_norm)
        logits = llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin)
        grads = torch.autograd.grad((logits * cot.double()).sum(), [leaves[k] for k in keys])
    return dict(zip(keys, grads))


def rank_pattern_checks(config, names, shapes):
    """The overlapping patterns resolve by first match in file (sorted) order; reversing the order must matter."""
    layers = lora_layers(config, names, shapes)
    rev = dict(config)
    rev["rank_pattern"] = dict(reversed(list(config["rank_pattern"].items())))
    rev["alpha_pattern"] = dict(reversed(list(config["alpha_pattern"].items())))
    other = lora_layers(rev, names, shapes)
    differ = sorted(n for n in layers if (layers[n]["r"], layers[n]["alpha"]) != (other[n]["r"], other[n]["alpha"]))
    check(differ, "pattern order makes no difference; the golden would not test first-match order")
    ranks = {l["r"] for l in layers.values()}
    check(len(ranks) >= 3, f"rank_pattern gives ranks {ranks}")
    return differ


# ---------------------------------------------------------------- cases


def case_lora_llama():
    make_llama_lora_case(
        "lora_llama", "llama_basic",
        "LoRA r=4, lora_alpha=8 (scaling 2) on every linear layer of llama_basic (q,k,v,o,gate,up,down), random A "
        "and B. Expected logits = base + s·B(A x) at each layer; equal (checked) to the forward with W + s·B·A.",
        {"r": 4, "lora_alpha": 8, "target_modules": sorted(LLAMA_TARGETS)})


def case_rslora():
    base = "llama_gqa_tied"
    mcfg, _, W, _ = load_base(base)
    names, shapes = llama_linear_modules(mcfg, W)
    # written in sorted-key order, as json.dumps(sort_keys=True) stores it and PEFT reads it back
    over = {
        "r": 4, "lora_alpha": 8, "use_rslora": True, "target_modules": sorted(LLAMA_TARGETS),
        "rank_pattern": {"mlp\\.(gate|up)_proj": 3, "model.layers.1.self_attn.o_proj": 2, "o_proj": 6},
        "alpha_pattern": {"down_proj": 2, "layers\\.0\\.self_attn\\.(q|k)_proj": 16},
    }
    for k in ("rank_pattern", "alpha_pattern"):
        check(list(over[k]) == sorted(over[k]), f"{k} must be in sorted order")
    cfg = lora_config(base, "CAUSAL_LM", **over)
    differ = rank_pattern_checks(cfg, names, shapes)
    make_llama_lora_case(
        "rslora_rank_pattern", base,
        "rsLoRA (scaling lora_alpha/sqrt(r)) on every linear layer of llama_gqa_tied (GQA: q_proj [64,32], k/v "
        "[32,32], o_proj [32,64]) with rank_pattern / alpha_pattern, so shapes differ by layer. Patterns match PEFT's "
        "get_pattern_key: re.match(r'(.*\\.)?(' + pattern + r')$', module name), FIRST matching key in the file's "
        "(sorted) order wins: model.layers.1.self_attn.o_proj gets r=2 from its full-name key although 'o_proj' (r=6) "
        f"also matches. Modules whose r/alpha would change if the order were reversed: {differ}.",
        over, b_std=0.12)


def case_dora():
    make_llama_lora_case(
        "dora_llama", "llama_basic",
        "DoRA (use_dora) r=4, lora_alpha=8 on q_proj, v_proj, down_proj of llama_basic; random A, B and magnitude. "
        "Forward per PEFT's DoraLinearLayer: base + (m/‖W+s·B·A‖_row − 1)·base + (m/‖W+s·B·A‖_row)·s·B·A·x, the norm "
        "over each output row of W + s·B·A (detached). Merged weight (checked): (m/‖W+s·B·A‖_row)·(W+s·B·A). "
        "Saved key '...lora_magnitude_vector' (no '.weight' suffix), shape [out].",
        {"r": 4, "lora_alpha": 8, "target_modules": ["down_proj", "q_proj", "v_proj"], "use_dora": True},
        kind="dora")


def case_gpt2():
    case, base = "lora_gpt2_fan_in_fan_out", "gpt2"
    mcfg, bmeta, W, bg = load_base(base)
    gen = Gen(case)
    config = lora_config(base, "CAUSAL_LM", r=4, lora_alpha=8, fan_in_fan_out=True, target_modules=["c_attn", "c_proj"])
    names, shapes = [], {}
    for i in range(mcfg["n_layer"]):
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            n = f"transformer.h.{i}.{m}"
            names.append(n)
            shapes[n] = tuple(W[f"h.{i}.{m}.weight"].shape)  # Conv1D [in, out]
    layers = lora_layers(config, names, shapes, fan_in_fan_out=True)
    check(len(layers) == 3 * mcfg["n_layer"], "c_proj must match attn.c_proj and mlp.c_proj (suffix match)")
    t = random_lora(gen, layers)
    A = Tracked(t)
    hub = (lambda p: W[p[len("transformer."):] + ".weight"])
    lin = lora_hook(layers, A, hub, fan_in_fan_out=True)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = gpt2_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = common_checks(case, logits, gpt2_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                           bg["logits"], gpt2_forward(mcfg, W, ids, mask), mask)
    M = lora_merged(W, layers, t, fan_in_fan_out=True, key=lambda n: n[len("transformer."):] + ".weight")
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    merged = R.gpt2_forward(mcfg, R.Weights(M), ids, mask, arange)
    checks["merged_vs_unmerged"] = maxdiff(merged, logits, mask)
    check(checks["merged_vs_unmerged"] < MERGE_TOL, f"{case}: merged != unmerged {checks['merged_vs_unmerged']}")
    # merging without the transpose is wrong, and visibly so
    Mbad = dict(W)
    for name, l in layers.items():
        if l["in"] == l["out"]:
            k = name[len("transformer."):] + ".weight"
            Mbad[k] = W[k] + l["scaling"] * (t[f"{name}.lora_B.weight"] @ t[f"{name}.lora_A.weight"])
        else:
            Mbad[name[len("transformer."):] + ".weight"] = M[name[len("transformer."):] + ".weight"]
    checks["merge_without_transpose_error"] = maxdiff(R.gpt2_forward(mcfg, R.Weights(Mbad), ids, mask, arange), logits, mask)
    check(checks["merge_without_transpose_error"] > 1e-2, "square Conv1D merge is transpose-insensitive")
    meta = base_meta(case, base, bmeta, (
        "LoRA r=4, lora_alpha=8, fan_in_fan_out=true, target_modules ['c_attn', 'c_proj'] on gpt2 (hub layout: weight "
        "names without 'transformer.', Conv1D weights [in, out]). 'c_proj' matches both attn.c_proj and mlp.c_proj "
        "(PEFT's suffix match), so 6 modules. PEFT module names carry 'transformer.' (GPT2LMHeadModel), whatever the "
        "checkpoint's key layout. lora_A [r, in], lora_B [out, r] as for nn.Linear; the merged delta is "
        "(s·B·A)ᵀ added to the [in, out] Conv1D weight; the LoRA branch adds to the output including the Conv1D bias."),
        True, {"lora_layers": {n: {"r": l["r"], "lora_alpha": l["alpha"], "scaling": l["scaling"], "in": l["in"],
                                   "out": l["out"]} for n, l in layers.items()},
               "self_checks": checks})
    write_case(case, config, saved(t), decoder_golden(bg, logits), meta)


def case_ia3():
    case, base = "ia3_llama", "llama_basic"
    mcfg, bmeta, W, bg = load_base(base)
    gen = Gen(case)
    config = ia3_config(base, "CAUSAL_LM", target_modules=["down_proj", "k_proj", "v_proj"],
                        feedforward_modules=["down_proj"])
    names, shapes = llama_linear_modules(mcfg, W)
    targets = [n for n in names if matches_target(config["target_modules"], n)]
    ff = {n for n in targets if matches_target(config["feedforward_modules"], n)}
    t = {}
    for n in targets:
        out_f, in_f = shapes[n]
        shape = (1, in_f) if n in ff else (out_f, 1)
        t[f"{n}.ia3_l"] = 1.0 + gen.normal(shape, 0.4)
    A = Tracked(t)
    lin = ia3_hook(set(targets), ff, A, lambda p: W[p + ".weight"])
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = llama_forward(mcfg, W, ids, mask, lin=lin)
    check(not A.unused(), f"{case}: unused {A.unused()}")
    checks = common_checks(case, logits, llama_forward(mcfg, W, ids, mask, torch.float64, lin=lin), bg["logits"],
                           bg["logits"], llama_forward(mcfg, W, ids, mask), mask)
    # merge (ia3/layer.py Linear.merge): weight * ia3_l, i.e. rows scaled by [out,1], columns by [1,in]
    M = dict(W)
    for n in targets:
        M[n + ".weight"] = W[n + ".weight"] * t[f"{n}.ia3_l"]
    arange = torch.arange(ids.shape[1])[None].expand_as(ids)
    checks["merged_vs_unmerged"] = maxdiff(R.llama_like_forward(mcfg, R.Weights(M), ids, mask, arange), logits, mask)
    check(checks["merged_vs_unmerged"] < MERGE_TOL, f"{case}: merged != unmerged")
    # treating down_proj as a non-feedforward (output-scaling) module would be wrong: shapes differ, so only a
    # loader that reads the [1, in] vector as input scaling can match
    meta = base_meta(case, base, bmeta, (
        "IA3 on k_proj, v_proj (output scaling: ia3_l [out, 1], y = (W x) * l) and down_proj (feedforward_modules: "
        "input scaling, ia3_l [1, in], y = W (x * l)) of llama_basic; random vectors around 1. Saved keys "
        "'base_model.model.<module>.ia3_l' (a ParameterDict entry: no '.weight'). Merged weight = W * ia3_l "
        "(broadcast: rows for [out,1], columns for [1,in]); checked equal to the unmerged forward."),
        True, {"self_checks": checks})
    write_case(case, config, saved(t), decoder_golden(bg, logits), meta)


def case_bert():
    case, base = "lora_bert_seq_cls_modules_to_save", "bert_seq_cls"
    mcfg, bmeta, W, bg = load_base(base)
    gen = Gen(case)
    # PeftModelForSequenceClassification.__init__ extends the user's modules_to_save with ["classifier", "score"]
    # before the config is saved, so a config created with modules_to_save=["classifier"] is written like this
    config = lora_config(base, "SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
                         modules_to_save=["classifier", "classifier", "score"])
    names, shapes = [], {}
    for i in range(mcfg["num_hidden_layers"]):
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "intermediate.dense", "output.dense"):
            n = f"bert.encoder.layer.{i}.{m}"
            names.append(n)
            shapes[n] = tuple(W[n + ".weight"].shape)
    layers = lora_layers(config, names, shapes)
    check(len(layers) == 2 * mcfg["num_hidden_layers"], "query/value per layer")
    t = random_lora(gen, layers)
    nl = bmeta["num_labels"]
    H = mcfg["hidden_size"]
    # the trained head copy (ModulesToSaveWrapper.modules_to_save["default"]), different from the base head
    head_w = W["classifier.weight"] + gen.normal((nl, H), 0.5)
    head_b = W["classifier.bias"] + gen.normal((nl,), 0.5)
    A = Tracked(t)
    lin = lora_hook(layers, A, lambda p: W[p + ".weight"])
    ids, tt, mask = bg["input_ids"], bg["token_type_ids"], bg["attention_mask"]
    logits = bert_seq_cls_forward(mcfg, W, ids, tt, mask, lin=lin, classifier=(head_w, head_b))
    check(not A.unused(), f"{case}: unused {A.unused()}")
    l64 = bert_seq_cls_forward(mcfg, W, ids, tt, mask, torch.float64, lin=lin, classifier=(head_w, head_b))
    checks = common_checks(case, logits, l64, bg["logits"], bg["logits"], bert_seq_cls_forward(mcfg, W, ids, tt, mask), None)
    M = lora_merged(W, layers, t)
    M["classifier.weight"], M["classifier.bias"] = head_w, head_b
    checks["merged_vs_unmerged"] = maxdiff(bert_seq_cls_forward(mcfg, M, ids, tt, mask), logits)
    check(checks["merged_vs_unmerged"] < MERGE_TOL, f"{case}: merged != unmerged")
    lora_only = bert_seq_cls_forward(mcfg, W, ids, tt, mask, lin=lin)
    checks["effect_of_saved_classifier"] = maxdiff(lora_only, logits)
    check(checks["effect_of_saved_classifier"] > 5e-2, "the saved classifier makes no difference")
    # get_peft_model_state_dict: ModulesToSaveWrapper.adapter_state_dict gives the copy's own keys ("weight",
    # "bias"), prefixed with the wrapper's module name -> "base_model.model.classifier.weight" (no
    # "modules_to_save", no adapter name). PEFT has written this form since v0.3 (old code: key.replace(
    # "modules_to_save.", "") then the adapter name removed).
    adapter = saved(t)
    adapter["base_model.model.classifier.weight"] = head_w
    adapter["base_model.model.classifier.bias"] = head_b
    golden = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "logits": logits.contiguous(),
              "logits_base": bg["logits"].contiguous(), "logits_lora_only": lora_only.contiguous()}
    meta = base_meta(case, base, bmeta, (
        "LoRA r=4, lora_alpha=8 on query and value of bert_seq_cls (BertForSequenceClassification, 3 labels), "
        "task_type SEQ_CLS, modules_to_save with the trained classifier head. The head is saved as PEFT does: "
        "'base_model.model.classifier.weight' / '.bias' (the ModulesToSaveWrapper copy, keys WITHOUT "
        "'modules_to_save' and without the adapter name), and replaces the base head on load. The config's "
        "modules_to_save is ['classifier', 'classifier', 'score']: PeftModelForSequenceClassification appends "
        "['classifier', 'score'] to the user's ['classifier'] before saving; 'score' matches nothing here."),
        True, {
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "compare": {"logits": {"valid": None}},
            "compare_note": ("Pass input_ids, attention_mask and token_type_ids; compare every row of `logits` [3, 3] "
                             "(pooled from token 0). `logits_lora_only` = LoRA applied but the base classifier "
                             "kept: what a loader that ignores the saved head would produce. `logits_base` = the "
                             "base model."),
            "lora_layers": {n: {"r": l["r"], "lora_alpha": l["alpha"], "scaling": l["scaling"]} for n, l in layers.items()},
            "self_checks": checks,
        })
    write_case(case, config, adapter, golden, meta)


def case_prompt_tuning():
    case, base = "prompt_tuning_llama", "llama_basic"
    mcfg, bmeta, W, bg = load_base(base)
    gen = Gen(case)
    nvt = 4
    config = prompt_tuning_config(base, mcfg, nvt)
    H = mcfg["hidden_size"]
    check(config["token_dim"] == H, "token_dim")
    emb = gen.normal((nvt * config["num_transformer_submodules"], H), 1.0)  # like the embedding table's scale
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = llama_forward(mcfg, W, ids, mask, prompt=emb)
    B = ids.shape[0]
    valid = torch.cat([torch.ones(B, nvt, dtype=mask.dtype), mask], dim=1)
    checks = common_checks(case, logits, llama_forward(mcfg, W, ids, mask, torch.float64, prompt=emb), None,
                           bg["logits"], llama_forward(mcfg, W, ids, mask), valid, base_valid=mask)
    # real-token logits must differ from the base model's (same tokens, now after the virtual tokens)
    checks["adapter_effect_max_abs"] = maxdiff(logits[:, nvt:], bg["logits"], mask)
    check(checks["adapter_effect_max_abs"] > 5e-2, "prompt has no effect")
    # inputs_embeds path check: a prompt made of real token embeddings == those tokens prepended as input_ids
    tok = torch.tensor([5, 17, 42, 99])
    as_prompt = llama_forward(mcfg, W, ids, mask, prompt=W["model.embed_tokens.weight"][tok])
    cat_ids = torch.cat([tok[None].expand(B, -1), ids], dim=1)
    ref = R.llama_like_forward(mcfg, R.Weights(W), cat_ids, valid, torch.arange(cat_ids.shape[1])[None].expand_as(cat_ids))
    checks["token_prompt_vs_prepended_ids"] = maxdiff(as_prompt, ref, valid)
    check(checks["token_prompt_vs_prepended_ids"] < 1e-5, "prompt path differs from prepended tokens")
    golden = decoder_golden(bg, logits, valid)
    meta = base_meta(case, base, bmeta, (
        "PROMPT_TUNING, num_virtual_tokens 4, on llama_basic; random prompt_embeddings [4, 32] (saved under the bare "
        "key 'prompt_embeddings', no 'base_model.model.' prefix). PeftModelForCausalLM.forward: inputs_embeds = "
        "cat(prompt, embed(input_ids)), attention_mask = cat(ones(4), attention_mask), no position_ids (so "
        "positions 0..13 for every row, the prompt at 0..3). The logits cover the virtual + real positions: "
        "[3, 14, 256]. token_dim / num_layers / num_attention_heads / num_transformer_submodules are filled in "
        "as _prepare_prompt_learning_config writes them."),
        False, {
            "num_virtual_tokens": nvt,
            "compare_note": ("logits are [batch, num_virtual_tokens + T, vocab]: compare where valid == 1 "
                             "(valid = cat(ones(4), attention_mask)). `logits_base` is the base model on the real "
                             "tokens only ([3, 10, 256]), for reference."),
            "self_checks": checks,
        })
    write_case(case, config, {"prompt_embeddings": emb}, golden, meta)


def pack_prefix(kv, nvt, L, nkv, hd):
    """Inverse of get_prompt's layout: [nvt, L*2*nkv*hd] from per-layer (key, value) [nkv, nvt, hd]."""
    x = torch.zeros(nvt, L * 2, nkv, hd)
    for i, (k, v) in enumerate(kv):
        x[:, 2 * i] = k.transpose(0, 1)
        x[:, 2 * i + 1] = v.transpose(0, 1)
    return x.reshape(nvt, L * 2 * nkv * hd)


def unpack_prefix(emb, nvt, L, nkv, hd):
    """get_prompt: view(B, nvt, L*2, heads, token_dim // heads).permute(2, 0, 3, 1, 4).split(2):
    layer i's key is slice 2i, its value 2i+1, each [heads, nvt, head_dim] (batch dropped here)."""
    x = emb.view(nvt, L * 2, nkv, hd).permute(1, 2, 0, 3)  # [L*2, heads, nvt, hd]
    return [(x[2 * i], x[2 * i + 1]) for i in range(L)]


def case_prefix_tuning():
    case, base = "prefix_tuning_llama", "llama_gqa_tied"
    mcfg, bmeta, W, bg = load_base(base)
    gen = Gen(case)
    nvt = 3
    config = prefix_tuning_config(base, mcfg, nvt)
    L = config["num_layers"]
    nkv = config["num_attention_heads"]
    hd = config["token_dim"] // nkv
    check(nkv == mcfg["num_key_value_heads"] and hd == mcfg["head_dim"], "GQA prefix uses kv heads and head_dim")
    emb = gen.normal((nvt, L * 2 * config["token_dim"]), 1.0)
    prefix = unpack_prefix(emb, nvt, L, nkv, hd)
    ids, mask = bg["input_ids"], bg["attention_mask"]
    logits = llama_forward(mcfg, W, ids, mask, prefix=prefix)
    checks = common_checks(case, logits, llama_forward(mcfg, W, ids, mask, torch.float64, prefix=prefix), bg["logits"],
                           bg["logits"], llama_forward(mcfg, W, ids, mask), mask)
    # layout + positions check: a prefix holding the KV cache of real tokens t (run at positions 0..nvt-1) must give
    # the same logits as the reference forward over cat(t, ids) -- what a KV cache means
    tok = torch.tensor([[7, 21, 200]])
    cap = []
    llama_forward(mcfg, W, tok, torch.ones(1, nvt, dtype=torch.int64), capture=cap)
    cache_emb = pack_prefix([(k[0], v[0]) for k, v in cap], nvt, L, nkv, hd)
    check(torch.equal(pack_prefix(unpack_prefix(cache_emb, nvt, L, nkv, hd), nvt, L, nkv, hd), cache_emb), "pack/unpack")
    got = llama_forward(mcfg, W, ids, mask, prefix=unpack_prefix(cache_emb, nvt, L, nkv, hd))
    B, T = ids.shape
    cat_ids = torch.cat([tok.expand(B, -1), ids], dim=1)
    cat_mask = torch.cat([torch.ones(B, nvt, dtype=mask.dtype), mask], dim=1)
    ref = R.llama_like_forward(mcfg, R.Weights(W), cat_ids, cat_mask, torch.arange(nvt + T)[None].expand(B, -1))
    checks["kv_cache_prefix_vs_prepended_ids"] = maxdiff(got, ref[:, nvt:], mask)
    check(checks["kv_cache_prefix_vs_prepended_ids"] < 1e-5, f"prefix KV layout/positions wrong {checks}")
    # the real tokens sit at positions nvt.. (cache_position), not 0..: that matters with an unrotated prefix
    shifted = llama_forward(mcfg, W, ids, mask, prefix=prefix, rope_start=0)
    checks["positions_from_zero_error"] = maxdiff(shifted, logits, mask)
    check(checks["positions_from_zero_error"] > 1e-2, "prefix positions indistinguishable")
    golden = decoder_golden(bg, logits)
    golden["logits_positions_from_zero"] = shifted.contiguous()
    meta = base_meta(case, base, bmeta, (
        "PREFIX_TUNING, num_virtual_tokens 3, prefix_projection false, on llama_gqa_tied (4 query heads, 2 kv heads, "
        "head_dim 16). _prepare_prompt_learning_config's GQA rule: token_dim = head_dim * num_key_value_heads = 32, "
        "num_attention_heads = num_key_value_heads = 2. 'prompt_embeddings' [3, num_layers*2*token_dim = 128]. "
        "get_prompt: view(batch, 3, num_layers*2, 2, 16).permute(2,0,3,1,4).split(2) -> layer i key = slice 2i, "
        "value = slice 2i+1, each [batch, kv_heads, 3, 16], put in a DynamicCache as past_key_values. They are "
        "used as they are (no rotary), GQA-repeated like the other keys, always attended (mask gets 3 leading ones). "
        "With no position_ids passed, transformers takes cache_position = arange(3, 3+T): the real tokens' rotary "
        "positions start at num_virtual_tokens."),
        False, {
            "num_virtual_tokens": nvt,
            "compare_note": (COMPARE_NOTE + " `logits` are [3, 10, 256] (real tokens only). "
                             "`logits_positions_from_zero` is what one gets with rotary positions 0..T-1 instead "
                             "of 3..T+2 (a known way to be wrong), for diagnosis."),
            "self_checks": checks,
        })
    write_case(case, config, {"prompt_embeddings": emb}, golden, meta)


# ---------------------------------------------------------------- main


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    case_lora_llama()
    case_gpt2()
    case_rslora()
    case_dora()
    case_ia3()
    case_bert()
    case_prompt_tuning()
    case_prefix_tuning()
    total = 0
    for name, size in REPORT:
        total += size
        print(f"{name:36s} {size:8d} bytes")
    print(f"{'total':36s} {total:8d} bytes")
    check(total < 1024 * 1024, "PEFT goldens over 1 MB")


if __name__ == "__main__":
    main()
