#!/usr/bin/python3
"""Golden loss of a BERT sequence-pair classifier with token type ids.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_pair_goldens.py
Reads test/golden/models/bert_seq_cls/ (written by make_goldens.py: type_vocab_size 2, 3 labels) and
writes test/golden/pairs/bert_pair/:
  - tokenizer.json, tokenizer_config.json: a tiny WordPiece vocabulary (ids < the model's 128) with the
    post-processor BERT's tokenizer.json has, TemplateProcessing "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1";
  - train.jsonl: pair classification records {"text", "text_pair", "label"};
  - golden.json: the ids and token type ids the records must encode to (derived here by hand: whole words
    of the vocabulary, [CLS] A [SEP] B [SEP], type 0 through the first [SEP] and 1 after it, as
    transformers' BertTokenizer(Fast) gives them), the right-padded batch (pad id 0, type 0, mask 0) and
    the mean cross-entropy of the classifier over the records, with those type ids and with all-zero ones.

The forward is our own re-derivation from transformers' models/bert/modeling_bert.py (BertEmbeddings:
word + absolute position + token_type embeddings, LayerNorm; post-LN encoder layers; BertPooler tanh of
token 0; classifier linear), not a transformers output (transformers is not installed). The embeddings,
pooler and classifier are written out below; the layers use ref_models.py, and the whole is checked against
ref_models.bert_encoder. Output is deterministic.
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_models as R  # noqa: E402
from common import check, maxdiff  # noqa: E402
from st_io import read_safetensors  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BASE = os.path.join(ROOT, "test", "golden", "models", "bert_seq_cls")
OUT = os.path.join(ROOT, "test", "golden", "pairs", "bert_pair")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, as in make_goldens' cls 2 / sep 3 / pad 0
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "in", "park", "is", "it", "not", "yes", "blue", "sky"]
RECORDS = [
    {"text": "the cat sat on a mat", "text_pair": "a cat is on it", "label": 0},
    {"text": "the dog ran", "text_pair": "it is not in the park", "label": 2},
    {"text": "is the sky blue", "text_pair": "yes", "label": 1},
]


def vocab():
    v = {t: i for i, t in enumerate(SPECIAL)}
    # Spread the word ids over the model's vocabulary (deterministic, all < 128, none special).
    for k, w in enumerate(WORDS):
        v[w] = 5 + 7 * k
    return v


def tokenizer_json(v):
    piece = lambda pid, tid: {"SpecialToken": {"id": pid, "type_id": tid}}  # noqa: E731
    seq = lambda sid, tid: {"Sequence": {"id": sid, "type_id": tid}}  # noqa: E731
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": v[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for t in SPECIAL
        ],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [piece("[CLS]", 0), seq("A", 0), piece("[SEP]", 0)],
            "pair": [piece("[CLS]", 0), seq("A", 0), piece("[SEP]", 0), seq("B", 1), piece("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [v["[CLS]"]], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [v["[SEP]"]], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": v},
    }


def encode_pair(v, a, b):
    wa = [v[w] for w in a.split()]
    wb = [v[w] for w in b.split()]
    ids = [v["[CLS]"], *wa, v["[SEP]"], *wb, v["[SEP]"]]
    types = [0] * (len(wa) + 2) + [1] * (len(wb) + 1)
    return ids, types


def forward_logits(cfg, W, ids, types, mask):
    """BertForSequenceClassification logits, written out from modeling_bert.py (eval mode: no dropout)."""
    eps = cfg["layer_norm_eps"]
    pos = torch.arange(ids.shape[1])[None].expand_as(ids)  # absolute positions, right padding
    x = (W("bert.embeddings.word_embeddings.weight")[ids]
         + W("bert.embeddings.position_embeddings.weight")[pos]
         + W("bert.embeddings.token_type_embeddings.weight")[types])
    x = R.layer_norm(x, W("bert.embeddings.LayerNorm.weight"), W("bert.embeddings.LayerNorm.bias"), eps)
    ext = (1.0 - mask.to(x.dtype))[:, None, None, :] * torch.finfo(x.dtype).min
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        a = R._encoder_self_attention(x, W, p, cfg["num_attention_heads"], ext)
        a = R.linear(a, W(p + "attention.output.dense.weight"), W(p + "attention.output.dense.bias"))
        x = R.layer_norm(a + x, W(p + "attention.output.LayerNorm.weight"), W(p + "attention.output.LayerNorm.bias"), eps)
        m = R.gelu_erf(R.linear(x, W(p + "intermediate.dense.weight"), W(p + "intermediate.dense.bias")))
        m = R.linear(m, W(p + "output.dense.weight"), W(p + "output.dense.bias"))
        x = R.layer_norm(m + x, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"), eps)
    pooled = torch.tanh(R.linear(x[:, 0], W("bert.pooler.dense.weight"), W("bert.pooler.dense.bias")))
    return R.linear(pooled, W("classifier.weight"), W("classifier.bias")), x


def main():
    with open(os.path.join(BASE, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["type_vocab_size"] == 2 and len(cfg["id2label"]) == 3, "bert_seq_cls: expected type_vocab_size 2 and 3 labels")
    weights, _ = read_safetensors(os.path.join(BASE, "model.safetensors"))
    v = vocab()
    check(max(v.values()) < cfg["vocab_size"], "vocabulary ids exceed the model's")

    enc = [encode_pair(v, r["text"], r["text_pair"]) for r in RECORDS]
    width = max(len(i) for i, _ in enc)
    ids = torch.tensor([i + [v["[PAD]"]] * (width - len(i)) for i, _ in enc], dtype=torch.int64)
    types = torch.tensor([t + [0] * (width - len(t)) for _, t in enc], dtype=torch.int64)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in enc], dtype=torch.int64)
    labels = torch.tensor([r["label"] for r in RECORDS], dtype=torch.int64)

    out = {}
    for dtype in (torch.float32, torch.float64):
        W = (lambda n, d=dtype: weights[n].to(d))
        logits, seq = forward_logits(cfg, W, ids, types, mask)
        logits0, _ = forward_logits(cfg, W, ids, torch.zeros_like(types), mask)
        out[dtype] = (
            torch.nn.functional.cross_entropy(logits, labels),
            torch.nn.functional.cross_entropy(logits0, labels),
            logits,
            seq,
        )
    loss, loss0, logits, seq = out[torch.float64]
    # Self-checks: float32 agrees; the written-out embeddings equal ref_models' BERT encoder; the
    # rows equal the same rows run unpadded; the token types change the loss.
    check(abs(float(out[torch.float32][0]) - float(loss)) < 1e-5, "float32 vs float64 loss")
    ref = R.bert_encoder(cfg, R.Weights({k: t.double() for k, t in weights.items()}, "bert."), ids, types, mask,
                         torch.arange(width)[None].expand_as(ids), torch.float64)
    check(maxdiff(ref, seq, mask) < 1e-10, "written-out embeddings vs ref_models.bert_encoder")
    for r, (i, t) in enumerate(enc):
        W = (lambda n: weights[n].double())
        alone, _ = forward_logits(cfg, W, torch.tensor([i]), torch.tensor([t]), torch.ones(1, len(i), dtype=torch.int64))
        check(maxdiff(alone, logits[r:r + 1]) < 1e-10, f"record {r}: padding changes its logits")
    check(abs(float(loss) - float(loss0)) > 1e-2, f"token types barely change the loss ({float(loss)} vs {float(loss0)})")

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(v), f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump({"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                   "mask_token": "[MASK]", "do_lower_case": True, "model_max_length": 64,
                   "tokenizer_class": "BertTokenizer"}, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(OUT, "train.jsonl"), "w") as f:
        for r in RECORDS:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    golden = {
        "base": "test/golden/models/bert_seq_cls",
        "description": "Mean cross-entropy of BertForSequenceClassification (bert_seq_cls weights) over train.jsonl's "
                       "pairs, right-padded into one batch; float64 PyTorch re-derivation (make_pair_goldens.py), "
                       "not a transformers output.",
        "examples": [{"input_ids": i, "token_type_ids": t} for i, t in enc],
        "input_ids": ids.tolist(),
        "token_type_ids": types.tolist(),
        "attention_mask": mask.tolist(),
        "labels": labels.tolist(),
        "logits": [[float(x) for x in row] for row in logits],
        "loss": float(loss),
        "loss_zero_token_types": float(loss0),
        "atol": 1e-4,
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}: loss {float(loss):.6f}, all-zero types {float(loss0):.6f}")


if __name__ == "__main__":
    main()
