"""Cross-check the hand-written encoder layers against torch.nn.TransformerEncoderLayer.

BERT/RoBERTa layers are post-LN encoder layers and ViT layers are pre-LN ones, with the same
attention, GELU(erf) MLP and LayerNorm; loading our HF-named weights into torch's own module
gives an implementation we did not write.
"""
import torch


def _layer(W, p, names, H, nh, I, eps, norm_first):
    m = torch.nn.TransformerEncoderLayer(H, nh, I, dropout=0.0, activation="gelu", layer_norm_eps=eps,
                                         batch_first=True, norm_first=norm_first)
    m.train()  # the eval-mode fast path zeroes padded rows; train mode with dropout 0 is exact
    q, k, v, o, n1, f1, f2, n2 = names
    with torch.no_grad():
        m.self_attn.in_proj_weight.copy_(torch.cat([W(p + q + ".weight"), W(p + k + ".weight"), W(p + v + ".weight")]))
        m.self_attn.in_proj_bias.copy_(torch.cat([W(p + q + ".bias"), W(p + k + ".bias"), W(p + v + ".bias")]))
        m.self_attn.out_proj.weight.copy_(W(p + o + ".weight"))
        m.self_attn.out_proj.bias.copy_(W(p + o + ".bias"))
        m.linear1.weight.copy_(W(p + f1 + ".weight"))
        m.linear1.bias.copy_(W(p + f1 + ".bias"))
        m.linear2.weight.copy_(W(p + f2 + ".weight"))
        m.linear2.bias.copy_(W(p + f2 + ".bias"))
        m.norm1.weight.copy_(W(p + n1 + ".weight"))
        m.norm1.bias.copy_(W(p + n1 + ".bias"))
        m.norm2.weight.copy_(W(p + n2 + ".weight"))
        m.norm2.bias.copy_(W(p + n2 + ".bias"))
    return m


BERT_NAMES = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
VIT_NAMES = ("attention.attention.query", "attention.attention.key", "attention.attention.value",
             "attention.output.dense", "layernorm_before", "intermediate.dense", "output.dense", "layernorm_after")


def bert_layers(cfg, W, x, attention_mask):
    """x: embeddings after the embedding LayerNorm. Returns the encoder output."""
    for i in range(cfg["num_hidden_layers"]):
        m = _layer(W, f"encoder.layer.{i}.", BERT_NAMES, cfg["hidden_size"], cfg["num_attention_heads"],
                   cfg["intermediate_size"], cfg["layer_norm_eps"], norm_first=False)
        x = m(x, src_key_padding_mask=~attention_mask.bool())
    return x


def vit_layers(cfg, W, x):
    for i in range(cfg["num_hidden_layers"]):
        m = _layer(W, f"vit.encoder.layer.{i}.", VIT_NAMES, cfg["hidden_size"], cfg["num_attention_heads"],
                   cfg["intermediate_size"], cfg["layer_norm_eps"], norm_first=True)
        x = m(x)
    return x
