#!/bin/bash
# Regenerates docs/eval (run from the repo root; K = the kvsketch binary).
set -e
K=${K:-build/eval/client/kvsketch}
SPECS="exact;exact:store=f16;sketch;topk;topk:select=blocks;evict"
NS=1K,4K,16K,64K,256K,1M
$K eval --synthetic planted --d 64 --n $NS --queries 16 --seed 1 \
  --specs "$SPECS" --out docs/eval > /dev/null
$K calibrate --synthetic gaussian --d 64 --c0 0.5 --tau 0.05 --queries 16 \
  --prefixes 1K,4K,16K,64K,256K > docs/eval/gaussian/calibrate.txt
$K eval --synthetic gaussian --d 64 --n $NS --queries 16 --seed 1 \
  --specs "$SPECS;topk:alpha=1.58,c=0.69" --out docs/eval/gaussian > /dev/null
$K eval --synthetic gaussian --d 8 --n $NS --queries 16 --seed 1 \
  --specs "exact;sketch;sketch:map=taylor;topk;evict" \
  --out docs/eval/d8_gaussian > /dev/null
$K eval --synthetic planted --d 8 --n $NS --queries 16 --seed 1 \
  --specs "exact;sketch;sketch:map=taylor;topk;evict" \
  --out docs/eval/d8_planted > /dev/null
# evict with a query stream: 4096 unscored Attend rows per n (see README).
$K eval --synthetic planted --d 64 --n $NS --queries 16 --seed 1 --warm 4096 \
  --specs "evict;evict:alpha=4,c=0.6" --out docs/eval/evict_warm > /dev/null
