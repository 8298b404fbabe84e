"""Minimal safetensors reader/writer, so the goldens need no `safetensors` package.

Layout (safetensors README "Format"): u64 little-endian header length N, N bytes of JSON
header (padded with spaces to a multiple of 8), then the raw little-endian, row-major data.
Tensors are laid out in sorted-name order, so the output is byte-for-byte reproducible.
"""
import json
import struct

import numpy as np
import torch

_TO_NAME = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TO_NP = {
    "F32": "<f4",
    "F64": "<f8",
    "I64": "<i8",
    "I32": "<i4",
    "U8": "u1",
    "BOOL": "?",
}


def write_safetensors(path, tensors, metadata=None):
    if metadata is None:
        metadata = {"format": "pt"}
    header = {"__metadata__": metadata}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _TO_NAME:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        dt = _TO_NAME[t.dtype]
        data = t.numpy().astype(_TO_NP[dt], copy=False).tobytes(order="C")
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


def read_safetensors(path):
    """Returns (tensors, metadata); validates that entries tile the buffer exactly."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    buf = raw[8 + n :]
    meta = header.pop("__metadata__", None)
    spans = []
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        arr = np.frombuffer(buf[b:en], dtype=_TO_NP[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy())
        spans.append((b, en))
    spans.sort()
    pos = 0
    for b, en in spans:
        assert b == pos, f"{path}: hole or overlap at {b}"
        pos = en
    assert pos == len(buf), f"{path}: trailing bytes"
    return out, meta
