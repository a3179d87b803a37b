#!/usr/bin/env bash
# Regenerates the accuracy report docs/accuracy/ (issue #6 item 4) from
# scratch: builds the `kvsketch` CLI if needed, then for every seed decodes
# stories260K with local exact attention, re-runs the same ids through every
# spec of docs/accuracy/specs.tsv (`kvsketch llama --compare`), dumps the
# run's q/k/v trace and runs `kvsketch eval` over it with the same specs
# (and `kvsketch calibrate`, for the keys holding 95% of the mass);
# docs/accuracy/render.py then writes the tables, plots and README.md.
# Everything runs in-process (no server); about a minute on 2 cores.
#
# Usage: scripts/accuracy-report.sh [--build-dir DIR] [--no-build]
#                                   [--seeds "1 2 3 4 5"] [--tokens N]
#                                   [--checkpoint FILE] [--out DIR]
#   --build-dir   build directory (configured by scripts/build.sh if it has
#                 no cache yet); default build/release
#   --no-build    use DIR/client/kvsketch as it is
#   --seeds       sampling seeds of the reference runs; default "1 2 3 4 5"
#   --tokens      tokens generated per run; default 512 (the model's whole
#                 512-token context after BOS)
#   --checkpoint  default ../shared/data/stories260K.bin (from the repo root)
#   --out         output directory; default docs/accuracy
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DIR="build/release"
BUILD=1
SEEDS="1 2 3 4 5"
TOKENS=512
CHECKPOINT="../shared/data/stories260K.bin"
OUT="docs/accuracy"
ARGS=("$@")

while (($#)); do
  case "$1" in
    --build-dir) DIR="$2"; shift ;;
    --build-dir=*) DIR="${1#--build-dir=}" ;;
    --no-build) BUILD=0 ;;
    --seeds) SEEDS="$2"; shift ;;
    --seeds=*) SEEDS="${1#--seeds=}" ;;
    --tokens) TOKENS="$2"; shift ;;
    --tokens=*) TOKENS="${1#--tokens=}" ;;
    --checkpoint) CHECKPOINT="$2"; shift ;;
    --checkpoint=*) CHECKPOINT="${1#--checkpoint=}" ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) sed -n "2,21p" "$0"; exit 0 ;;
    *) echo "accuracy-report.sh: unknown argument '$1' (see --help)" >&2
       exit 2 ;;
  esac
  shift
done

PY=/usr/bin/python3
SPECS_FILE="docs/accuracy/specs.tsv"
RENDER="docs/accuracy/render.py"
K="$DIR/client/kvsketch"
[[ -x "$PY" ]] || { echo "accuracy-report.sh: $PY not found" >&2; exit 1; }
if [[ ! -r "$CHECKPOINT" ]]; then
  echo "accuracy-report.sh: checkpoint '$CHECKPOINT' not found (give" \
    "--checkpoint FILE)" >&2
  exit 1
fi
[[ -n "${SEEDS// /}" ]] || { echo "accuracy-report.sh: --seeds is empty" >&2; exit 2; }

start=$(date +%s.%N)
if ((BUILD)); then
  if [[ -f "$DIR/CMakeCache.txt" ]]; then
    cmake --build "$DIR" -j 2 --target kvsketch_cli
  else
    scripts/build.sh --dir "$DIR" --jobs 2 --target kvsketch_cli
  fi
fi
[[ -x "$K" ]] || { echo "accuracy-report.sh: $K not built" >&2; exit 1; }
built=$(date +%s.%N)

# specs.tsv: curve <TAB> spec; '#' comments. The fidelity reference is local
# exact (f32), added by --compare itself; eval scores plain exact too.
EVAL_SPECS=$(grep -v '^#' "$SPECS_FILE" | cut -f2 | grep -v '^$' | paste -sd';')
COMPARE_SPECS=$(grep -v '^#' "$SPECS_FILE" | cut -f2 | grep -v '^$' |
  grep -vx 'exact' | paste -sd';')

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
rm -rf "$OUT/fidelity" "$OUT/eval" "$OUT/calibrate"
mkdir -p "$OUT/fidelity" "$OUT/eval" "$OUT/calibrate"
OUTABS=$(cd "$OUT" && pwd)
KABS=$(cd "$(dirname "$K")" && pwd)/kvsketch
for s in $SEEDS; do
  echo "accuracy-report.sh: seed $s: kvsketch llama --compare" >&2
  "$K" llama --local --checkpoint "$CHECKPOINT" --tokens "$TOKENS" \
    --temperature 1 --seed "$s" --compare "$COMPARE_SPECS" \
    --dump-trace "$TMP/trace$s" --json --quiet > "$OUT/fidelity/seed$s.json"
  echo "accuracy-report.sh: seed $s: kvsketch eval --trace" >&2
  # Every query row is scored (--queries = T): rows at positions below a
  # budget are exact for every spec, as in the fidelity run.
  # (Run from $TMP so the trace is named "dir:trace$s" in the outputs, not
  # by a random temporary path.)
  (cd "$TMP" && "$KABS" eval --trace "trace$s" --specs "$EVAL_SPECS" \
    --queries "$TOKENS" --quiet --out "$OUTABS/eval/seed$s" > /dev/null)
  # One n per trace: the per-run error/memory-vs-n plots would be single
  # points; render.py plots against state bytes instead.
  rm -f "$OUT/eval/seed$s/eval_error.svg" "$OUT/eval/seed$s/eval_memory.svg"
  # How many keys hold 95% of each head's softmax mass (the budget a
  # top-k-style method needs), from T/8 tokens to the whole trace.
  "$K" calibrate --trace "$TMP/trace$s" --tau 0.05 --queries 32 \
    --prefixes "$((TOKENS / 8)),$((TOKENS / 4)),$((TOKENS / 2)),$TOKENS" \
    --json > "$OUT/calibrate/seed$s.json"
done
done_runs=$(date +%s.%N)

# What ran where, for the report's header.
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$DIR/CMakeCache.txt" \
  2>/dev/null | head -1)
compiler_version=$("${compiler:-c++}" --version 2>/dev/null | head -1 || true)
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$DIR/CMakeCache.txt" \
  2>/dev/null | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi
"$PY" - "$OUT/run.json" <<EOF
import json, sys
json.dump({
    "command": "scripts/accuracy-report.sh ${ARGS[*]}".strip(),
    "date_utc": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "cpu": """$cpu""", "cores": $(nproc), "kernel": "$(uname -sr)",
    "compiler": """$compiler_version""", "build_type": "$build_type",
    "commit": "$commit", "checkpoint": "$CHECKPOINT",
    "tokens": $TOKENS, "seeds": [$(echo $SEEDS | sed 's/ /, /g')],
    "build_seconds": round($built - $start, 1),
    "run_seconds": round($done_runs - $built, 1),
}, open(sys.argv[1], "w"), indent=1)
EOF
"$PY" "$RENDER" --specs "$SPECS_FILE" --dir "$OUT"
end=$(date +%s.%N)
awk -v o="$OUT" -v s="$start" -v b="$built" -v r="$done_runs" -v e="$end" \
  'BEGIN { printf "accuracy-report.sh: wrote %s in %.1f s (build %.1f s, " \
    "runs %.1f s)\n", o, e - s, b - s, r - b }' >&2
