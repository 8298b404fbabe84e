#!/usr/bin/python3
"""The multi-task data of docs/methods/poly.md: the suite's kind-of and define-lemma files (both
prompt/completion) with a "task" field added, and their training files shuffled into one mix.

    python3 scripts/poly-mix-data.py runs/results/data /tmp/poly-data
writes OUT/{kind-of,define-lemma}.{train,eval}.jsonl and OUT/mix.train.jsonl (seeded shuffle).
"""
import json
import os
import random
import sys

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
mix = []
for task in ["kind-of", "define-lemma"]:
    for split in ["train", "eval"]:
        with open(os.path.join(src, f"{task}.{split}.jsonl")) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        for r in recs:
            r["task"] = task
        with open(os.path.join(out, f"{task}.{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)
        if split == "train":
            mix += recs
random.Random(0).shuffle(mix)
with open(os.path.join(out, "mix.train.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in mix)
print(f"{len(mix)} training records")
