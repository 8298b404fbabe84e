"""Helpers shared by the golden generators: assertions, differences, seeded random tensors."""
import zlib

import torch


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def maxdiff(a, b, mask=None):
    """Max |a - b| in float64, over the positions where `mask` is set (all when None)."""
    d = (a.double() - b.double()).abs()
    if mask is not None:
        d = d[mask.bool()]
    return float(d.max()) if d.numel() else 0.0


class SeededGen:
    """Random tensors from a generator seeded by the script's base seed and the case name."""

    base_seed = 0

    def __init__(self, case):
        self.g = torch.Generator().manual_seed(self.base_seed + zlib.crc32(case.encode()) % 100000)

    def normal(self, shape, std=1.0):
        return torch.randn(shape, generator=self.g, dtype=torch.float32) * std

    def uniform(self, shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=self.g, dtype=torch.float32)

    def ints(self, lo, hi, shape):
        return torch.randint(lo, hi, shape, generator=self.g, dtype=torch.int64)
