"""A LLaMA-family decoder with LoRA on every linear layer, in plain PyTorch, for the benchmark peer.

Random weights from a Hugging Face config.json: RMSNorm, rotary embeddings (rotate-half form),
grouped-query attention with a causal mask, SiLU-gated MLP, optionally tied embeddings.
"""
import math

import torch

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def dims(cfg):
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    return hidden, heads, cfg.get("num_key_value_heads", heads), head_dim, cfg["intermediate_size"]


def init_weights(cfg, rank, alpha_over_r=2.0):
    """Frozen weights (plain tensors) and LoRA pairs {layer: (A, B, scale)}; B starts at zero as in PEFT."""
    hidden, heads, kv_heads, head_dim, inter = dims(cfg)
    shapes = {  # (out, in) of each linear layer
        "self_attn.q_proj": (heads * head_dim, hidden),
        "self_attn.k_proj": (kv_heads * head_dim, hidden),
        "self_attn.v_proj": (kv_heads * head_dim, hidden),
        "self_attn.o_proj": (hidden, heads * head_dim),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }
    w = {"model.embed_tokens.weight": torch.randn(cfg["vocab_size"], hidden) * 0.02,
         "model.norm.weight": torch.ones(hidden)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = torch.randn(cfg["vocab_size"], hidden) * 0.02
    lora = {}
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        w[prefix + "input_layernorm.weight"] = torch.ones(hidden)
        w[prefix + "post_attention_layernorm.weight"] = torch.ones(hidden)
        for name in LINEARS:
            out_f, in_f = shapes[name]
            w[prefix + name + ".weight"] = torch.randn(out_f, in_f) * 0.02
            a = (torch.randn(rank, in_f) / math.sqrt(in_f)).requires_grad_()
            b = torch.zeros(out_f, rank).requires_grad_()
            lora[prefix + name] = (a, b, alpha_over_r)
    return w, lora


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotary(seq, head_dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def llama_logits(cfg, w, lora, ids):
    hidden, heads, kv_heads, head_dim, _ = dims(cfg)
    eps = cfg.get("rms_norm_eps", 1e-6)
    batch, seq = ids.shape

    def linear(name, x):
        y = x @ w[name + ".weight"].T
        a, b, scale = lora[name]
        return y + (x @ a.T) @ b.T * scale

    def split_heads(x, n):
        return x.view(batch, seq, n, head_dim).transpose(1, 2)

    cos, sin = rotary(seq, head_dim, cfg.get("rope_theta", 10000.0))
    causal = torch.full((seq, seq), float("-inf")).triu(1)
    group = heads // kv_heads
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = rotate(split_heads(linear(p + "self_attn.q_proj", h), heads), cos, sin)
        k = rotate(split_heads(linear(p + "self_attn.k_proj", h), kv_heads), cos, sin).repeat_interleave(group, dim=1)
        v = split_heads(linear(p + "self_attn.v_proj", h), kv_heads).repeat_interleave(group, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal, dim=-1) @ v
        x = x + linear(p + "self_attn.o_proj", att.transpose(1, 2).reshape(batch, seq, heads * head_dim))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + linear(p + "mlp.down_proj", torch.nn.functional.silu(linear(p + "mlp.gate_proj", h)) * linear(p + "mlp.up_proj", h))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T
