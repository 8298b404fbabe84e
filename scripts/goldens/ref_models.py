"""Independent float32 forward passes that follow transformers' modeling code.

Every function reads its weights by their Hugging Face state-dict names from a `Weights`
object, which records which names were used; the generator asserts that every stored tensor
(other than known dead buffers) was consumed, so the key layout is checked by use.

Followed (semantics, not code): transformers src/transformers/models/{llama,mistral,qwen2,gpt2,
bert,roberta,vit}/modeling_*.py and modeling_rope_utils.py, v4.46-v4.57 behaviour.
"""
import math

import torch



class Weights:
    def __init__(self, tensors, prefix=""):
        self.t = tensors
        self.prefix = prefix
        self.used = set()

    def __call__(self, name):
        key = self.prefix + name
        self.used.add(key)
        return self.t[key]

    def has(self, name):
        return (self.prefix + name) in self.t

    def unused(self, ignore=()):
        return sorted(k for k in self.t if k not in self.used and k not in ignore)


def linear(x, w, b=None):
    # nn.Linear: weight is [out, in]
    y = x @ w.t()
    return y + b if b is not None else y


def conv1d(x, w, b):
    # GPT-2 Conv1D: weight is [in, out]
    return x @ w + b


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    # transformers "gelu_new" (NewGELUActivation)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def silu(x):
    return x * torch.sigmoid(x)


# ---------------------------------------------------------------- rotary embeddings


def rope_head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_inv_freq(cfg, dtype=torch.float32, ignore_scaling=False):
    """Returns (inv_freq, attention_scaling) for rope_type default / linear / llama3."""
    dim = int(rope_head_dim(cfg) * cfg.get("partial_rotary_factor", 1.0))
    base = float(cfg["rope_theta"])
    exps = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype) / dim
    inv = 1.0 / (base**exps)
    rs = cfg.get("rope_scaling")
    if rs is None or ignore_scaling:
        return inv, 1.0
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "default":
        return inv, 1.0
    if kind == "linear":
        return inv / rs["factor"], 1.0
    if kind == "llama3":
        factor = rs["factor"]
        lo_f = rs["low_freq_factor"]
        hi_f = rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        long_wave = wavelen > old_ctx / lo_f  # low frequency: fully interpolated
        short_wave = wavelen < old_ctx / hi_f  # high frequency: untouched
        smooth = (old_ctx / wavelen - lo_f) / (hi_f - lo_f)
        blended = (1 - smooth) * inv / factor + smooth * inv
        out = torch.where(long_wave, inv / factor, blended)
        out = torch.where(short_wave, inv, out)
        return out, 1.0
    raise ValueError(f"rope type {kind} not implemented in the reference")


def rope_cos_sin(cfg, position_ids, dtype=torch.float32, ignore_scaling=False):
    inv, scale = rope_inv_freq(cfg, dtype, ignore_scaling)
    freqs = position_ids[:, :, None].to(dtype) * inv[None, None, :]  # [B, T, dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # x: [B, heads, T, d]; cos/sin: [B, T, d]
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


# ---------------------------------------------------------------- masks


def causal_allowed(attention_mask):
    """[B, 1, T, T] bool: query i may see key j iff j <= i and key j is not padding."""
    B, T = attention_mask.shape
    tri = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return tri[None, None] & attention_mask.bool()[:, None, None, :]


def sliding_allowed(attention_mask, window):
    """causal_allowed narrowed to a sliding window: query i keeps keys j with i - window < j <= i
    (j, i are sequence indices, padding included: transformers measures the window in cache
    positions, masking_utils.sliding_window_overlay)."""
    T = attention_mask.shape[1]
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return causal_allowed(attention_mask) & (j > i - window)[None, None]


def layer_windows(cfg):
    """Per layer: the sliding window or None (full attention), derived from the config as
    transformers' MistralConfig / Qwen2Config do (written from their sources, not copied):
    mistral windows every layer (sliding_window defaults to 4096 when absent, null = none);
    qwen2 only with use_sliding_window, on layers whose layer_types entry is sliding_attention,
    by default those with index >= max_window_layers; llama never."""
    L = cfg["num_hidden_layers"]
    kind = cfg["model_type"]
    if kind == "mistral":
        return [cfg.get("sliding_window", 4096)] * L
    if kind != "qwen2":
        return [None] * L
    w = cfg.get("sliding_window", 4096) if cfg.get("use_sliding_window", False) else None
    types = cfg.get("layer_types") or [
        "sliding_attention" if w is not None and i >= cfg.get("max_window_layers", 28) else "full_attention"
        for i in range(L)]
    return [w if t == "sliding_attention" else None for t in types]


def additive(allowed, dtype):
    m = torch.zeros(allowed.shape, dtype=dtype)
    return m.masked_fill(~allowed, torch.finfo(dtype).min)


def softmax_attend(q, k, v, allowed, scale):
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores + additive(allowed, q.dtype)
    p = torch.softmax(scores, dim=-1)
    return p @ v


# ---------------------------------------------------------------- Llama / Mistral / Qwen2


def repeat_kv(x, n_rep):
    # [B, kvh, T, d] -> [B, kvh * n_rep, T, d]; head h uses kv head h // n_rep
    if n_rep == 1:
        return x
    B, kvh, T, d = x.shape
    return x[:, :, None].expand(B, kvh, n_rep, T, d).reshape(B, kvh * n_rep, T, d)


def llama_like_forward(cfg, W, input_ids, attention_mask, position_ids, dtype=torch.float32,
                       gqa="expand", ignore_rope_scaling=False, return_hidden=False, ignore_window=False):
    """LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM, no cache, eager attention;
    sliding-window layers (layer_windows) get the windowed causal mask."""
    g = (lambda n: W(n).to(dtype))
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    B, T = input_ids.shape

    x = g("model.embed_tokens.weight")[input_ids]
    cos, sin = rope_cos_sin(cfg, position_ids, dtype, ignore_rope_scaling)
    full = causal_allowed(attention_mask)
    windows = [None] * cfg["num_hidden_layers"] if ignore_window else layer_windows(cfg)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        allowed = full if windows[i] is None else sliding_allowed(attention_mask, windows[i])
        h = rms_norm(x, g(p + "input_layernorm.weight"), eps)
        bias = (lambda n: g(p + f"self_attn.{n}_proj.bias")) if qkv_bias else (lambda n: None)
        q = linear(h, g(p + "self_attn.q_proj.weight"), bias("q")).view(B, T, nh, hd).transpose(1, 2)
        k = linear(h, g(p + "self_attn.k_proj.weight"), bias("k")).view(B, T, nkv, hd).transpose(1, 2)
        v = linear(h, g(p + "self_attn.v_proj.weight"), bias("v")).view(B, T, nkv, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if gqa == "expand":
            a = softmax_attend(q, repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv), allowed, hd**-0.5)
        else:  # independent check: one head at a time, explicit kv-head index
            heads = []
            for hh in range(nh):
                kv = hh // (nh // nkv)
                heads.append(softmax_attend(q[:, hh : hh + 1], k[:, kv : kv + 1], v[:, kv : kv + 1], allowed, hd**-0.5))
            a = torch.cat(heads, dim=1)
        a = a.transpose(1, 2).reshape(B, T, nh * hd)
        x = x + linear(a, g(p + "self_attn.o_proj.weight"))
        h = rms_norm(x, g(p + "post_attention_layernorm.weight"), eps)
        m = silu(linear(h, g(p + "mlp.gate_proj.weight"))) * linear(h, g(p + "mlp.up_proj.weight"))
        x = x + linear(m, g(p + "mlp.down_proj.weight"))
    x = rms_norm(x, g("model.norm.weight"), eps)
    if return_hidden:
        return x
    head = g("model.embed_tokens.weight") if cfg.get("tie_word_embeddings") else g("lm_head.weight")
    return linear(x, head)


def llama_like_incremental(cfg, W, ids):
    """Token-by-token decoding with a KV cache (single row, no padding); returns [T, V] logits.
    Used only as a cross-check of the full forward's causal masking and rope positions. A
    sliding-window layer keeps only its last `window` keys/values (a rolling cache, no mask), an
    implementation of the window independent of sliding_allowed."""
    T = ids.shape[1]
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    qkv_bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    L = cfg["num_hidden_layers"]
    cache_k = [[] for _ in range(L)]
    cache_v = [[] for _ in range(L)]
    windows = layer_windows(cfg)
    out = []
    for t in range(T):
        x = W("model.embed_tokens.weight")[ids[0, t]][None]  # [1, H]
        cos, sin = rope_cos_sin(cfg, torch.tensor([[t]]))
        cos, sin = cos[0], sin[0]  # [1, hd]
        for i in range(L):
            p = f"model.layers.{i}."
            h = rms_norm(x, W(p + "input_layernorm.weight"), eps)
            bias = (lambda n: W(p + f"self_attn.{n}_proj.bias")) if qkv_bias else (lambda n: None)
            q = linear(h, W(p + "self_attn.q_proj.weight"), bias("q")).view(nh, hd)
            k = linear(h, W(p + "self_attn.k_proj.weight"), bias("k")).view(nkv, hd)
            v = linear(h, W(p + "self_attn.v_proj.weight"), bias("v")).view(nkv, hd)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            cache_k[i].append(k)
            cache_v[i].append(v)
            if windows[i] is not None:
                del cache_k[i][:-windows[i]]
                del cache_v[i][:-windows[i]]
            K = torch.stack(cache_k[i], dim=1)  # [nkv, t+1, hd]
            V = torch.stack(cache_v[i], dim=1)
            heads = []
            for hh in range(nh):
                kv = hh * nkv // nh
                s = (K[kv] @ q[hh]) * hd**-0.5
                heads.append(torch.softmax(s, dim=0) @ V[kv])
            a = torch.cat(heads)[None]
            x = x + linear(a, W(p + "self_attn.o_proj.weight"))
            h = rms_norm(x, W(p + "post_attention_layernorm.weight"), eps)
            m = silu(linear(h, W(p + "mlp.gate_proj.weight"))) * linear(h, W(p + "mlp.up_proj.weight"))
            x = x + linear(m, W(p + "mlp.down_proj.weight"))
        x = rms_norm(x, W("model.norm.weight"), eps)
        head = W("model.embed_tokens.weight") if cfg.get("tie_word_embeddings") else W("lm_head.weight")
        out.append(linear(x, head)[0])
    return torch.stack(out)


# ---------------------------------------------------------------- GPT-2


def gpt2_forward(cfg, W, input_ids, attention_mask, position_ids, dtype=torch.float32):
    """GPT2LMHeadModel; W's prefix selects 'transformer.' or the bare hub layout."""
    g = (lambda n: W(n).to(dtype))
    H = cfg["n_embd"]
    nh = cfg["n_head"]
    hd = H // nh
    eps = cfg["layer_norm_epsilon"]
    B, T = input_ids.shape
    x = g("wte.weight")[input_ids] + g("wpe.weight")[position_ids]
    allowed = causal_allowed(attention_mask)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        h = layer_norm(x, g(p + "ln_1.weight"), g(p + "ln_1.bias"), eps)
        qkv = conv1d(h, g(p + "attn.c_attn.weight"), g(p + "attn.c_attn.bias"))
        q, k, v = qkv.split(H, dim=-1)
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
        a = softmax_attend(q, k, v, allowed, hd**-0.5).transpose(1, 2).reshape(B, T, H)
        x = x + conv1d(a, g(p + "attn.c_proj.weight"), g(p + "attn.c_proj.bias"))
        h = layer_norm(x, g(p + "ln_2.weight"), g(p + "ln_2.bias"), eps)
        m = gelu_tanh(conv1d(h, g(p + "mlp.c_fc.weight"), g(p + "mlp.c_fc.bias")))
        x = x + conv1d(m, g(p + "mlp.c_proj.weight"), g(p + "mlp.c_proj.bias"))
    x = layer_norm(x, g("ln_f.weight"), g("ln_f.bias"), eps)
    return linear(x, g("wte.weight"))  # lm_head is tied to wte


# ---------------------------------------------------------------- BERT / RoBERTa encoder


def _encoder_self_attention(x, W, p, nh, ext_mask):
    B, T, H = x.shape
    hd = H // nh
    q = linear(x, W(p + "attention.self.query.weight"), W(p + "attention.self.query.bias"))
    k = linear(x, W(p + "attention.self.key.weight"), W(p + "attention.self.key.bias"))
    v = linear(x, W(p + "attention.self.value.weight"), W(p + "attention.self.value.bias"))
    q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + ext_mask
    a = torch.softmax(s, dim=-1) @ v
    return a.transpose(1, 2).reshape(B, T, H)


def bert_encoder(cfg, W, input_ids, token_type_ids, attention_mask, position_ids, dtype=torch.float32):
    """Embeddings + encoder of BertModel / RobertaModel (post-LN). W's prefix is 'bert.'/'roberta.'/''."""
    g = (lambda n: W(n).to(dtype))
    eps = cfg["layer_norm_eps"]
    nh = cfg["num_attention_heads"]
    x = (g("embeddings.word_embeddings.weight")[input_ids]
         + g("embeddings.token_type_embeddings.weight")[token_type_ids]
         + g("embeddings.position_embeddings.weight")[position_ids])
    x = layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
    # get_extended_attention_mask: (1 - mask) * finfo.min, broadcast over heads and queries
    ext = (1.0 - attention_mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min
    Wd = _Cast(W, dtype)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        a = _encoder_self_attention(x, Wd, p, nh, ext)
        a = linear(a, g(p + "attention.output.dense.weight"), g(p + "attention.output.dense.bias"))
        x = layer_norm(a + x, g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"), eps)
        m = gelu_erf(linear(x, g(p + "intermediate.dense.weight"), g(p + "intermediate.dense.bias")))
        m = linear(m, g(p + "output.dense.weight"), g(p + "output.dense.bias"))
        x = layer_norm(m + x, g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"), eps)
    return x


class _Cast:
    def __init__(self, W, dtype):
        self.W = W
        self.dtype = dtype

    def __call__(self, n):
        return self.W(n).to(self.dtype)


def bert_pooler(W, seq, dtype=torch.float32):
    return torch.tanh(linear(seq[:, 0], W("pooler.dense.weight").to(dtype), W("pooler.dense.bias").to(dtype)))


def mlm_head(W, seq, names, eps, dtype=torch.float32):
    """RobertaLMHead / BertOnlyMLMHead: dense -> exact GELU -> LayerNorm -> decoder tied to the word
    embeddings, plus the head's own bias (decoder.bias is the same parameter). `names` gives the
    checkpoint names: dense, norm, bias, embeddings."""
    g = (lambda n: W(n).to(dtype))
    x = gelu_erf(linear(seq.to(dtype), g(names["dense"] + ".weight"), g(names["dense"] + ".bias")))
    x = layer_norm(x, g(names["norm"] + ".weight"), g(names["norm"] + ".bias"), eps)
    return x @ g(names["embeddings"]).t() + g(names["bias"])


def roberta_position_ids(input_ids, padding_idx):
    # create_position_ids_from_input_ids: count non-pad tokens, pads keep padding_idx
    keep = (input_ids != padding_idx).to(torch.int64)
    return torch.cumsum(keep, dim=1) * keep + padding_idx


# ---------------------------------------------------------------- ViT


def vit_forward(cfg, W, pixel_values, dtype=torch.float32):
    """ViTForImageClassification; W has no prefix here, names include 'vit.'."""
    g = (lambda n: W(n).to(dtype))
    eps = cfg["layer_norm_eps"]
    nh = cfg["num_attention_heads"]
    P = cfg["patch_size"]
    pv = pixel_values.to(dtype)
    emb = torch.nn.functional.conv2d(pv, g("vit.embeddings.patch_embeddings.projection.weight"),
                                     g("vit.embeddings.patch_embeddings.projection.bias"), stride=P)
    emb = emb.flatten(2).transpose(1, 2)  # [B, patches (row-major over the grid), D]
    B = emb.shape[0]
    cls = g("vit.embeddings.cls_token").expand(B, -1, -1)
    x = torch.cat([cls, emb], dim=1) + g("vit.embeddings.position_embeddings")
    T = x.shape[1]
    no_mask = torch.zeros(B, 1, 1, T, dtype=dtype)
    for i in range(cfg["num_hidden_layers"]):
        p = f"vit.encoder.layer.{i}."
        h = layer_norm(x, g(p + "layernorm_before.weight"), g(p + "layernorm_before.bias"), eps)
        hd = h.shape[-1] // nh
        q = linear(h, g(p + "attention.attention.query.weight"), g(p + "attention.attention.query.bias"))
        k = linear(h, g(p + "attention.attention.key.weight"), g(p + "attention.attention.key.bias"))
        v = linear(h, g(p + "attention.attention.value.weight"), g(p + "attention.attention.value.bias"))
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hd) + no_mask, dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, T, nh * hd)
        x = x + linear(a, g(p + "attention.output.dense.weight"), g(p + "attention.output.dense.bias"))
        h = layer_norm(x, g(p + "layernorm_after.weight"), g(p + "layernorm_after.bias"), eps)
        m = gelu_erf(linear(h, g(p + "intermediate.dense.weight"), g(p + "intermediate.dense.bias")))
        x = x + linear(m, g(p + "output.dense.weight"), g(p + "output.dense.bias"))
    x = layer_norm(x, g("vit.layernorm.weight"), g("vit.layernorm.bias"), eps)
    return linear(x[:, 0], g("classifier.weight"), g("classifier.bias"))
