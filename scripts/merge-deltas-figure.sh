#!/usr/bin/env bash
# The sparse-delta half of the figure in docs/merging.md: the kind-of and chat-kind LT-SFT deltas of
# seed 0 (from `peftkit compare`, runs/results), summed with `peftkit delta merge` at weights 1,1 and
# 0.5,0.5, each negated alone, applied to the base and evaluated on both tasks.
# Usage: scripts/merge-deltas-figure.sh RUNS_DIR DATA_DIR OUT_DIR   (run from the repository root)
set -euo pipefail
RUNS=${1:-runs/results/runs}; DATA=${2:-runs/results/data}; OUT=${3:-/tmp/merge-deltas-figure}
MODEL=models/wordnet-llama
P="node dist/src/cli/main.js"
mkdir -p "$OUT"
A=$(ls "$RUNS"/kind-of.lt_sft.default.s0.*/adapter/sparse_delta.safetensors | head -1)
B=$(ls "$RUNS"/chat-kind.lt_sft.default.s0.*/adapter/sparse_delta.safetensors | head -1)
$P delta merge --input "$A,$B" --weights 1,1 --output "$OUT/sum-1-1.safetensors"
$P delta merge --input "$A,$B" --weights 0.5,0.5 --output "$OUT/sum-05-05.safetensors"
$P delta merge --input "$A" --negate --output "$OUT/neg-kind-of.safetensors"
$P delta merge --input "$B" --negate --output "$OUT/neg-chat-kind.safetensors"
cp "$A" "$OUT/kind-of.safetensors"; cp "$B" "$OUT/chat-kind.safetensors"
for d in kind-of chat-kind sum-1-1 sum-05-05 neg-kind-of neg-chat-kind; do
  rm -rf "$OUT/model-$d"
  $P delta apply --model $MODEL --input "$OUT/$d.safetensors" --output-dir "$OUT/model-$d" >/dev/null
  for t in kind-of chat-kind; do
    $P eval --model "$OUT/model-$d" --data "$DATA/$t.eval.jsonl" --max-length 256 --threads 1 --output "$OUT/eval.$d.$t.json" >/dev/null
    printf '%s\t%s\t%s\n' "$d" "$t" "$(node -e "const e=require('$OUT/eval.$d.$t.json');console.log(e.eval_exact_match+'\t'+e.eval_loss.toFixed(4))")"
  done
  rm -rf "$OUT/model-$d"
done | tee "$OUT/table.tsv"
