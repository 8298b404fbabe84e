#!/usr/bin/python3
"""Write test/golden/torch-rng.json: draws from torch's default CPU generator, for src/util/torch-rng.ts.

Run from anywhere:  /usr/bin/python3 scripts/goldens/make_torch_rng_goldens.py

torch.Generator(device="cpu").manual_seed(s) followed by Tensor.uniform_(lo, hi, generator=g) (float32),
torch.randperm(n, generator=g), and the draws VeRA makes for its shared projections (PEFT's
tuners/vera/model.py: _kaiming_init of vera_A [r, in] then vera_B [out, r] from one generator).
Values are written with repr(float(x)), which is exact for float32.
"""
import json
import math
import os

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "test", "golden", "torch-rng.json")


def gen(seed):
    return torch.Generator(device="cpu").manual_seed(seed)


def kaiming(shape, g):
    # VeRA's _kaiming_init: fan_in = shape[1], gain √2, bound √3·gain/√fan_in
    fan = shape[1]
    bound = math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(fan))
    return torch.empty(shape).uniform_(-bound, bound, generator=g)


def main():
    out = {"torch_version": torch.__version__, "uniform": [], "randperm": [], "vera": []}
    for seed, lo, hi, n in ((0, 0.0, 1.0, 1300), (42, -0.3, 0.7, 700), (2**33 + 5, -2.5, 2.5, 50)):
        t = torch.empty(n).uniform_(lo, hi, generator=gen(seed))
        out["uniform"].append({"seed": seed, "lo": lo, "hi": hi, "values": [float(x) for x in t]})
    for seed, n in ((0, 10), (7, 100), (123, 1000)):
        out["randperm"].append({"seed": seed, "n": n, "perm": torch.randperm(n, generator=gen(seed)).tolist()})
    for seed, r, din, dout in ((0, 4, 32, 64), (5, 3, 48, 24)):
        g = gen(seed)
        a = kaiming((r, din), g)
        b = kaiming((dout, r), g)
        out["vera"].append({"seed": seed, "r": r, "in": din, "out": dout,
                            "vera_A": [float(x) for x in a.flatten()], "vera_B": [float(x) for x in b.flatten()]})
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
