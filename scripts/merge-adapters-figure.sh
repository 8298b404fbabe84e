#!/usr/bin/env bash
# The merge-adapters figure of docs/merging.md: the kind-of and chat-kind LoRA r=8 adapters of
# seed 0 (from `peftkit compare`, runs/results), merged with cat/linear/ties/svd at weights 1,1
# and 0.5,0.5, each negated alone, all evaluated on both tasks as compare's worker evaluates.
# Usage: scripts/merge-adapters-figure.sh RUNS_DIR DATA_DIR OUT_DIR   (run from the repository root)
set -euo pipefail
RUNS=${1:-runs/results/runs}; DATA=${2:-runs/results/data}; OUT=${3:-/tmp/merge-figure}
MODEL=models/wordnet-llama
P="node dist/src/cli/main.js"
mkdir -p "$OUT"
for t in kind-of chat-kind; do
  d=$(ls -d "$RUNS"/$t.lora.r=8.s0.*/adapter | head -1)
  rm -rf "$OUT/$t"; mkdir -p "$OUT/$t"
  cp "$d/adapter_config.json" "$d/adapter_model.safetensors" "$OUT/$t/"
done
A="$OUT/kind-of"; B="$OUT/chat-kind"
merge() { local name=$1; shift; rm -rf "$OUT/$name"; $P merge-adapters "$@" --model $MODEL --output-dir "$OUT/$name"; }
merge cat-1-1 "$A" "$B" --method cat --weights 1,1
merge cat-05-05 "$A" "$B" --method cat --weights 0.5,0.5
merge linear-1-1 "$A" "$B" --method linear --weights 1,1
merge linear-05-05 "$A" "$B" --method linear --weights 0.5,0.5
merge ties-1-1 "$A" "$B" --method ties --weights 1,1 --density 0.5
merge ties-05-05 "$A" "$B" --method ties --weights 0.5,0.5 --density 0.5
merge svd-1-1 "$A" "$B" --method svd --weights 1,1
merge svd-05-05 "$A" "$B" --method svd --weights 0.5,0.5
merge neg-kind-of "$A" --negate
merge neg-chat-kind "$B" --negate
for a in base kind-of chat-kind cat-1-1 cat-05-05 linear-1-1 linear-05-05 ties-1-1 ties-05-05 svd-1-1 svd-05-05 neg-kind-of neg-chat-kind; do
  for t in kind-of chat-kind; do
    extra=(); [ "$a" = base ] || extra=(--adapter "$OUT/$a")
    $P eval --model $MODEL "${extra[@]}" --data "$DATA/$t.eval.jsonl" --max-length 256 --threads 1 \
      --output "$OUT/eval.$a.$t.json" >/dev/null
    printf '%s\t%s\t%s\n' "$a" "$t" "$(node -e "const e=require('$OUT/eval.$a.$t.json');console.log(e.eval_exact_match+'\t'+e.eval_loss.toFixed(4))")"
  done
done | tee "$OUT/table.tsv"
